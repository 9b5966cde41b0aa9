"""Run the real Snakefile in a scratch working directory with the test configuration."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("models")
    write_tiny_models([str(directory)])
    return directory


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, tiny_models) -> Path:
    """The test configuration run end to end once per session (--cores 2), with the default profile's
    console; what it printed is in ``console.txt`` of the run's directory."""
    workdir = tmp_path_factory.mktemp("run")
    config = write_config(workdir, tiny_config_for(workdir, tiny_models))
    result = snakemake(workdir, "--cores", "2", "--configfile", str(config), blocks=False)
    (workdir / "console.txt").write_text(result.stdout + result.stderr)
    return workdir
