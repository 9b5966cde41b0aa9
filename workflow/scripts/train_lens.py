from effdepth.jobs import train_lens
from effdepth.log import setup_job

setup_job(snakemake)
p, w, i, o = snakemake.params, snakemake.wildcards, snakemake.input, snakemake.output
train_lens(
    w.model,
    i.model,
    p.model_options,
    p.options,
    list(i.evaluation),
    {"lens": o.lens, "folder": o.folder, "heldout": o.heldout},
    i.fingerprint,
)
