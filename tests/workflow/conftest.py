"""Run the real Snakefile in a scratch working directory with the test configuration.

Shared by the workflow tests (session scope, so each is computed once per test run):

``finished_run``   config/test.yaml run end to end, every analysis with a published variant under
                   ``variants: [correct, published]`` (so one run also holds the errata): the tests of
                   its outputs, its report and console, API identity, incremental dry runs, and the
                   SLURM / local-GPU comparisons all read it.  A test that changes files in it works
                   on a copy (``copy_run``).
``paper_dry_run``  the one dry run of the paper's DAG (config.yaml, ``--profile slurm``, every job
                   block): the tests of the paper's jobs and of their SLURM resources both read it.

Under pytest-xdist (``make test`` runs ``-n auto``) both are still computed once per test run: the
first worker to ask builds them under a file lock, the others wait and read them
(``built_once``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

from effdepth.testing import main as write_tiny_models

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


# profiles/default hides Snakemake's job blocks; the tests read them (which jobs a run plans or starts).
JOB_BLOCKS = ("--quiet", "host")


def snakemake(
    workdir: Path, *args: str, check: bool = True, timeout: int = 2400, blocks: bool = True
) -> subprocess.CompletedProcess:
    """Run the Snakefile in ``workdir``; ``blocks``: print every job block (else the default profile's
    short console)."""
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args, *(JOB_BLOCKS if blocks else ())]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=workdir)
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
        )
    return result


def tiny_config_for(workdir: Path, models_dir: Path) -> dict:
    """config/test.yaml with absolute paths, so it works from any working directory."""
    config = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    for entry in config["models"].values():
        entry["path"] = str(models_dir / Path(entry["path"]).name)
    for task in config["tasks"].values():
        if "path" in task:
            task["path"] = str(REPO / task["path"])
    return config


def write_config(workdir: Path, config: dict, name: str = "config.yaml") -> Path:
    path = workdir / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def planned_jobs(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a dry run lists."""
    jobs = []
    for block in re.split(r"\n(?=\[[A-Z][a-z]{2} )", output):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if not rule:
            continue
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        pairs = dict(p.split("=", 1) for p in wildcards.group(1).split(", ")) if wildcards else {}
        jobs.append((rule.group(1), pairs))
    return jobs


def built_once(tmp_path_factory, name: str, build) -> Path:
    """The directory ``name``, made by ``build(directory)`` once per test run.

    Without pytest-xdist that is once per session.  Under it, the workers share the parent of their
    base temporary directories: the first worker to ask builds the directory there under a file
    lock, and the others wait for it and reuse it (the pattern of pytest-xdist's documentation).  A
    build that raised leaves no done-mark, so the next worker to ask builds it again and sees the
    same error."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        directory = tmp_path_factory.mktemp(name)
        build(directory)
        return directory
    root = tmp_path_factory.getbasetemp().parent
    directory, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir()
            build(directory)
            done.touch()
    return directory


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """The tiny models of effdepth.testing, written once per test run (one path for every worker, so
    a config built from it equals the finished run's)."""
    return built_once(tmp_path_factory, "models", lambda directory: write_tiny_models([str(directory)]))


def both_variants(config: dict, first: str = "correct") -> dict:
    """``config`` with every analysis that has a published variant under both variants (``first``
    is the one the figures show), the others under ``correct``."""
    from effdepth.analyses import REGISTRY

    for name, options in config["analyses"].items():
        options.pop("variant", None)
        other = {"correct": "published", "published": "correct"}[first]
        options["variants"] = [first, other] if REGISTRY[name].published else ["correct"]
    return config


def planned_outputs(config_path: Path) -> tuple[list[str], list[str]]:
    """(figures, models with a profile page) that the workflow plans for a config, in the order of
    all.pdf -- what effdepth.figures.available_figures and the workflow's reference check give."""
    from effdepth.config import load_config
    from effdepth.depth import effective_depth_inputs, reference_pairs
    from effdepth.figures.registry import available_figures

    config = load_config(config_path)
    analyses = config["analyses"]
    estimators = effective_depth_inputs(analyses)
    pairs = reference_pairs(REPO / "resources" / "reference" / "reference_effective_depth.csv")
    matches = any((m, t) in pairs for m in config["models"] for a in estimators for t in analyses[a]["tasks"])
    return available_figures(analyses, reference_matches=matches), list(config["models"]) if estimators else []


def expected_pages(config_path: Path) -> int:
    """Pages of all.pdf: the title page, one per planned figure, one profile per model."""
    figures, profiles = planned_outputs(config_path)
    return 1 + len(figures) + len(profiles)


def copy_run(run: Path, destination: Path) -> Path:
    """A copy of a finished run's directory (modification times kept, so it is as up to date as the
    original) for a test that changes its files."""
    return Path(shutil.copytree(run, destination, symlinks=True))


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, tiny_models) -> Path:
    """The test configuration run end to end once per test run (--cores 2), every analysis with a
    published variant under both variants (the correct one shown), with the default profile's
    console; what it printed is in ``console.txt`` of the run's directory."""

    def build(workdir: Path) -> None:
        config = write_config(workdir, both_variants(tiny_config_for(workdir, tiny_models)))
        result = snakemake(workdir, "--cores", "2", "--configfile", str(config), blocks=False)
        (workdir / "console.txt").write_text(result.stdout + result.stderr)

    return built_once(tmp_path_factory, "run", build)


@pytest.fixture(scope="session")
def paper_dry_run(tmp_path_factory) -> str:
    """`snakemake -n --profile slurm` on the paper's config.yaml from the project directory
    (./slurm -> profiles/slurm), with no cluster and no SLURM settings, every job block printed:
    stdout + stderr.  The one dry run of the paper's DAG: the jobs it lists do not depend on the
    profile, the resources it prints are the SLURM profile's."""

    def build(workdir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EFFDEPTH_", "SLURM_"))}
        env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO / "src"))
        cmd = ["timeout", "-k", "15", "300", SNAKEMAKE, "-n", "--profile", "slurm", "--directory", str(workdir)]
        cmd += ["--configfile", str(REPO / "config.yaml"), *JOB_BLOCKS]
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=360)
        out = result.stdout + result.stderr
        assert result.returncode == 0, out[-4000:]
        (workdir / "dry-run.txt").write_text(out)

    return (built_once(tmp_path_factory, "paper", build) / "dry-run.txt").read_text()
