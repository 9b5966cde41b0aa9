from effdepth.jobs import residual_erasure
from effdepth.log import setup_job

setup_job(snakemake)
p, w = snakemake.params, snakemake.wildcards
residual_erasure(w.model, p.entry, snakemake.input.model, w.task, p.task_spec, snakemake.input.prompts,
                 snakemake.input.baseline, snakemake.output.table, p.options)
