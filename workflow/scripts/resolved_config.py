from effdepth.jobs import write_resolved_config

write_resolved_config(snakemake.params.config, snakemake.output[0])
