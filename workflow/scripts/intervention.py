from effdepth.jobs import intervention
from effdepth.log import setup_job

setup_job(snakemake)
p, w, i = snakemake.params, snakemake.wildcards, snakemake.input
inputs = {k: v for k, v in i.items() if k not in ("model", "prompts")}
intervention(
    w.analysis,
    w.model,
    w.task,
    i.model,
    p.model_options,
    i.prompts,
    p.prompt_options,
    p.options,
    dict(snakemake.output.items()),
    inputs,
)
