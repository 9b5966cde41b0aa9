from effdepth.jobs import forward_table
from effdepth.log import setup_job

setup_job(snakemake)
w = snakemake.wildcards
forward_table(w.analysis, snakemake.input[0], snakemake.output[0], snakemake.params.variant, w.model, w.task)
