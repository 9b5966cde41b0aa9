from effdepth.errata import run
from effdepth.log import setup_job

setup_job(snakemake)
run(
    snakemake.input.effective_depth,
    list(snakemake.input.maps),
    dict(snakemake.params.models),
    dict(snakemake.params.tasks),
    dict(snakemake.output.items()),
)
