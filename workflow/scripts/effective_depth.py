from effdepth.depth import run
from effdepth.log import setup_job

setup_job(snakemake)
run(list(snakemake.input.tables), snakemake.input.reference, dict(snakemake.params.options), dict(snakemake.output.items()))
