"""Storing tuned lenses: the tuned-lens folder format (export then import is the identity; a lens
of another model is refused) and the safetensors file with the model fingerprint and the
training data's identity."""

import datetime
import json

import pytest
import torch

from effdepth.cache import CacheError
from effdepth.lenses import LensMismatchError, TunedLens, unembed_hash
from effdepth.lenses.storage import export_tuned_lens, import_tuned_lens, load_tuned_lens, save_tuned_lens
from effdepth.testing import tiny_model


def trained(model, seed=0):
    lens = TunedLens(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lens.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.05)
    return lens


def test_export_writes_the_tuned_lens_format(model64, tmp_path):
    lens = trained(model64)
    export_tuned_lens(lens, tmp_path / "lens", base_model_name_or_path="tiny", base_model_revision="r1")
    config = json.loads((tmp_path / "lens" / "config.json").read_text())
    assert config == {
        "base_model_name_or_path": "tiny",
        "d_model": 64,
        "num_hidden_layers": 4,
        "bias": True,
        "base_model_revision": "r1",
        "unembed_hash": unembed_hash(model64),
        "lens_type": "linear_tuned_lens",
    }
    state = torch.load(tmp_path / "lens" / "params.pt", weights_only=True)
    assert sorted(state) == sorted(f"{i}.{w}" for i in range(4) for w in ("weight", "bias"))
    assert state["2.weight"].shape == (64, 64) and state["2.bias"].shape == (64,)
    assert torch.equal(state["1.weight"], lens.translators[1].weight.detach())


def test_import_of_export_is_the_identity(model64, tmp_path):
    lens = trained(model64, seed=3)
    back = import_tuned_lens(export_tuned_lens(lens, tmp_path / "lens"), model64)
    assert back.dtype == lens.dtype
    for (name, a), (_, b) in zip(lens.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), name
    h = torch.randn(5, 64, dtype=torch.float64)
    assert all(torch.equal(lens(h, layer), back(h, layer)) for layer in range(5))
    # and exporting the import again writes the same tensors
    again = torch.load(export_tuned_lens(back, tmp_path / "again") / "params.pt", weights_only=True)
    first = torch.load(tmp_path / "lens" / "params.pt", weights_only=True)
    assert all(torch.equal(again[k], first[k]) for k in first)


def test_a_folder_without_bias_imports_with_zero_bias(model64, tmp_path):
    folder = tmp_path / "nobias"
    folder.mkdir()
    state = {f"{i}.weight": torch.full((64, 64), 0.01, dtype=torch.float64) for i in range(4)}
    torch.save(state, folder / "params.pt")
    (folder / "config.json").write_text(json.dumps({"d_model": 64, "num_hidden_layers": 4, "bias": False}))
    lens = import_tuned_lens(folder, model64)
    assert not lens.bias and torch.equal(lens.translators[0].weight, state["0.weight"])


def test_lens_of_another_model_is_refused(model64, tmp_path):
    folder = export_tuned_lens(trained(model64), tmp_path / "lens")
    other = tiny_model("qwen2", seed=9, dtype=torch.float64)
    with pytest.raises(LensMismatchError, match="another unembedding"):
        import_tuned_lens(folder, other)
    assert import_tuned_lens(folder, other, allow_unembed_mismatch=True).n_layers == 4
    with pytest.raises(LensMismatchError, match="trained for 4 layers; this model has 3"):
        import_tuned_lens(folder, tiny_model("qwen2", seed=3, dtype=torch.float64, n_layers=3))
    with pytest.raises(LensMismatchError, match="d_model = 64; this model has d_model = 32"):
        import_tuned_lens(folder, tiny_model("qwen2", seed=3, dtype=torch.float64, d_model=32))


def test_damaged_params_are_refused(model64, tmp_path):
    folder = export_tuned_lens(trained(model64), tmp_path / "lens")
    state = torch.load(folder / "params.pt", weights_only=True)
    del state["3.bias"]
    torch.save(state, folder / "params.pt")
    with pytest.raises(LensMismatchError, match=r"missing \['3.bias'\]"):
        import_tuned_lens(folder, model64)
    state["3.bias"] = torch.zeros(65, dtype=torch.float64)
    torch.save(state, folder / "params.pt")
    with pytest.raises(LensMismatchError, match=r"3.bias has shape \(65,\)"):
        import_tuned_lens(folder, model64)

    torch.save({"0.weight": datetime.date(2020, 1, 1)}, folder / "params.pt")  # not loadable with weights_only
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        import_tuned_lens(folder, model64)
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        import_tuned_lens(folder, model64)


def test_safetensors_round_trip_with_provenance(model64, tmp_path):
    lens = trained(model64, seed=4)
    path = tmp_path / "lens.safetensors"
    save_tuned_lens(
        lens, path, model_name="tiny", training_data="sha256:data", model_fingerprint="sha256:model", metadata={"steps": 3}
    )
    back, meta = load_tuned_lens(path, model64, model_fingerprint="sha256:model", training_data="sha256:data")
    assert all(torch.equal(a, b) for a, b in zip(lens.parameters(), back.parameters()))
    assert meta["model_fingerprint"] == "sha256:model" and meta["training_data"] == "sha256:data" and meta["steps"] == "3"
    first = path.read_bytes()
    save_tuned_lens(
        lens, path, model_name="tiny", training_data="sha256:data", model_fingerprint="sha256:model", metadata={"steps": 3}
    )
    assert path.read_bytes() == first  # byte-identical: the workflow reruns nothing
    with pytest.raises(LensMismatchError, match="model files sha256:model, not sha256:other"):
        load_tuned_lens(path, model64, model_fingerprint="sha256:other")
    with pytest.raises(LensMismatchError, match="data sha256:data, not sha256:new"):
        load_tuned_lens(path, model64, training_data="sha256:new")
    with pytest.raises(LensMismatchError, match="another unembedding"):
        load_tuned_lens(path, tiny_model("qwen2", seed=9, dtype=torch.float64))
    with pytest.raises(CacheError):
        load_tuned_lens(tmp_path / "absent.safetensors", model64)


def test_unembed_hash_tells_models_apart(model64):
    assert unembed_hash(model64) == unembed_hash(model64)
    assert unembed_hash(model64) != unembed_hash(tiny_model("qwen2", seed=9, dtype=torch.float64))


def test_open_tuned_lens_reads_either_storage(model64, tmp_path):
    from effdepth.lenses.storage import open_tuned_lens

    lens = trained(model64, seed=5)
    folder = export_tuned_lens(lens, tmp_path / "folder")
    save_tuned_lens(lens, tmp_path / "lens.safetensors", model_name="tiny", training_data="sha256:d")
    for path in (folder, tmp_path / "lens.safetensors"):
        back = open_tuned_lens(path, model64)
        assert all(torch.equal(a, b) for a, b in zip(lens.parameters(), back.parameters()))
    with pytest.raises(LensMismatchError, match="not sha256:e"):
        open_tuned_lens(tmp_path / "lens.safetensors", model64, training_data="sha256:e")
    with pytest.raises(FileNotFoundError, match="neither a tuned-lens folder"):
        open_tuned_lens(tmp_path / "nothing.pt", model64)
