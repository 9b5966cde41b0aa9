from effdepth.jobs import prepare_prompts
from effdepth.log import setup_job

setup_job(snakemake)
prepare_prompts(snakemake.wildcards.task, snakemake.params.spec, snakemake.output[0])
