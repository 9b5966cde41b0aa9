from effdepth.jobs import download_model
from effdepth.log import setup_job

setup_job(snakemake)
download_model(snakemake.params.hf_id, snakemake.params.revision, snakemake.output[0], snakemake.params.trust_remote_code)
