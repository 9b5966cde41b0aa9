from effdepth.jobs import forward_tables
from effdepth.log import setup_job

setup_job(snakemake)
w, p = snakemake.wildcards, snakemake.params
forward_tables(dict(p.variants), snakemake.input[0], snakemake.output[0], w.model, w.task, dict(p.options))
