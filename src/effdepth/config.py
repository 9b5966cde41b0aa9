"""Load and validate experiment configurations, with errors that name the offending key."""

from __future__ import annotations

import copy
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from .analyses import REGISTRY

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

# The JSON Schema of the config: package data, so an installed package (not only a checkout) has it;
# the workflow validates its config through validate_config with this schema.
DEFAULT_SCHEMA: Traversable = files("effdepth") / "schemas" / "config.schema.yaml"

ARITHMETIC_SOURCES = ("addition", "multiplication")
# Keys no job computes with: read only by figures (grouping, axes, Q2 pairs) and resource requests.
# The workflow passes every other key of a model or task entry to the jobs that use the entry, so
# editing one of these reruns no extraction or analysis.
MODEL_METADATA = ("family", "size_b", "training", "base_model")
# Keys of a model entry only its tuned lens reads: the lens reaches the jobs that read through it as
# a file (rule train_lens's output or the named lens), so the model's other jobs do not receive them.
MODEL_LENS_KEYS = ("tuned_lens", "lens_training")
TASK_METADATA = ("difficulty",)


class ConfigError(ValueError):
    """A configuration file does not describe a valid experiment."""


# The keys each task source reads besides source, n_prompts, max_tokens and difficulty: any other key
# is refused, because a key the source ignores (``path:`` on an arithmetic task) would silently do nothing.
SOURCE_KEYS = {
    "gsm8k": ("path", "hf_id"),
    "hellaswag": ("path", "hf_id"),
    "aime24": ("path", "hf_id"),
    "addition": ("digits", "seed"),
    "multiplication": ("digits", "seed"),
    "file": ("path", "text_field", "question_field", "answer_field", "join"),
    "fixed": ("items", "join"),
}
# Suffixes a model name may not end with: results/tables/{model}/ would be a directory where the
# workflow writes the file results/tables/{analysis}.parquet or effective_depth.csv, and a download
# goes to resources/models/{model}.partial first.
RESERVED_MODEL_SUFFIXES = (".parquet", ".csv", ".partial")
COMMON_TASK_KEYS = ("source", "n_prompts", "max_tokens", "difficulty")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<:` merges may be overridden
                    continue
                key = self.construct_object(key_node, deep=deep)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise ConfigError(
                        f"{key_node.start_mark.name}, line {line}: key {key!r} appears twice in one mapping "
                        f"(first on line {seen[key]}); YAML would silently keep only the last"
                    )
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path | str) -> Any:
    """Parse a YAML config file strictly: a syntax error or a repeated key raises ConfigError naming
    the file and the line."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.load(fh, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({exc.problem or exc.context})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None


def _where(path: Any) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "<top level>"


def _describe(error: ValidationError) -> str:
    where = _where(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"{where}: unknown key {', '.join(repr(e) for e in extra)}{hint}"
    if error.validator == "enum":
        return f"{where}: {error.instance!r} is not one of {', '.join(map(repr, error.validator_value))}"
    if error.validator == "type":
        return f"{where}: expected {error.validator_value}, got {type(error.instance).__name__} {error.instance!r}"
    if error.validator == "required":
        return f"{where}: {error.message}"
    if error.validator == "minItems" and not error.instance:
        hint = "; remove the key to run on every task" if where.endswith(".tasks") else "; remove the key for its default"
        return f"{where}: empty list{hint}"
    if error.validator == "propertyNames":
        return f"{where}: invalid name {error.instance!r} (letters, digits, '.', '_', '+', '-')"
    return f"{where}: {error.message}"


def _semantic_errors(config: dict[str, Any], original_analyses: dict[str, Any]) -> list[str]:
    """Cross-field rules JSON Schema expresses badly (its anyOf messages are unreadable)."""
    errors: list[str] = []
    for name, model in config["models"].items():
        reserved = [s for s in RESERVED_MODEL_SUFFIXES if name.lower().endswith(s)]
        if reserved:
            errors.append(
                f"models.{name}: a model name may not end with {reserved[0]!r}: its outputs would collide with the "
                f"workflow's own files (results/tables/*{reserved[0]}, resources/models/*.partial); rename the model"
            )
        given = [k for k in ("hf_id", "path", "gguf") if k in model]
        if len(given) != 1:
            errors.append(
                f"models.{name}: give exactly one of hf_id (hub), path (local directory) or gguf (GGUF file); "
                f"got {given or 'none'}"
            )
        gguf = model.get("gguf") or {}
        if gguf.get("assemble") and not gguf.get("package"):
            errors.append(f"models.{name}.gguf: assemble: true needs package (the package whose assemble() writes the file)")
        lens = model.get("tuned_lens")
        if lens is not None:
            where = Path(lens)
            if not (where.is_dir() and (where / "params.pt").is_file() and (where / "config.json").is_file()) and not (
                where.suffix == ".safetensors" and where.is_file()
            ):
                errors.append(
                    f"models.{name}.tuned_lens: {lens} is neither a tuned-lens folder (config.json + params.pt) nor an "
                    "effdepth .safetensors lens file"
                )
        for key in MODEL_LENS_KEYS:
            if key in model and "tuned_lens" not in (config.get("analyses") or {}):
                errors.append(f"models.{name}.{key}: no analysis reads it; add analyses.tuned_lens (or remove the key)")
        if lens is not None and "lens_training" in model:
            errors.append(f"models.{name}: tuned_lens names a trained lens, so lens_training would train none; give one of them")
        errors += _corpus_errors((model.get("lens_training") or {}).get("corpus") or {}, f"models.{name}.lens_training.corpus")
    for name, task in config["tasks"].items():
        src = task["source"]
        if src == "file" and not ("path" in task and ("text_field" in task or "question_field" in task)):
            errors.append(f"tasks.{name}: source 'file' needs path and text_field (or question_field + answer_field)")
        if src in ARITHMETIC_SOURCES and "digits" not in task:
            errors.append(f"tasks.{name}: source '{src}' needs digits")
        if src == "fixed" and "items" not in task:
            errors.append(f"tasks.{name}: source 'fixed' needs items")
        if ("question_field" in task) != ("answer_field" in task):
            errors.append(f"tasks.{name}: question_field and answer_field go together")
        if src == "file" and "join" in task and "question_field" not in task:
            errors.append(f"tasks.{name}.join: joins question and answer; a text_field task has no answer to join")
        ignored = sorted(set(task) - {*COMMON_TASK_KEYS, *SOURCE_KEYS[src]})
        if ignored:
            errors.append(
                f"tasks.{name}: source {src!r} does not read {', '.join(map(repr, ignored))} "
                f"(it reads {', '.join(SOURCE_KEYS[src])})"
            )
    for analysis, options in (config.get("analyses") or {}).items():
        errors += _analysis_errors(analysis, options, original_analyses.get(analysis) or {}, list(config["tasks"]))
        given = original_analyses.get(analysis) or {}
        if REGISTRY[analysis].needs_answer:
            for task in options.get("tasks", []):
                if task in config["tasks"] and "text_field" in config["tasks"][task]:
                    errors.append(
                        f"analyses.{analysis}.tasks: task {task!r} is whole text (tasks.{task}.text_field) but {analysis} "
                        f"measures answer tokens: give the task question_field + answer_field, or list the tasks "
                        f"{analysis} runs on without it"
                        + (
                            ""
                            if "tasks" in (original_analyses.get(analysis) or {})
                            else f" (analyses.{analysis}.tasks defaults to every task)"
                        )
                    )
    primary = (config.get("figures") or {}).get("primary_task")
    if primary is not None and primary not in config["tasks"]:
        errors.append(f"figures.primary_task: unknown task {primary!r} (configured: {', '.join(config['tasks'])})")
    return errors


def _analysis_errors(analysis: str, options: dict[str, Any], given: dict[str, Any], tasks: list[str] | None) -> list[str]:
    """Cross-field rules of one ``analyses.<analysis>`` block (defaults filled in; ``given`` as written).
    ``tasks``: the configured task names, or None where there are none (options given in Python)."""
    errors: list[str] = []
    if "variant" in given and "variants" in given:
        errors.append(f"analyses.{analysis}: give variant or variants, not both")
    if "published" in options["variants"] and not REGISTRY[analysis].published:
        errors.append(
            f"analyses.{analysis}: has no published variant (the public code has no defect to reproduce here); "
            "use variant: correct"
        )
    for task in options.get("tasks", []) if tasks is not None else []:
        if task not in tasks:
            errors.append(f"analyses.{analysis}.tasks: unknown task {task!r} (configured: {', '.join(tasks)})")
    if analysis == "integrated_gradients" and options["rule"] == "auto" and options["min_steps"] > options["max_steps"]:
        errors.append(
            f"analyses.integrated_gradients: min_steps ({options['min_steps']}) exceeds max_steps ({options['max_steps']}) "
            "under rule auto"
        )
    if analysis == "tuned_lens":
        errors += _corpus_errors(options.get("corpus") or {}, "analyses.tuned_lens.corpus")
    if analysis == "residual_erasure" and tasks is not None and options["baseline_task"] not in tasks:
        errors.append(
            f"analyses.residual_erasure.baseline_task: task {options['baseline_task']!r} is not configured "
            f"(configured: {', '.join(tasks)})"
        )
    return errors


def read_schema(schema_path: Traversable | Path | str = DEFAULT_SCHEMA) -> dict[str, Any]:
    """The config schema at ``schema_path`` (a file, or package data as ``DEFAULT_SCHEMA``), parsed."""
    source = Path(schema_path) if isinstance(schema_path, str) else schema_path
    return yaml.safe_load(source.read_text(encoding="utf-8"))


def _corpus_errors(corpus: dict[str, Any], where: str) -> list[str]:
    """A tuned lens's training corpus: the key its source needs, and a local file that exists."""
    errors = [
        f"{where}: source {source} needs {key}"
        for key, source in (("path", "file"), ("hf_id", "hf"))
        if corpus.get("source") == source and key not in corpus
    ]
    if corpus.get("source") == "file" and "path" in corpus and not Path(corpus["path"]).is_file():
        errors.append(f"{where}.path: {corpus['path']} is not a file")
    return errors


def validate_config(
    config: dict[str, Any], schema_path: Traversable | Path | str = DEFAULT_SCHEMA, source: str = "config"
) -> dict[str, Any]:
    """Validate ``config`` and return a copy with defaults filled in.

    Raises ConfigError listing every problem as ``<file>: <dotted.key>: <what is wrong>``.
    """
    schema = read_schema(schema_path)
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    messages = [_describe(e) for e in errors]
    filled = None if messages else fill_defaults(config, schema)
    if filled is not None:
        messages = _semantic_errors(filled, config.get("analyses") or {})
    if messages:
        raise ConfigError(f"{source} is invalid:\n" + "\n".join(f"  - {m}" for m in messages))
    return filled


def _defaults(block: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """The schema defaults of the keys of one object block (``$ref`` to a ``$defs`` entry followed)."""
    result = {}
    for key, spec in block.get("properties", {}).items():
        if "$ref" in spec:
            spec = defs[spec["$ref"].rsplit("/", 1)[-1]]
        if "default" in spec:
            result[key] = copy.deepcopy(spec["default"])
    return result


def _with_variants(merged: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """`variants` lists every variant to run; `variant` is the first, the one figures show."""
    if "variants" in given:
        merged["variant"] = merged["variants"][0]
    else:
        merged["variants"] = [merged["variant"]]
    return merged


def fill_defaults(config: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Copy of ``config`` with schema defaults for models, tasks, analyses and the option blocks."""
    out = copy.deepcopy(config)
    defs = schema["$defs"]

    def defaults(block: dict[str, Any]) -> dict[str, Any]:
        return _defaults(block, defs)

    out["models"] = {n: {**defaults(defs["model"]), **m} for n, m in out["models"].items()}
    out["tasks"] = {n: {**defaults(defs["task"]), **t} for n, t in out["tasks"].items()}
    analyses = {}
    for name, options in (out.get("analyses") or {}).items():
        merged = _with_variants({**defaults(defs["analyses"]["properties"][name]), **(options or {})}, options or {})
        merged.setdefault("tasks", list(out["tasks"]))
        analyses[name] = merged
    out["analyses"] = analyses
    for block in ("extraction", "effective_depth", "figures", "execution"):
        out[block] = {**defaults(defs[block]), **(out.get(block) or {})}
    return out


def block_options(
    block: str, given: dict[str, Any] | None = None, schema_path: Traversable | Path | str = DEFAULT_SCHEMA
) -> dict[str, Any]:
    """One config block's options, validated and with the schema's defaults: what the workflow would
    use for the same block.  For options given in Python (``effdepth.api``).

    ``block``: ``extraction``, ``effective_depth``, ``figures``, ``execution`` or
    ``analyses.<analysis>``; ``given``: the keys set, as they would be written in the config.

    Raises ConfigError naming every bad key as ``<block>.<key>: <what is wrong>``.
    """
    schema = read_schema(schema_path)
    defs = schema["$defs"]
    section, _, analysis = block.partition(".")
    if section == "analyses" and analysis in defs["analyses"]["properties"]:
        spec = defs["analyses"]["properties"][analysis]
    elif not analysis and section in ("extraction", "effective_depth", "figures", "execution"):
        spec = defs[section]
    else:
        known = ", ".join(["extraction", "effective_depth", "figures", "execution", *(f"analyses.{a}" for a in REGISTRY)])
        raise ConfigError(f"no config block {block!r} (blocks: {known})")
    given = dict(given or {})
    validator = Draft202012Validator({"$defs": defs, **spec})
    messages = [f"{block}.{_describe(e)}" for e in sorted(validator.iter_errors(given), key=lambda e: list(map(str, e.path)))]
    if messages:
        raise ConfigError("options are invalid:\n" + "\n".join(f"  - {m}" for m in messages))
    options = {**_defaults(spec, defs), **given}
    if section == "analyses":
        options = _with_variants(options, given)
        options.pop("tasks", None)
        messages = _analysis_errors(analysis, options, given, None)
        if messages:
            raise ConfigError("options are invalid:\n" + "\n".join(f"  - {m}" for m in messages))
    return options


def job_entry(entry: dict[str, Any], metadata: tuple[str, ...]) -> dict[str, Any]:
    """A model or task entry without the keys in ``metadata`` (MODEL_METADATA / TASK_METADATA):
    what the jobs that use the entry receive, so a metadata edit reruns none of them."""
    return {k: v for k, v in entry.items() if k not in metadata}


def load_config(path: Path | str, schema_path: Traversable | Path | str = DEFAULT_SCHEMA) -> dict[str, Any]:
    """Read a YAML config file and validate it."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    config = read_yaml(path)
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping with keys models, tasks, analyses")
    return validate_config(config, schema_path, source=str(path))


def main(argv: list[str] | None = None) -> int:
    """``python -m effdepth.config FILE ...``: validate config files, printing every problem with its
    file, line or dotted key.  Snakemake reads a ``--configfile`` itself before the workflow's checks
    run and reports a YAML syntax error without its line; this names it."""
    import sys

    status = 0
    for path in argv if argv is not None else sys.argv[1:]:
        try:
            load_config(path)
            print(f"{path}: valid")
        except ConfigError as error:
            print(error, file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
