from effdepth.jobs import convert_gguf
from effdepth.log import get_logger

get_logger("effdepth", snakemake.log[0])
convert_gguf(snakemake.params.gguf, snakemake.output[0])
