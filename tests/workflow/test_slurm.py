"""The execution profiles: profiles/slurm against a real single-node SLURM cluster started on this
machine (tests/slurm/cluster.sh, Debian packages), its dry run on the paper's config, and the
local-GPU profile (profiles/local-gpu with its GPU-pinning job shell).

The real-SLURM tests need root and apt (they install slurmctld/slurmd/munge when missing).  They
FAIL when SLURM cannot be installed or started; set EFFDEPTH_SKIP_SLURM=1 to skip them instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
import torch
from polars.testing import assert_frame_equal

from .conftest import JOB_BLOCKS, REPO, SNAKEMAKE, planned_jobs, tiny_config_for, write_config

CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
SLURM_PROFILE = REPO / "profiles" / "slurm"
SLURM_TEST_PROFILE = REPO / "profiles" / "slurm-test"
GPU_SHELL = REPO / "profiles" / "local-gpu" / "gpu-shell"
GPU_RULES = {"extract", "intervention"}

# The SLURM run: one model, one task, forward-only analyses plus one intervention (two GPU jobs);
# the tables must equal the same model/task rows of the local run of config/test.yaml.
SLURM_ANALYSES = ("relative_contribution", "logit_lens", "layer_skip")
SLURM_TARGETS = [f"results/tables/{a}.parquet" for a in SLURM_ANALYSES]
MODEL, TASK = "tiny-qwen2", "addition_3"


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EFFDEPTH_", "SLURM_"))}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO / "src"), **extra)
    return env


def run_snakemake(workdir: Path, *args: str, env: dict[str, str], timeout: int = 300, cwd: Path | None = None):
    """snakemake under `timeout -k` (a hung status loop must not hang the test suite)."""
    cmd = [
        "timeout",
        "-k",
        "15",
        str(timeout),
        SNAKEMAKE,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        *args,
        *JOB_BLOCKS,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd or workdir, timeout=timeout + 60)
    result.output = result.stdout + result.stderr
    assert result.returncode not in (124, 137), f"snakemake timed out after {timeout}s:\n{result.output[-6000:]}"
    return result


def _subset_config(workdir: Path, tiny_models: Path, model: str = MODEL) -> dict:
    config = tiny_config_for(workdir, tiny_models)
    config["models"] = {model: config["models"][MODEL]}
    config["tasks"] = {TASK: config["tasks"][TASK]}
    config["analyses"] = {a: config["analyses"][a] for a in SLURM_ANALYSES}
    return config


def assert_tables_equal_local(workdir: Path, local_run: Path, analyses=SLURM_ANALYSES) -> None:
    """The tables of ``workdir`` (one model, one task, the correct variant) equal those rows of the
    local run (which also ran the published variants)."""
    for analysis in analyses:
        got = pl.read_parquet(workdir / "results" / "tables" / f"{analysis}.parquet")
        assert set(got["variant"]) == {"correct"}, analysis
        want = pl.read_parquet(local_run / "results" / "tables" / f"{analysis}.parquet").filter(
            (pl.col("model") == MODEL) & (pl.col("task") == TASK) & (pl.col("variant") == "correct")
        )
        assert got.height > 0 and got.height == want.height, (analysis, got.height, want.height)
        assert got.columns == want.columns, analysis
        keys = [c for c in got.columns if c not in ("value", "weight")]
        assert_frame_equal(got.sort(keys), want.sort(keys), check_exact=False, rel_tol=1e-5, abs_tol=1e-6)


# --------------------------------------------------------------------------- the cluster


def _cluster(command: str, env: dict[str, str] | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLUSTER), command], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="session")  # session: set up before the (session) local run, so a skip or failure is quick
def slurm_env():
    """A running single-node SLURM cluster; yields the environment for snakemake.  Stops every
    daemon it started, also when a test fails (a cluster that was already up is left running)."""
    if os.environ.get("EFFDEPTH_SKIP_SLURM") == "1":
        pytest.skip("EFFDEPTH_SKIP_SLURM=1: real-SLURM tests skipped on request")
    if os.geteuid() != 0:
        pytest.fail(
            "the real-SLURM tests run munged/slurmctld/slurmd as root: run them as root, "
            "or set EFFDEPTH_SKIP_SLURM=1 to skip them"
        )
    install = _cluster("install", timeout=1200)
    if install.returncode != 0:
        pytest.fail(
            "could not install SLURM from the Debian packages (tests/slurm/cluster.sh install; needs apt and "
            f"network access to the Debian mirrors); set EFFDEPTH_SKIP_SLURM=1 to skip:\n{install.stderr[-3000:]}"
        )
    already_up = _cluster("status").returncode == 0
    # The node advertises 4 CPUs whatever the machine has: GPU jobs ask for --cpus-per-task=threads
    # (4 in the rules, capped by --cores).
    start = _cluster("start", env={**os.environ, "SLURM_TEST_CPUS": "4"})
    try:
        if start.returncode != 0:
            pytest.fail(f"the SLURM test cluster did not start (tests/slurm/cluster.sh start):\n{start.stderr[-4000:]}")
        conf = re.search(r"export SLURM_CONF=(\S+)", start.stdout)
        assert conf, start.stdout
        yield _clean_env(SLURM_CONF=conf.group(1), EFFDEPTH_SLURM_PARTITION="debug")
    finally:
        if not already_up:
            stop = _cluster("stop")
            status = _cluster("status")
            assert stop.returncode == 0 and status.returncode != 0, (
                f"SLURM daemons still running:\n{stop.stderr}\n{status.stdout}"
            )


def _slurm_job(env: dict[str, str], jobid: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", jobid], capture_output=True, text=True, env=env, check=True).stdout
    return dict(re.findall(r"(\w+(?:/\w+)?)=(\S+)", out))


@pytest.mark.slurm
@pytest.mark.slow
def test_tiny_config_runs_through_sbatch_and_equals_local_run(slurm_env, finished_run, tiny_models, tmp_path):
    config = write_config(tmp_path, _subset_config(tmp_path, tiny_models))
    result = run_snakemake(
        tmp_path,
        *SLURM_TARGETS,
        "--cores",
        "2",
        "--profile",
        str(SLURM_PROFILE),
        "--profile",
        str(SLURM_TEST_PROFILE),
        "--configfile",
        str(config),
        env=slurm_env,
    )
    out = result.output
    assert result.returncode == 0, out[-8000:]

    # The GPU jobs went through sbatch: SLURM wrote their logs and knows them as completed GPU jobs
    # on the configured partition; every CPU job ran on the submit host.
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", out)
    logs = sorted((tmp_path / ".snakemake" / "slurm_logs").glob("rule_*/*/*.log"))
    assert {p.parent.parent.name for p in logs} == {"rule_extract", "rule_intervention"}, logs
    assert all(p.parent.name.startswith(f"{MODEL}_{TASK}") for p in logs), logs  # intervention: + _<analysis>
    assert sorted(p.stem for p in logs) == sorted(submitted) and len(submitted) == 2, (submitted, logs)
    for log in logs:
        rule = log.parent.parent.name.removeprefix("rule_")
        assert f"rule {rule}:" in log.read_text(), log.read_text()[-3000:]
        job = _slurm_job(slurm_env, log.stem)
        assert job["JobState"] == "COMPLETED" and job["Partition"] == "debug", job
        assert job.get("TresPerJob") == "gres:gpu:1", job  # resources: gpu=1 -> sbatch --gpus=1
    for rule in ("prepare_prompts", "forward_tables", "aggregate"):
        assert f"localrule {rule}:" in out, rule

    assert_tables_equal_local(tmp_path, finished_run)


@pytest.mark.slurm
@pytest.mark.slow
def test_failing_job_is_reported_and_snakemake_exits_nonzero(slurm_env, tiny_models, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken-model"
    # intact files (every check while the workflow is read looks at headers and shapes only, so the DAG
    # builds) holding a NaN weight, which the job refuses when it loads the model on the node
    shutil.copytree(tiny_models / MODEL, broken)
    weights = load_file(broken / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    config = _subset_config(tmp_path, tiny_models, model="broken")
    config["models"]["broken"]["path"] = str(broken)
    path = write_config(tmp_path, config)
    target = f"results/cache/broken/{TASK}/stats.safetensors"
    result = run_snakemake(
        tmp_path,
        target,
        "--cores",
        "2",
        "--profile",
        str(SLURM_PROFILE),
        "--profile",
        str(SLURM_TEST_PROFILE),
        "--configfile",
        str(path),
        env=slurm_env,
    )
    out = result.output
    assert result.returncode != 0, out[-6000:]
    assert "Error in rule extract" in out, out[-6000:]
    jobid = re.search(r"has been submitted with SLURM jobid (\d+)", out)
    assert jobid, out[-6000:]
    assert re.search(rf"SLURM-job '?{jobid.group(1)}'? failed", out), out[-6000:]
    assert _slurm_job(slurm_env, jobid.group(1))["JobState"] == "FAILED"
    assert (tmp_path / ".snakemake" / "slurm_logs" / "rule_extract" / f"broken_{TASK}" / f"{jobid.group(1)}.log").is_file()
    assert not (tmp_path / target).exists()


@pytest.mark.slurm
@pytest.mark.slow
def test_missing_partition_stops_before_any_job(slurm_env, tiny_models, tmp_path):
    env = {k: v for k, v in slurm_env.items() if k != "EFFDEPTH_SLURM_PARTITION"}
    config = write_config(tmp_path, _subset_config(tmp_path, tiny_models))
    result = run_snakemake(
        tmp_path, *SLURM_TARGETS, "--cores", "2", "--profile", str(SLURM_PROFILE), "--configfile", str(config), env=env
    )
    assert result.returncode != 0
    assert "SLURM partition not set: export EFFDEPTH_SLURM_PARTITION=" in result.output, result.output[-4000:]
    assert "submitted with SLURM jobid" not in result.output
    assert not (tmp_path / "resources" / "prompts").exists()  # not even the local jobs ran


# --------------------------------------------------------------------------- no cluster needed


def _job_resources(output: str) -> list[tuple[str, dict[str, str], dict[str, str]]]:
    """(rule, wildcards, resources) of every job a dry run lists."""
    jobs = []
    for block in re.split(r"\n(?=\[[A-Z][a-z]{2} )", output):
        job = planned_jobs(block)
        if not job:
            continue
        ((rule, wildcards),) = job
        found = re.search(r"^\s+resources: (.*)$", block, re.M)
        resources = dict(p.split("=", 1) for p in found.group(1).split(", ")) if found else {}
        jobs.append((rule, wildcards, resources))
    return jobs


@pytest.mark.workflow
def test_paper_dry_run_with_slurm_profile_requests_gpus_for_all_models(paper_dry_run):
    """`snakemake -n --profile slurm` from the project directory (./slurm -> profiles/slurm), with no
    cluster and no SLURM settings: every GPU job of the 12 models asks for a GPU, memory and time
    from the model's size."""
    config = REPO / "config.yaml"
    out = paper_dry_run  # tests/workflow/conftest.py
    assert "Using profiles slurm and workflow specific profile" in out
    import yaml

    sizes = {m: float(e["size_b"]) for m, e in yaml.safe_load(config.read_text())["models"].items()}
    assert len(sizes) == 12
    jobs = _job_resources(out)
    for rule in GPU_RULES:
        per_model: dict[str, set] = {}
        for r, wildcards, res in jobs:
            if r != rule:
                continue
            assert res.get("gpu") == "1", (rule, wildcards, res)
            assert "slurm_partition" in res and "slurm_account" in res and "gpu_model" in res, res
            per_model.setdefault(wildcards["model"], set()).add((int(res["mem_mb"]), int(res["runtime"])))
        assert set(per_model) == set(sizes), (rule, sorted(per_model))
        assert all(len(v) == 1 for v in per_model.values()), per_model  # one size per model
        request = {m: next(iter(v)) for m, v in per_model.items()}
        by_size = sorted(request, key=sizes.get)
        for small, large in zip(by_size, by_size[1:]):
            if sizes[small] == sizes[large]:
                assert request[small] == request[large], (small, large, request)
            else:
                assert all(a <= b for a, b in zip(request[small], request[large])), (small, large, request)
        assert request["Qwen2.5-32B-Instruct"][0] > 64_000, request  # 32B in bf16 is 64 GB on the host while loading
        assert request["Qwen2.5-32B-Instruct"][1] > request["Qwen2.5-1.5B-Instruct"][1]


