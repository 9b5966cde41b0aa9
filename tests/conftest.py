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
    """Marks and order for a parallel run (``make test``: pytest-xdist, ``--dist loadgroup``).

    - A test that reads the shared finished workflow run (tests/workflow/conftest.py) is slow: the
      run is its setup when it is the first to ask for it.
    - The tests of the one SLURM cluster run in one worker (group ``slurm``: a second worker would
      start and stop the same daemons), and the tests of the finished run in one worker (group
      ``finished_run``: several of them plan dry runs in its directory).
    - Groups and slow tests come first, so that the longest work starts at once and the short tests
      fill the other workers; in the SLURM group, the test that also needs the finished run comes
      last, when that run is most likely built.
    """
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "finished_run" in names:
            item.add_marker(pytest.mark.slow)
        group = "slurm" if "slurm_env" in names else "finished_run" if "finished_run" in names else None
        if group:
            item.add_marker(pytest.mark.xdist_group(group))

    def rank(item) -> tuple[int, int]:
        names = getattr(item, "fixturenames", ())
        if "slurm_env" in names:
            return 0, "finished_run" in names
        if "finished_run" in names:
            return 1, 0
        return (2 if item.get_closest_marker("slow") else 3), 0

    items.sort(key=rank)
