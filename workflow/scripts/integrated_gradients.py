from effdepth.jobs import integrated_gradients
from effdepth.log import setup_job

setup_job(snakemake)
p, w = snakemake.params, snakemake.wildcards
integrated_gradients(w.model, p.entry, snakemake.input.model, w.task, p.task_spec, snakemake.input.prompts, snakemake.output[0], p.options)
