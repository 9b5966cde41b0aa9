from effdepth.jobs import aggregate
from effdepth.log import get_logger

get_logger("effdepth", snakemake.log[0])
aggregate(list(snakemake.input), snakemake.output[0])
