from effdepth.jobs import extract
from effdepth.log import setup_job

setup_job(snakemake)
p, w, i = snakemake.params, snakemake.wildcards, snakemake.input
lens = i.get("lens") or None
extract(
    w.model, w.task, i.model, p.model_options, i.prompts, p.prompt_options, p.options, snakemake.output[0], i.fingerprint, lens
)
