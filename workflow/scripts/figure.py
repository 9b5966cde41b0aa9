from effdepth.figures import build_figure
from effdepth.log import setup_job

setup_job(snakemake)
o = snakemake.output
build_figure(snakemake.wildcards.figure, list(snakemake.input), snakemake.params.options, o.pdf, o.svg, o.html)
