# effdepth — how many layers of a language model do computation that matters?
#
# Path grammar (wildcards are config keys: {model} in models, {task} in tasks, {analysis} in analyses,
# {variant} correct | published; written out in workflow/rules/common.smk):
#   resources/models/{model}/                         hub snapshot or dequantised GGUF (local `path:` models are used in place)
#   resources/prompts/{task}.parquet                  frozen prompts + content hash
#   results/lenses/{model}/tuned_lens.safetensors     the model's trained tuned lens (+ tuned_lens/ folder, heldout.parquet)
#   results/cache/{model}/{task}/stats.safetensors    one extraction pass: per-token statistics of every lens (GPU)
#   results/tables/{model}/{task}/forward.parquet     every forward analysis of one model on one task (tidy)
#   results/tables/{model}/{task}/{analysis}.{variant}.parquet   one intervention analysis, one variant
#   results/tables/{analysis}.parquet                 the same, all models and tasks
#   results/tables/effective_depth.{parquet,csv}      effective depth with bootstrap intervals
#   results/tables/errata.{parquet,csv}               both variants of every estimate, per defect
#   results/figures/{figure}.pdf                      one figure (grid over models; .svg/.html with figures.formats)
#   results/figures/all.pdf                           title page + every figure, stable order
#   results/fingerprints/{model}.fingerprint          content fingerprint of the model's files
#   results/fingerprints/tasks/{task}.fingerprint     content fingerprint of a local task file
#   logs/{rule}/...                                   one log per job; logs/benchmark/ holds per-job timings
#
# Usage: snakemake --cores 8                    (config.yaml: the paper's 12 models)
#        snakemake --cores 2 --configfile config/demo.yaml
#        snakemake --profile profiles/slurm     (see README)

from snakemake.utils import min_version

min_version("9.0")


# --configfile replaces config.yaml instead of being merged into it (an experiment is one file).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/execution.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/lenses.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/analyses.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/depth.smk"
include: "workflow/rules/figures.smk"


rule all:
    default_target: True
    input:
        all_targets(),
