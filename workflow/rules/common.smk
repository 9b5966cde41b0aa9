# Config validation, wildcard constraints and input functions shared by every rule.

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # the package, when not pip-installed

from effdepth.analyses import FORWARD_ANALYSES, INTERVENTION_ANALYSES, REGISTRY
from effdepth.config import (
    MODEL_LENS_KEYS,
    MODEL_METADATA,
    TASK_METADATA,
    ConfigError,
    job_entry,
    read_yaml,
    block_options,
    validate_config,
)
from effdepth.depth import effective_depth_inputs, reference_pairs
from effdepth.errata import errata_configured
from effdepth.figures import (
    ED_CAT,
    FIGURE_BY_NAME,
    PROFILE as PROFILE_FIGURE,
    PROFILE_CATEGORY,
    available_figures,
    figure_context,
    output_key,
    report_options,
)

_config_files = [str(f) for f in (workflow.overwrite_configfiles or workflow.configfiles or ["config"])]
try:
    for _file in _config_files:  # Snakemake's own YAML reading keeps the last of two equal keys
        if Path(_file).is_file():
            read_yaml(_file)
    config = validate_config(dict(config), source=" + ".join(_config_files))  # the package's schema
except ConfigError as error:
    raise WorkflowError(str(error)) from None

# Local task files are read completely now, so a bad file stops the workflow before any job runs
# (and is never retried: only downloads are).
from effdepth.tasks import TaskError, validate_task_file

from snakemake.logging import logger as _task_logger

for _task, _spec in config["tasks"].items():
    try:
        for _warning in validate_task_file(_task, _spec):
            _task_logger.warning(_warning)
    except TaskError as error:
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
    variant="correct|published",


HUB_MODELS = [m for m, e in config["models"].items() if "hf_id" in e]
GGUF_MODELS = [m for m, e in config["models"].items() if "gguf" in e]


def model_dir(wildcards):
    """Local directory of a model: its `path:` as given, else resources/models/{model}."""
    entry = config["models"][wildcards.model]
    return entry["path"] if "path" in entry else f"resources/models/{wildcards.model}"


# --- model fingerprints: caches know what made them ------------------------------------------------
# A content fingerprint of each model's files (effdepth.fingerprint) is a tracked input of every job
# that reads the model.  Local models (`path:`) and GGUF files are outside the workflow's control,
# so their fingerprint files are refreshed while the workflow is parsed, and rewritten only when the
# content changed: replacing the weights reruns exactly the jobs that read them.  A downloaded
# model's fingerprint is made by rule model_fingerprint from the snapshot.
FINGERPRINT = "results/fingerprints/{model}.fingerprint"
TASK_FINGERPRINT = "results/fingerprints/tasks/{task}.fingerprint"

# Fingerprints are refreshed while the workflow is read, which writes under results/.  When results/
# is not writable (a read-only mount, an archived project) nothing is written then: a dry run still
# works (a fingerprint file that is missing is left out of the jobs' inputs), and a real run stops in
# `onstart`, before any job, with the message below.
from effdepth.fileio import writable_directory

RESULTS_WRITABLE = writable_directory("results")
READONLY_RESULTS = (
    f"results/ is not writable (in {Path.cwd()}): every output of the workflow is written there; make it writable, "
    "or run in a writable copy of the project (a dry run, -n, works without writing)"
)
if not RESULTS_WRITABLE:
    from snakemake.logging import logger as _readonly_logger

    _readonly_logger.warning(
        f"{READONLY_RESULTS}. Fingerprints of local models and task files are not refreshed, so this dry run "
        "does not see files changed since they were last written."
    )


def _local_model_source(name, entry):
    if "path" in entry:
        return Path(entry["path"])
    if "gguf" in entry:
        from effdepth.models import ModelSourceError, gguf_file

        try:
            path = gguf_file(entry["gguf"])
        except ModelSourceError as error:
            raise WorkflowError(f"models.{name}.gguf: {error}") from None
        with open(path, "rb") as fh:
            if fh.read(4) != b"GGUF":
                raise WorkflowError(f"models.{name}.gguf: {path} is not a GGUF file (its first bytes are not 'GGUF')")
        return path
    return None


def _check_local_model(name, entry, source):
    """Files (headers, shapes against config.json, tokenizer: effdepth.models.check_model_files),
    architecture and attention implementation (effdepth.adapters) of one local model."""
    from effdepth.adapters import attention_implementation, check_model_config
    from effdepth.fingerprint import ModelFileError
    from effdepth.models import check_model_files

    key = f"models.{name}.{'path' if 'path' in entry else 'gguf'}"
    try:
        check_model_config(source)
    except (ValueError, FileNotFoundError) as error:  # unsupported, or an unreadable config.json
        raise WorkflowError(f"models.{name}: {error}") from None
    except ModelFileError as error:  # a damaged GGUF header
        raise WorkflowError(f"{key}: {error}") from None
    try:
        check_model_files(source, trust_remote_code=entry.get("trust_remote_code", False))
    except ModelFileError as error:
        raise WorkflowError(f"{key}: {error}") from None
    if "path" in entry:
        try:
            attention_implementation(json.loads((source / "config.json").read_text()), entry.get("attn_implementation", "auto"))
        except ValueError as error:  # sdpa asked of an architecture without it
            raise WorkflowError(f"models.{name}.attn_implementation: {error}") from None


