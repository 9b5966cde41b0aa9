from effdepth.figures import all_pdf
from effdepth.log import setup_job

setup_job(snakemake)
all_pdf(snakemake.params.info, list(snakemake.input), snakemake.output[0])
