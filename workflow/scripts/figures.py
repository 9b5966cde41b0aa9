from effdepth.figures import render_figures
from effdepth.log import setup_job

setup_job(snakemake)
inputs = dict(snakemake.input.items())
tokens = {k.removeprefix("tokens_"): list(v) for k, v in inputs.items() if k.startswith("tokens_")}
tables = {k: str(v) for k, v in inputs.items() if not k.startswith("tokens_")}
render_figures(
    tables,
    tokens,
    snakemake.params.context,
    list(snakemake.params.figures),
    list(snakemake.params.models),
    dict(snakemake.output.items()),
    snakemake.params.info,
)
