from effdepth.figures import build_figure
from effdepth.log import get_logger

get_logger("effdepth", snakemake.log[0])
o = snakemake.output
build_figure(snakemake.wildcards.figure, list(snakemake.input), snakemake.params.options, o.pdf, o.svg, o.html)
