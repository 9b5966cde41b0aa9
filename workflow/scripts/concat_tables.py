from effdepth.jobs import concat_tables
from effdepth.log import setup_job

setup_job(snakemake)
concat_tables(list(snakemake.input), snakemake.output[0])
