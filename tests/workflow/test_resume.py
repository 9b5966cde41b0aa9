"""An interrupted run resumes: after snakemake and its running job are killed mid-run (kill -9,
a crashed login session, an OOM kill), `snakemake --unlock` and a rerun (rerun-incomplete comes
from profiles/default) recompute exactly the jobs that had not finished, and leave the outputs of
the finished ones untouched."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import JOB_BLOCKS, REPO, SNAKEMAKE, planned_jobs, snakemake, tiny_config_for, write_config

pytestmark = pytest.mark.workflow

ANALYSES = ("relative_contribution", "logit_lens")
TARGETS = [f"results/tables/{a}.parquet" for a in ANALYSES]


def _jobs_in_log(log: str) -> tuple[dict[str, tuple], set[str]]:
    """jobid -> (rule, wildcards, outputs) of every job the log shows starting; the jobids it shows finishing."""
    started = {}
    for block in re.split(r"\n(?=\[[A-Z][a-z]{2} )", log):
        job = planned_jobs(block)
        jobid = re.search(r"^\s+jobid: (\d+)$", block, re.M)
        if job and jobid:
            ((rule, wildcards),) = job
            outputs = re.search(r"^\s+output: (.*)$", block, re.M)
            started[jobid.group(1)] = (rule, frozenset(wildcards.items()), outputs.group(1).split(", ") if outputs else [])
    return started, set(re.findall(r"Finished jobid: (\d+)", log))


def _job_keys(output: str) -> set[tuple]:
    return {(rule, frozenset(w.items())) for rule, w in planned_jobs(output)}


@pytest.mark.slow
def test_killed_run_resumes_with_only_the_unfinished_jobs(tiny_models, tmp_path):
    config = tiny_config_for(tmp_path, tiny_models)
    config["models"] = {"tiny-qwen2": config["models"]["tiny-qwen2"]}
    config["analyses"] = {a: config["analyses"][a] for a in ANALYSES}
    path = str(write_config(tmp_path, config))
    args = (*TARGETS, "--cores", "1", "--configfile", path)  # targets first: --configfile takes several values
    everything = _job_keys(snakemake(tmp_path, "-n", *args).stdout)
    assert len(everything) >= 8, everything

    # One job at a time (--cores 1).  After an extraction has finished, SIGKILL snakemake and its
    # job (the whole process group) at the moment the running job's outputs appear on disk, before
    # snakemake has seen the job end: those outputs exist but are incomplete.
    log_path = tmp_path / "interrupted.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "src")}
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path), *args, *JOB_BLOCKS]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while True:
                assert proc.poll() is None, "snakemake ended before the interruption:\n" + log_path.read_text()[-4000:]
                assert time.monotonic() < deadline, "no interruption point within 120 s:\n" + log_path.read_text()[-4000:]
                started, finished_ids = _jobs_in_log(log_path.read_text())
                running = [j for j in started if j not in finished_ids]
                if any(started[j][0] == "extract" for j in finished_ids) and running:
                    outputs = started[running[-1]][2]
                    if outputs and all((tmp_path / out).exists() for out in outputs):
                        break
                time.sleep(0.02)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    started, finished_ids = _jobs_in_log(log_path.read_text())
    finished = {started[j][:2] for j in finished_ids}
    unfinished = everything - finished
    assert finished and unfinished, (finished, unfinished)
    assert any(rule == "extract" for rule, _ in finished)
    kept = {out: Path(tmp_path, out).stat().st_mtime_ns for j in finished_ids for out in started[j][2]}
    assert kept
    killed = [j for j in started if j not in finished_ids]
    assert len(killed) == 1, killed
    incomplete = {out: Path(tmp_path, out).stat().st_mtime_ns for out in started[killed[0]][2]}

    # The kill left the directory locked: unlock, then the dry run plans exactly the unfinished jobs.
    snakemake(tmp_path, "--unlock", "--configfile", path)
    # The killed job's outputs exist and are newer than its inputs: only snakemake's record that
    # the job never finished (rerun-incomplete, profiles/default) gets it planned again.
    assert all(Path(tmp_path, out).is_file() for out in incomplete), incomplete
    planned = _job_keys(snakemake(tmp_path, "-n", *args).stdout)
    assert planned == unfinished, {
        "planned but finished": planned - unfinished,
        "unfinished but not planned": unfinished - planned,
    }

    rerun = snakemake(tmp_path, *args)
    assert _job_keys(rerun.stdout + rerun.stderr) == unfinished
    assert {out: Path(tmp_path, out).stat().st_mtime_ns for out in kept} == kept  # finished outputs untouched
    assert all(Path(tmp_path, out).stat().st_mtime_ns != t for out, t in incomplete.items())  # the killed job's: redone
    for target in TARGETS:
        assert (tmp_path / target).is_file()
    assert "Nothing to be done" in snakemake(tmp_path, "-n", *args).stdout