def _gpu_shell(command: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(GPU_SHELL), "-c", command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**_clean_env(), **env}
    )


def test_gpu_shell_gives_concurrent_jobs_their_own_gpu(tmp_path):
    env = dict(CUDA_VISIBLE_DEVICES="4,7", EFFDEPTH_GPU_LOCK_DIR=str(tmp_path))
    job = "echo $CUDA_VISIBLE_DEVICES $(date +%s.%N); sleep 1.5; echo $(date +%s.%N)"
    procs = [_gpu_shell(job, **env) for _ in range(3)]
    outs = [p.communicate(timeout=30) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    runs = sorted((float(start), float(end), gpu) for gpu, start, end in (o.split() for o, _ in outs))
    assert {gpu for *_, gpu in runs} <= {"4", "7"}
    for i, (_, end, gpu) in enumerate(runs):  # never two jobs on one GPU at the same time
        for start2, _, gpu2 in runs[i + 1 :]:
            assert gpu != gpu2 or start2 >= end, runs
    assert runs[2][0] >= min(runs[0][1], runs[1][1]) - 0.05, runs  # the third job waited for a free GPU

    # EFFDEPTH_GPU_SCRIPTS: only the job scripts of GPU rules are pinned; exit codes pass through
    scripts = dict(env, EFFDEPTH_GPU_SCRIPTS="extract.py layer_skip.py")
    cpu = _gpu_shell("echo $CUDA_VISIBLE_DEVICES; exit 3", **scripts)
    gpu = _gpu_shell(": .snakemake/scripts/tmpab12.layer_skip.py; echo $CUDA_VISIBLE_DEVICES", **scripts)
    assert cpu.communicate(timeout=30)[0].strip() == "4,7" and cpu.returncode == 3
    assert gpu.communicate(timeout=30)[0].strip() in {"4", "7"} and gpu.returncode == 0
    none = _gpu_shell("echo [$CUDA_VISIBLE_DEVICES]", CUDA_VISIBLE_DEVICES="", EFFDEPTH_GPU_LOCK_DIR=str(tmp_path))
    assert none.communicate(timeout=30)[0].strip() == "[]"  # no GPU: the command runs as it is


@pytest.mark.workflow
def test_local_gpu_profile_pins_gpu_jobs(finished_run, tiny_models, tmp_path):
    config = write_config(tmp_path, _subset_config(tmp_path, tiny_models))
    env = _clean_env(CUDA_VISIBLE_DEVICES="0,1", EFFDEPTH_GPU_LOCK_DIR=str(tmp_path / "locks"))
    result = run_snakemake(
        tmp_path,
        *SLURM_TARGETS,
        "--profile",
        str(REPO / "profiles" / "local-gpu"),
        "--cores",
        "2",
        "--resources",
        "gpu=2",
        "--set-threads",
        "extract=1",
        "intervention=1",
        "--configfile",
        str(config),
        env=env,
    )
    assert result.returncode == 0, result.output[-6000:]
    pinned = re.findall(r"gpu-shell: CUDA_VISIBLE_DEVICES=(\S+)", result.output)
    assert len(pinned) == 2 and set(pinned) <= {"0", "1"}, pinned  # extract and the layer skip, not the CPU jobs
    assert_tables_equal_local(tmp_path, finished_run)