def _check_local_models():
    """Check every local model, and write its fingerprint, before any job runs.  A passed check is
    recorded next to the fingerprint (effdepth.fingerprint.check_once) and not repeated while the
    model's files, its entry, effdepth, these rules and the libraries are unchanged."""
    from effdepth.fingerprint import FingerprintError, check_once, file_digest, refresh_fingerprint

    rules = file_digest(Path(workflow.basedir) / "workflow" / "rules" / "common.smk")
    for name, entry in config["models"].items():
        source = _local_model_source(name, entry)
        if source is None:
            continue
        if "path" in entry and not (source / "config.json").is_file():
            raise WorkflowError(f"models.{name}.path: {source} is not a Hugging Face model directory (no config.json)")
        fingerprint = Path(FINGERPRINT.format(model=name))
        record = fingerprint.with_name(f".{fingerprint.name}.checked.json") if RESULTS_WRITABLE else None
        try:
            check_once(source, record, lambda: _check_local_model(name, entry, source), {"entry": entry, "rules": rules})
            if RESULTS_WRITABLE:
                refresh_fingerprint(source, fingerprint)
        except FingerprintError as error:
            raise WorkflowError(f"models.{name}: {error}") from None


_check_local_models()

# Tasks reading a local file (source=file, or a named benchmark's local copy): the content
# fingerprint of the file, not its modification time, decides whether its prompts are rebuilt.
FILE_TASKS = [t for t, spec in config["tasks"].items() if "path" in spec]


def _check_task_fingerprints():
    from effdepth.fingerprint import FingerprintError, refresh_task_fingerprint

    if not RESULTS_WRITABLE:
        return
    for name in FILE_TASKS:
        try:
            refresh_task_fingerprint(config["tasks"][name]["path"], TASK_FINGERPRINT.format(task=name))
        except FingerprintError as error:
            raise WorkflowError(f"tasks.{name}.path: {error}") from None


_check_task_fingerprints()


def _fingerprint_input(path):
    """A fingerprint file as a job input (the path); none ([]) when results/ is not writable and the
    file was never written (a dry run only: a real run stops before any job)."""
    return path if RESULTS_WRITABLE or Path(path).is_file() else []


def model_fingerprint(wildcards):
    if wildcards.model in HUB_MODELS:  # made by rule model_fingerprint
        return FINGERPRINT.format(model=wildcards.model)
    return _fingerprint_input(FINGERPRINT.format(model=wildcards.model))


def task_files(wildcards):
    """Local files a task reads (source=file, or a local copy of a named benchmark), and the
    fingerprint of their content."""
    spec = config["tasks"][wildcards.task]
    if "path" not in spec:
        return []
    fingerprint = _fingerprint_input(TASK_FINGERPRINT.format(task=wildcards.task))
    return [spec["path"], fingerprint] if fingerprint else [spec["path"]]


# --- the path grammar (Snakefile header): every path of the workflow is composed here -------------

PROMPTS = "resources/prompts/{task}.parquet"
CACHE = "results/cache/{model}/{task}/stats.safetensors"
TABLE = "results/tables/{model}/{task}/{analysis}.{variant}.parquet"  # intervention analyses
FORWARD_TABLES = "results/tables/{model}/{task}/forward.parquet"  # every forward analysis and variant run on the task
TOKENS = "results/tables/{model}/{task}/{analysis}_tokens.{variant}.parquet"
AGGREGATED = "results/tables/{analysis}.parquet"
ED_TABLES = {
    "table": "results/tables/effective_depth.parquet",
    "csv": "results/tables/effective_depth.csv",
    "sweep": "results/tables/effective_depth_sweep.parquet",
    "reference": "results/tables/effective_depth_reference.parquet",
    "reference_csv": "results/tables/effective_depth_reference.csv",
}
ERRATA = {
    "table": "results/tables/errata.parquet",
    "csv": "results/tables/errata.csv",
    "questions_table": "results/tables/errata_questions.parquet",
    "questions": "results/tables/errata_questions.csv",
}
FIGURE = "results/figures/{figure}.{ext}"
PROFILE = "results/figures/models/{model}.{ext}"
ALL_PDF = "results/figures/all.pdf"
RESOLVED_CONFIG = "results/config.resolved.yaml"
CAPTION = "../report/{name}.rst"  # relative to workflow/rules/


