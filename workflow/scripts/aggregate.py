from effdepth.jobs import aggregate
from effdepth.log import setup_job

setup_job(snakemake)
aggregate(list(snakemake.input), snakemake.output[0], snakemake.params.analysis)
