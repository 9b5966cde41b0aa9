from effdepth.figures import merge_pdfs, title_page
from effdepth.log import setup_job

setup_job(snakemake)
merge_pdfs(title_page(snakemake.params.info), list(snakemake.input), snakemake.output[0])
