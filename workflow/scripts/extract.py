from effdepth.jobs import extract
from effdepth.log import setup_job

setup_job(snakemake)
p = snakemake.params
extract(snakemake.wildcards.model, p.entry, snakemake.input.model, snakemake.wildcards.task, p.task_spec,
        snakemake.input.prompts, snakemake.output[0], p.batch_size, p.top_k, p.store_activations,
        p.max_batch_tokens)