def analysis_tasks(analysis):
    return ANALYSES[analysis]["tasks"] if analysis in ANALYSES else []


def analysis_variants(analysis):
    return ANALYSES[analysis]["variants"] if analysis in ANALYSES else []


def table_paths(analysis):
    """The per-(model, task) tables holding an analysis's rows, every configured variant (the forward
    analyses of a task share one file)."""
    if analysis in FORWARD_ANALYSES:
        return expand(FORWARD_TABLES, model=MODELS, task=analysis_tasks(analysis))
    return expand(TABLE, model=MODELS, task=analysis_tasks(analysis), analysis=analysis, variant=analysis_variants(analysis))


def forward_variants(wildcards):
    """analysis -> variants of every configured forward analysis that runs on the task."""
    return {a: analysis_variants(a) for a in FORWARD_ANALYSES if a in ANALYSES and wildcards.task in analysis_tasks(a)}


def forward_options(wildcards):
    """analysis -> the options its table reads (settling_threshold), for the forward analyses of the task."""
    return {a: REGISTRY[a].job_options(ANALYSES[a]) for a in forward_variants(wildcards)}


# --- tuned lenses: one per model, trained by rule train_lens unless the model entry names one -------
LENS = "results/lenses/{model}/tuned_lens.safetensors"
LENS_FOLDER = "results/lenses/{model}/tuned_lens"  # the same lens in the tuned-lens package's format
LENS_HELDOUT = "results/lenses/{model}/heldout.parquet"
LENS_HELDOUT_ALL = "results/tables/lens_heldout.parquet"
LENS_TASKS = analysis_tasks("tuned_lens")  # the tasks read through the model's tuned lens
TRAINED_LENS_MODELS = [m for m in MODELS if LENS_TASKS and "tuned_lens" not in config["models"][m]]


def lens_input(wildcards):
    """The model's tuned lens when the task is read through one (analyses.tuned_lens.tasks): the
    folder or file its entry names, else the train_lens output; nothing otherwise."""
    if wildcards.task not in LENS_TASKS:
        return []
    given = config["models"][wildcards.model].get("tuned_lens")
    return given if given else LENS.format(model=wildcards.model)


def lens_training_options(wildcards):
    """The options the model's train_lens job reads: those of analyses.tuned_lens, overridden key by
    key by the model entry's lens_training."""
    options = {k: ANALYSES["tuned_lens"][k] for k in REGISTRY["tuned_lens"].artefact_options}
    return {**options, **config["models"][wildcards.model].get("lens_training", {})}


def token_paths(analysis):
    """Token tables of an intervention analysis (those of the variant the figures show)."""
    return expand(TOKENS, model=MODELS, task=analysis_tasks(analysis), analysis=analysis, variant=ANALYSES[analysis]["variant"])


# The effective-depth estimators' inputs, and the paper's published values (shipped with the
# workflow, not the working directory, which may be elsewhere).
ED_CONFIGURED = effective_depth_inputs(ANALYSES)
REFERENCE_FILE = str(Path(workflow.basedir) / "resources/reference/reference_effective_depth.csv")
ERRATA_CONFIGURED = errata_configured(ANALYSES)
FIGURE_CONTEXT = figure_context(config)  # the config's part the figures (and the errata verdicts) read
# Erasure and IG feed no estimator: the errata compare their maps when they ran under both variants.
ERRATA_MAPS = [a for a in ("residual_erasure", "integrated_gradients") if len(analysis_variants(a)) > 1]
REFERENCE_MATCHES = any(
    (m, t) in reference_pairs(REFERENCE_FILE) for m in MODELS for a in ED_CONFIGURED for t in analysis_tasks(a)
)


# Aggregated tables by name; the figures job takes those its figures declare (effdepth.figures.FIGURE_BY_NAME).
TABLE_FILES = {
    **{a: AGGREGATED.format(analysis=a) for a in ANALYSES},
    **{
        t: ED_TABLES[k]
        for k, t in (("table", "effective_depth"), ("sweep", "effective_depth_sweep"), ("reference", "effective_depth_reference"))
    },
    "errata": ERRATA["table"],
    "errata_questions": ERRATA["questions_table"],
    "lens_heldout": LENS_HELDOUT_ALL,
}


# The figures of this config (the order of all.pdf), the models with a profile page, the formats besides PDF.
FIGURE_NAMES = available_figures(ANALYSES, reference_matches=REFERENCE_MATCHES)
PROFILE_MODELS = MODELS if ED_CONFIGURED else []
FIGURE_FORMATS = [f for f in (config.get("figures") or {}).get("formats", ["pdf"]) if f != "pdf"]


