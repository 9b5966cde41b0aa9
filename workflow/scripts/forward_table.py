from effdepth.jobs import forward_table
from effdepth.log import get_logger

get_logger("effdepth", snakemake.log[0])
w = snakemake.wildcards
forward_table(w.analysis, snakemake.input[0], snakemake.output[0], snakemake.params.variant, w.model, w.task)
