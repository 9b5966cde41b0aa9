from effdepth.figures import merge_pdfs, title_page
from effdepth.log import get_logger

get_logger("effdepth", snakemake.log[0])
merge_pdfs(title_page(snakemake.params.info), list(snakemake.input), snakemake.output[0])
