"""Shared fixtures: tiny random models and the real benchmark files when present.

``arch`` (Qwen2, Llama) parametrizes the slow-reference intervention and analysis tests, whose
reference hooks sit on Llama-shaped modules; ``family`` parametrizes the adapter tests over every
supported family (``effdepth.testing.ARCHITECTURES``)."""

from __future__ import annotations

import importlib
import inspect
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


def _parameters(nodeid: str) -> set[str]:
    """The argument names of the test function a node id names (``path::[Class::]function[params]``)."""
    path, *names = nodeid.split("::")
    target = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    for name in names:
        target = getattr(target, name.split("[")[0])
    return set(inspect.signature(target).parameters)


def worker_group(nodeid: str) -> str | None:
    """The tests that must share one pytest-xdist worker: those of the one SLURM cluster (``slurm``: a
    second worker would start and stop the same daemons) and those of the shared finished workflow
    run (``finished_run``: several plan dry runs in its directory); None for the others."""
    names = _parameters(nodeid)
    return "slurm" if "slurm_env" in names else "finished_run" if "finished_run" in names else None


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``make test`` (``-n``): pytest-xdist's scope scheduling with the scopes of ``worker_group`` --
    each group a unit for one worker, largest first, every other test a unit of its own.  (Its
    ``--dist loadgroup`` reads ``xdist_group`` marks through a node-id suffix that this pytest
    no longer honours.)"""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return worker_group(nodeid) or nodeid

    return GroupScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """A test that reads the shared finished workflow run (tests/workflow/conftest.py) is slow: the
    run is its setup when it is the first to ask for it.  Slow tests come first, so that the longest
    work starts at once and the short tests fill the other workers; the SLURM test that also needs
    the finished run comes after the other SLURM tests, when that run is most likely built."""
    for item in items:
        if "finished_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)

    def rank(item) -> tuple[int, int]:
        names = getattr(item, "fixturenames", ())
        return (0 if item.get_closest_marker("slow") else 1), ("slurm_env" in names and "finished_run" in names)

    items.sort(key=rank)
