from effdepth.figures import build_figure
from effdepth.log import setup_job

setup_job(snakemake)
o = snakemake.output
build_figure(
    snakemake.params.figure,
    list(snakemake.input.tables),
    snakemake.params.context,
    o.pdf,
    o.svg,
    o.html,
    tokens=list(snakemake.input.tokens),
)
