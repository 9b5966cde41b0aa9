from effdepth.jobs import layer_skip
from effdepth.log import setup_job

setup_job(snakemake)
p, w = snakemake.params, snakemake.wildcards
layer_skip(w.model, p.entry, snakemake.input.model, w.task, p.task_spec, snakemake.input.prompts, snakemake.output[0], p.options)
