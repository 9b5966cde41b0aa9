from effdepth.jobs import convert_gguf
from effdepth.log import setup_job

setup_job(snakemake)
convert_gguf(snakemake.params.gguf, snakemake.output[0])
