"""effdepth on a model object (effdepth.api): the same checks, tables and options as the workflow,
and the notebook in examples/ runs."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest
import torch

import effdepth
from effdepth.analyses import REGISTRY
from effdepth.config import ConfigError
from effdepth.depth import SCHEMA as ED_SCHEMA
from effdepth.subjects import ModelStateError
from effdepth.tables import BASE_SCHEMA
from effdepth.testing import tiny_model

REPO = Path(__file__).resolve().parents[2]
PAIRS = [("12 + 30 =", " 42"), ("the cat sat on", " the mat"), ("7 + 8 =", " 15")]


@pytest.fixture(scope="module")
def model():
    return tiny_model("qwen2", seed=0)


@pytest.fixture(scope="module")
def measured(model, tokenizer):
    return effdepth.measure(model, tokenizer, PAIRS, name="tiny", task="t", depth={"bootstrap": 20})


def test_measure_gives_the_workflow_tables_and_estimates(measured):
    assert set(measured.tables) == {"relative_contribution", "logit_lens", "block_influence"}
    for analysis, table in measured.tables.items():
        assert {c: table.schema[c] for c in BASE_SCHEMA} == BASE_SCHEMA, analysis
        assert set(table["analysis"]) == {analysis} and set(table["model"]) == {"tiny"}
    ed = measured.effective_depth
    assert dict(ed.schema) == ED_SCHEMA
    assert {"cos", "kl", "overlap"} <= set(ed["estimator"]) and set(ed["n_prompts"]) == {3}
    assert (ed["n_resamples"] == 20).all()
    assert measured.stats.n_prompts == 3 and measured.stats.prompt_ids == ("0", "1", "2")


def test_profile_chart_is_an_altair_chart(measured):
    import altair as alt

    chart = measured.profile_chart()
    assert isinstance(chart, alt.TopLevelMixin)
    assert chart.to_dict()  # a valid Vega-Lite spec (what Jupyter displays)


def test_every_analysis_and_variant_is_reachable(model, tokenizer):
    """Every analysis of the registry runs through effdepth.run, under each of its variants (the
    analyses that read a tuned lens are given an untrained one)."""
    from effdepth.lenses import TunedLens

    subject = effdepth.subject(model, tokenizer, PAIRS[:2], name="tiny", task="t")
    lens = TunedLens(model)
    small = {
        "layer_skip": {"positions_per_prompt": 1},
        "integrated_gradients": {"steps": 4, "rule": "riemann"},
        "residual_erasure": {},
        "layer_deletion": {},
    }
    for name, spec in REGISTRY.items():
        variants = ["correct", "published"] if spec.published else ["correct"]
        table = effdepth.run(subject, name, variants=variants, tuned_lens=lens if spec.artefact else None, **small.get(name, {}))
        assert table.height and set(table["variant"]) == set(variants), name
        assert set(table["analysis"]) == {name}


def test_options_are_the_configs_with_its_defaults(model, tokenizer):
    assert effdepth.options("analyses.logit_lens")["top_k"] == 5
    assert effdepth.options("extraction")["batch_size"] == 4
    assert effdepth.options("analyses.layer_skip", variant="published")["variants"] == ["published"]
    with pytest.raises(ConfigError, match=r"analyses\.layer_skip\.kinds"):
        effdepth.options("analyses.layer_skip", kinds=["everything"])
    with pytest.raises(ConfigError, match="has no published variant"):
        effdepth.options("analyses.block_influence", variant="published")
    with pytest.raises(ConfigError, match=r"unknown key 'top_kk'"):
        effdepth.options("analyses.logit_lens", top_kk=3)
    with pytest.raises(ConfigError, match="no config block"):
        effdepth.options("analyses.nothing")


def test_a_model_in_training_mode_is_refused_and_the_model_is_left_as_it_was(tokenizer):
    net = tiny_model("llama", seed=1)
    net.train()
    with pytest.raises(ModelStateError, match=r"training mode .* model\.eval\(\)"):
        effdepth.subject(net, tokenizer, PAIRS, name="tiny")
    net.eval()
    flags = [p.requires_grad for p in net.parameters()]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    subject = effdepth.subject(net, tokenizer, PAIRS[:1], name="tiny")
    effdepth.run(subject, "integrated_gradients", steps=2, rule="riemann")
    assert [p.requires_grad for p in net.parameters()] == flags and all(p.grad is None for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_unsupported_models_and_bad_prompts_are_named(tokenizer):
    from effdepth.adapters import UnsupportedArchitecture
    from effdepth.tasks import TaskError

    class NotAnLM(torch.nn.Module):
        config = type("C", (), {"architectures": ["MysteryForCausalLM"], "model_type": "mystery"})()

    with pytest.raises(UnsupportedArchitecture, match="Mystery"):
        effdepth.subject(NotAnLM(), tokenizer, PAIRS)
    net = tiny_model("qwen2", seed=0)
    with pytest.raises(TaskError, match="non-empty list"):
        effdepth.subject(net, tokenizer, [])
    with pytest.raises(TaskError, match="every item"):
        effdepth.subject(net, tokenizer, ["a text", ("q", "a")])


def test_a_meta_device_weight_is_refused(tokenizer):
    net = tiny_model("qwen2", seed=0)
    shape = net.model.layers[0].mlp.up_proj.weight.shape
    net.model.layers[0].mlp.up_proj.weight = torch.nn.Parameter(torch.empty(shape, device="meta"))
    with pytest.raises(ModelStateError, match="meta device .*up_proj"):
        effdepth.subject(net, tokenizer, PAIRS)


def test_texts_and_task_specs_are_prompts(model, tokenizer):
    texts = effdepth.subject(model, tokenizer, ["the cat sat on the mat"], name="tiny")
    assert texts.prompts[0]["n_answer"] == 0 and texts.prompts[0]["question"] == "the cat sat on the mat"
    spec = effdepth.subject(model, tokenizer, {"source": "addition", "digits": 2, "n_prompts": 3}, task="addition_2")
    assert len(spec.prompts) == 3 and all(p["n_answer"] > 0 for p in spec.prompts)


@pytest.mark.slow
def test_the_quickstart_notebook_runs(tmp_path):
    """examples/quickstart.ipynb executed top to bottom (nbclient, a fresh kernel) on a tiny model."""
    import nbclient
    import nbformat

    from effdepth.testing import main as write_tiny_models

    write_tiny_models([str(tmp_path)])
    notebook = nbformat.read(REPO / "examples" / "quickstart.ipynb", as_version=4)
    env = {"EFFDEPTH_MODEL": str(tmp_path / "tiny-qwen2"), "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    os.environ.update(env)
    nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("application/vnd.vegalite.v5+json" in o.get("data", {}) or "text/html" in o.get("data", {}) for o in outputs)


def test_top_level_names_are_the_api():
    assert effdepth.measure is effdepth.api.measure and "measure" in dir(effdepth)
    with pytest.raises(AttributeError):
        effdepth.nothing  # noqa: B018
    assert isinstance(pl.DataFrame(), pl.DataFrame)


def test_interventions_refuse_a_model_split_over_devices(model, tokenizer, monkeypatch):
    """Interventions re-run layers on one device; a model whose decoder layers sit on several devices
    is refused with what to do (a real split needs several GPUs: here the layers report two devices)."""
    subject = effdepth.subject(model, tokenizer, PAIRS[:1], name="tiny")

    class Split:
        def decoder_layers(self, _model):
            return [torch.nn.Linear(1, 1), torch.nn.Linear(1, 1, device="meta")]

    monkeypatch.setattr("effdepth.adapters.adapter_for", lambda _model: Split())
    with pytest.raises(ModelStateError, match=r"spread over cpu, meta.*device_map=\{'': 0\}"):
        effdepth.run(subject, "layer_skip")
