from effdepth.jobs import prepare_prompts
from effdepth.log import get_logger

get_logger("effdepth", snakemake.log[0])
prepare_prompts(snakemake.wildcards.task, snakemake.params.spec, snakemake.output[0])
