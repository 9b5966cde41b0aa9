# Execution settings: resources of the model jobs, what runs on the submitting host, the cluster and
# local-GPU plumbing, and the handlers that run before the first job and after the last.  Config,
# wildcards, paths and params are in common.smk (included before this file).

# --- resources: GPU jobs are sized from the model's parameter count (size_b) --------------------


def _size_b(wildcards):
    return float(config["models"][wildcards.model].get("size_b", 1.0))


def gpu_count(wildcards):
    return 0 if config["models"][wildcards.model].get("device", "auto") == "cpu" else 1


def gpu_mem_mb(wildcards, attempt=1):
    """Host memory for a model job: weights are materialised on the host while loading."""
    return int(max(4000, _size_b(wildcards) * config["execution"]["gpu_mem_gb_per_b"] * 1024 * attempt))


def gpu_runtime(wildcards, attempt=1):
    return int(max(15, _size_b(wildcards) * config["execution"]["runtime_min_per_b"] * attempt))


def lens_runtime(wildcards, attempt=1):
    """A tuned lens's training: 4 model jobs' runtime at the reference recipe's 250 x 2^18 tokens,
    scaled by the model's token budget."""
    budget = lens_training_options(wildcards)["token_budget"] / (250 * 2**18)
    return int(max(15, 4 * budget * _size_b(wildcards) * config["execution"]["runtime_min_per_b"] * attempt))


# --- cluster execution (profiles/slurm, README "Running on a cluster") ----------------------------
# Downloads and conversions need the internet (or the login node's files): never submit them to
# compute nodes.  Prompt preparation may download a benchmark.  The other cheap CPU rules are
# localrules in their own files.
localrules:
    download_model,
    convert_gguf,
    prepare_prompts,


# profiles/slurm reads the partition, account and GPU model from these environment variables.
# Account and GPU model are optional: unset means "let SLURM decide".  The partition is required:
# a real SLURM run stops before any job with a clear message when the profile asks for it and
# the variable is unset (set it to "" for the cluster's default partition).
import os as _os

from snakemake.logging import logger as _logger

for _optional in ("EFFDEPTH_SLURM_ACCOUNT", "EFFDEPTH_GPU_MODEL"):
    _os.environ.setdefault(_optional, "")


def _check_slurm_settings():
    plugin = workflow.executor_plugin
    if plugin is None or plugin.name != "slurm":
        return
    partition = (workflow.resource_settings.default_resources or {}).get("slurm_partition")
    if "$EFFDEPTH_SLURM_PARTITION" in str(getattr(partition, "raw", "")) and "EFFDEPTH_SLURM_PARTITION" not in _os.environ:
        raise WorkflowError(
            "SLURM partition not set: export EFFDEPTH_SLURM_PARTITION=<partition with GPUs> "
            "(empty: the cluster's default partition) or write the partition into the profile's "
            "default-resources; optional: EFFDEPTH_SLURM_ACCOUNT, EFFDEPTH_GPU_MODEL (README: Running on a cluster)"
        )


def _pin_local_gpu_jobs():
    """A local run that declares GPUs (--resources gpu=N, profiles/local-gpu) starts its jobs through
    profiles/local-gpu/gpu-shell, which gives each job of a rule with a `gpu` resource a free GPU of
    its own (CUDA_VISIBLE_DEVICES): N jobs on N GPUs instead of all on GPU 0."""
    if not workflow.local_exec or "gpu" not in workflow.global_resources:
        return
    scripts = {Path(r.script).name for r in workflow.rules if r.script and "gpu" in r.resources}
    _os.environ.update(EFFDEPTH_GPU_SCRIPTS=" ".join(sorted(scripts)))  # read by gpu-shell
    gpu_shell = Path(workflow.basedir) / "profiles" / "local-gpu" / "gpu-shell"
    shell.executable(str(gpu_shell))
    _logger.info(f"GPU jobs ({', '.join(sorted(scripts))}) get a GPU each from {gpu_shell}")


def _check_results_writable():
    if not RESULTS_WRITABLE:
        raise WorkflowError(READONLY_RESULTS)


onstart:
    _check_results_writable()
    _check_slurm_settings()
    _pin_local_gpu_jobs()


# A finished run ends by saying what it found: where all.pdf and the effective-depth table are, and
# the headline estimates per model × task with their intervals (effdepth.figures.console).
onsuccess:
    from effdepth.figures.console import run_summary

    for _line in run_summary(
        ALL_PDF,
        ED_TABLES["csv"] if ED_CONFIGURED else None,
        ED_TABLES["table"] if ED_CONFIGURED else None,
        FIGURE_CONTEXT,
    ):
        _logger.info(_line)
