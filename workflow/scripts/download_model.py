from effdepth.jobs import download_model
from effdepth.log import get_logger

get_logger("effdepth", snakemake.log[0])
download_model(snakemake.params.hf_id, snakemake.params.revision, snakemake.output[0], snakemake.params.trust_remote_code)
