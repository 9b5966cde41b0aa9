from effdepth.jobs import forward_tables
from effdepth.log import setup_job

setup_job(snakemake)
w = snakemake.wildcards
forward_tables(dict(snakemake.params.variants), snakemake.input[0], snakemake.output[0], w.model, w.task)
