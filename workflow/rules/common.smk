# Config validation, wildcard constraints and input functions shared by every rule.

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # the package, when not pip-installed

from effdepth.config import (
    ConfigError,
    FORWARD_ANALYSES,
    INTERVENTION_ANALYSES,
    validate_config,
)

_config_files = [str(f) for f in (workflow.overwrite_configfiles or workflow.configfiles or ["config"])]
try:
    config = validate_config(
        dict(config),
        Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml",
        source=" + ".join(_config_files),
    )
except ConfigError as error:
    raise WorkflowError(str(error)) from None

MODELS = list(config["models"])
TASKS = list(config["tasks"])
ANALYSES = config["analyses"]
VENV_PYTHON = sys.executable


def _alternatives(names):
    """Regex matching exactly the given names (model names contain dots); matches nothing if empty."""
    return "|".join(re.escape(n) for n in names) or "(?!x)x"


wildcard_constraints:
    model=_alternatives(MODELS),
    task=_alternatives(TASKS),


HUB_MODELS = [m for m, e in config["models"].items() if "hf_id" in e]
GGUF_MODELS = [m for m, e in config["models"].items() if "gguf" in e]


def model_dir(wildcards):
    """Local directory of a model: its `path:` as given, else resources/models/{model}."""
    entry = config["models"][wildcards.model]
    if "path" in entry:
        path = Path(entry["path"])
        if not (path / "config.json").is_file():
            raise WorkflowError(f"models.{wildcards.model}.path: {path} is not a Hugging Face model directory (no config.json)")
        return str(path)
    return f"resources/models/{wildcards.model}"


def task_files(wildcards):
    """Local files a task reads (source=file, or a local copy of a named benchmark)."""
    spec = config["tasks"][wildcards.task]
    if "path" in spec:
        if not Path(spec["path"]).is_file():
            raise WorkflowError(f"tasks.{wildcards.task}.path: file not found: {spec['path']}")
        return [spec["path"]]
    return []


def analysis_tasks(analysis):
    return ANALYSES[analysis]["tasks"] if analysis in ANALYSES else []


def table_paths(analysis):
    return expand(
        "results/tables/{model}/{task}/{analysis}.parquet",
        model=MODELS,
        task=analysis_tasks(analysis),
        analysis=analysis,
    )


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


def config_hash():
    import hashlib
    import json

    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _intervention_params(analysis):
    return dict(
        entry=lambda w: config["models"][w.model],
        task_spec=lambda w: config["tasks"][w.task],
        options=ANALYSES.get(analysis, {}),
    )


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


onstart:
    _check_slurm_settings()
    _pin_local_gpu_jobs()