def figures_inputs():
    """Every table a planned figure declares, named by table, and the token tables of the analyses
    that label heatmap axes (``tokens_<analysis>``); the profiles read the effective-depth inputs."""
    names = {t for f in FIGURE_NAMES for t in FIGURE_BY_NAME[f].tables}
    made = {*ANALYSES, *(["lens_heldout"] if TRAINED_LENS_MODELS else [])}
    names |= {t for f in FIGURE_NAMES for t in FIGURE_BY_NAME[f].optional if t in made}
    if PROFILE_MODELS:
        names |= {*ED_CONFIGURED, "effective_depth"}
    inputs = {t: TABLE_FILES[t] for t in sorted(names)}
    for analysis in sorted({FIGURE_BY_NAME[f].tokens for f in FIGURE_NAMES} - {None}):
        inputs[f"tokens_{analysis}"] = token_paths(analysis)
    return inputs


def figures_outputs():
    """all.pdf and, per figure and profile, its PDF (with its report caption) and the other formats asked for."""
    outputs = {"all": ALL_PDF}
    for name in FIGURE_NAMES:
        outputs[name] = report(FIGURE.format(figure=name, ext="pdf"), caption=CAPTION.format(name=name), **report_options(name))
        outputs |= {output_key(name, ext): FIGURE.format(figure=name, ext=ext) for ext in FIGURE_FORMATS}
    for model in PROFILE_MODELS:
        outputs[output_key(PROFILE_FIGURE, model=model)] = report(
            PROFILE.format(model=model, ext="pdf"),
            caption=CAPTION.format(name="model_profile"),
            category=PROFILE_CATEGORY,
            subcategory=model,
            labels={"figure": PROFILE_FIGURE, "shows": f"{model}: every ED curve, threshold and estimate"},
        )
        outputs |= {output_key(PROFILE_FIGURE, ext, model): PROFILE.format(model=model, ext=ext) for ext in FIGURE_FORMATS}
    return outputs


# --- params: each job receives exactly the configuration it reads ---------------------------------
# (the `params` rerun trigger then reruns exactly the jobs an edit affects)


def model_options(wildcards):
    """The model's entry without metadata (family, size_b, training, base_model) and without the keys
    of its tuned lens (which reaches the jobs that read it as an input file)."""
    return job_entry(config["models"][wildcards.model], MODEL_METADATA + MODEL_LENS_KEYS)


def prompt_options(wildcards):
    """What a job reads of a task besides its frozen prompts file: how many prompts, how long."""
    spec = config["tasks"][wildcards.task]
    return {k: spec[k] for k in ("n_prompts", "max_tokens") if k in spec}


def task_options(wildcards):
    """The task's entry without metadata (difficulty): what builds its prompts."""
    return job_entry(config["tasks"][wildcards.task], TASK_METADATA)


def analysis_options(wildcards):
    """The keys of analyses.<analysis> its job reads (effdepth.analyses.REGISTRY), for one variant."""
    return {**REGISTRY[wildcards.analysis].job_options(ANALYSES[wildcards.analysis]), "variant": wildcards.variant}


def extraction_options():
    """config `extraction` plus the options of analyses whose statistics are extracted
    (Analysis.extraction: the logit lens's top_k), their schema defaults when not configured."""
    options = dict(config["extraction"])
    for name, analysis in REGISTRY.items():
        block = ANALYSES.get(name) or block_options(f"analyses.{name}")
        options.update({key: block[key] for key in analysis.extraction})
    return options


def intervention_inputs(wildcards):
    """Model, prompts and, for an analysis with a baseline task, that task's extraction cache."""
    inputs = {
        "model": model_dir(wildcards),
        "fingerprint": model_fingerprint(wildcards),
        "prompts": PROMPTS.format(task=wildcards.task),
    }
    option = REGISTRY[wildcards.analysis].baseline
    if option:
        inputs["baseline"] = CACHE.format(model=wildcards.model, task=ANALYSES[wildcards.analysis][option])
    if REGISTRY[wildcards.analysis].artefact == "tuned_lens" and lens_input(wildcards):
        inputs["tuned_lens"] = lens_input(wildcards)
    return inputs


FORWARD_TASKS = sorted({t for a in FORWARD_ANALYSES for t in analysis_tasks(a)})


def all_targets():
    """Everything the default target builds: all.pdf, the resolved config, every aggregated table
    and, when an estimator's analysis is configured, the effective-depth tables."""
    targets = [ALL_PDF, RESOLVED_CONFIG, *expand(AGGREGATED, analysis=list(ANALYSES))]
    if ED_CONFIGURED:
        targets += list(ED_TABLES.values())
    if ERRATA_CONFIGURED:
        targets += list(ERRATA.values())
    if TRAINED_LENS_MODELS:
        targets.append(LENS_HELDOUT_ALL)
    return targets


def config_hash():
    import hashlib
    import json

    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]
