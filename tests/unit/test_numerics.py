"""Numeric guards: a non-finite value is reported where it first appears, with advice."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from effdepth.numerics import (
    NonFiniteError,
    NumericalError,
    check_completeness,
    check_finite,
    check_layer_captures,
    check_weights,
    completeness_gap,
)


def test_finite_tensors_and_integer_tensors_pass():
    check_finite(torch.randn(3, 4), model="m", task="t")
    check_finite(torch.arange(5), model="m", task="t")


def test_error_names_the_first_non_finite_element_and_its_place():
    x = torch.zeros(2, 3, 4)
    x[1, 2, 0] = float("inf")
    x[1, 2, 3] = float("nan")  # later in row-major order: not the one reported
    with pytest.raises(NonFiniteError) as info:
        check_finite(x, model="tiny", task="words", prompt=["p0", "p1"], prompt_axis=0, layer_axis=1, sublayer="MLP output m_l")
    err = info.value
    assert isinstance(err, NumericalError) and isinstance(err, ArithmeticError)
    assert (err.model, err.task, err.prompt, err.layer, err.sublayer) == ("tiny", "words", "p1", 2, "MLP output m_l")
    assert err.index == (1, 2, 0) and err.value == math.inf
    message = str(err)
    for part in ("model tiny", "task words", "prompt p1", "layer 2", "MLP output m_l", "(1, 2, 0)"):
        assert part in message


def test_float16_overflow_suggests_bfloat16_or_float32():
    x = torch.tensor([60000.0, 60000.0], dtype=torch.float16)
    with pytest.raises(NonFiniteError) as info:
        check_finite(x * 2, model="m", task="t", layer=1)
    assert "float16" in str(info.value) and "dtype: bfloat16" in str(info.value) and "float32" in str(info.value)


def test_captures_are_checked_in_forward_order():
    L, T, d = 3, 2, 4
    resid, attn, mlp = torch.zeros(L + 1, T, d), torch.zeros(L, T, d), torch.zeros(L, T, d)
    check_layer_captures(resid, attn, mlp, model="m", task="t", prompt=0)
    mlp[1, 0, 0] = float("nan")  # first appears in layer 1's MLP ...
    resid[2:, 0, 0] = float("nan")  # ... and propagates into h_2, h_3
    attn[2, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError) as info:
        check_layer_captures(resid, attn, mlp, model="m", task="t", prompt=7)
    assert (info.value.layer, info.value.sublayer, info.value.prompt) == (1, "MLP output m_l", 7)
    resid2 = torch.zeros(L + 1, T, d)
    resid2[L, 1, 2] = float("-inf")
    with pytest.raises(NonFiniteError) as info:
        check_layer_captures(resid2, torch.zeros(L, T, d), torch.zeros(L, T, d), model="m", task="t")
    assert info.value.layer == L and "final residual" in info.value.sublayer


def test_nan_weight_is_named():
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2))
    check_weights(net, name="ok")
    with torch.no_grad():
        net[1].weight[1, 2] = float("nan")
    with pytest.raises(NonFiniteError) as info:
        check_weights(net, name="broken")
    assert "1.weight" in str(info.value) and "broken" in str(info.value) and info.value.index == (1, 2)


def test_completeness_gap_definition():
    assert completeness_gap(0.9, 2.0, 1.0) == pytest.approx(0.1)  # |0.9 - 1| / 1
    assert completeness_gap(-0.5, 0.0, 1.0) == pytest.approx(0.5)
    assert completeness_gap(0.0, 1.0, 1.0) == 0.0
    assert completeness_gap(0.1, 1.0, 1.0) == math.inf
    assert math.isnan(completeness_gap(float("nan"), 1.0, 0.0))


def test_incomplete_attributions_warn_with_layer_and_steps(caplog):
    with caplog.at_level(logging.WARNING, logger="effdepth"):
        assert check_completeness(0.99, 1.0, 0.0, model="m", task="t", prompt=3, layer=2, steps=16) == pytest.approx(0.01)
        assert not caplog.records
        gap = check_completeness(0.003877, 0.003, 0.001042, model="m", task="t", prompt=0, layer=1, steps=16)
    assert gap == pytest.approx(abs(0.003877 - 0.001958) / 0.001958)
    (record,) = caplog.records
    assert "layer 1" in record.getMessage() and "steps" in record.getMessage() and "16" in record.getMessage()
    with pytest.raises(NonFiniteError):
        check_completeness(float("nan"), 1.0, 0.0, model="m", task="t", prompt=0, layer=0, steps=16)


def test_the_incompleteness_warning_names_the_configured_knob_or_says_none_helps(caplog):
    """Under rule auto the nodes used (4 + 8k) differ from the cap the user can raise; under the
    published variant no option changes the 256-step sum.  Small tolerances keep their digits."""
    with caplog.at_level(logging.WARNING, logger="effdepth"):
        check_completeness(
            0.5, 1.0, 0.0, model="m", task="t", prompt=0, layer=0, steps=124, tolerance=1e-4, knob="max_steps", knob_value=128
        )
        check_completeness(0.5, 1.0, 0.0, model="m", task="t", prompt=0, layer=0, steps=256, knob=None)
    auto, published = (r.getMessage() for r in caplog.records)
    assert "`max_steps` (now 128)" in auto and "124 nodes" in auto and "> 0.01 %" in auto, auto
    assert "raise" not in published and "published variant" in published, published
