from effdepth.fingerprint import refresh_fingerprint
from effdepth.log import setup_job

setup_job(snakemake)
refresh_fingerprint(snakemake.input[0], snakemake.output[0])
