"""Shared fixtures: tiny random models and the real benchmark files when present.

``arch`` (Qwen2, Llama) parametrizes the slow-reference intervention and analysis tests, whose
reference hooks sit on Llama-shaped modules; ``family`` parametrizes the adapter tests over every
supported family (``effdepth.testing.ARCHITECTURES``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from effdepth.testing import ARCHITECTURES, char_tokenizer, tiny_model

REPO = Path(__file__).resolve().parents[1]
# Real GSM8K / AIME24 files (not part of the repository): $EFFDEPTH_SHARED_DATA, else ../shared/data.
SHARED_DATA = Path(os.environ.get("EFFDEPTH_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(params=["qwen2", "llama"])
def arch(request) -> str:
    return request.param


@pytest.fixture(params=ARCHITECTURES)
def family(request) -> str:
    return request.param


@pytest.fixture
def family_model64(family):
    """A tiny float64 model of every supported family."""
    return tiny_model(family, seed=3, dtype=torch.float64)


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


def pytest_collection_modifyitems(config, items):
    """A test that reads the shared finished workflow run (tests/workflow/conftest.py) is slow: the run
    is its setup when it is the first to ask for it."""
    for item in items:
        if "finished_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
