"""Shared fixtures: tiny random models (Qwen2 and Llama) and the real benchmark files when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from effdepth.testing import char_tokenizer, tiny_model

REPO = Path(__file__).resolve().parents[1]
# Real GSM8K / AIME24 files (not part of the repository): $EFFDEPTH_SHARED_DATA, else ../shared/data.
SHARED_DATA = Path(os.environ.get("EFFDEPTH_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(params=["qwen2", "llama"])
def arch(request) -> str:
    return request.param


@pytest.fixture
def model64(arch):
    """A tiny float64 model: references and fast paths compared at near machine precision."""
    return tiny_model(arch, seed=3, dtype=torch.float64)


@pytest.fixture
def model32(arch):
    return tiny_model(arch, seed=3, dtype=torch.float32)


@pytest.fixture(scope="session")
def tokenizer():
    return char_tokenizer()


def shared_file(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"real benchmark file {path} is not available (not part of the repository; set EFFDEPTH_SHARED_DATA)")
    return path
