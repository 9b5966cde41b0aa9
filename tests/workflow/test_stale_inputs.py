"""What the workflow does with inputs that changed or broke behind its back: a task file edited with
its old modification time, a damaged cache (the message's own command rebuilds it), a read-only
results/ directory.  Each test runs its own small experiment (one tiny model, one task)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest

from .conftest import JOB_BLOCKS, REPO, SNAKEMAKE, planned_jobs, snakemake, write_config

pytestmark = pytest.mark.workflow


def small_config(models: Path, task_file: Path) -> dict:
    return {
        "models": {"tiny-qwen2": {"path": str(models / "tiny-qwen2"), "family": "tiny", "size_b": 0.001}},
        "tasks": {
            "words": {
                "source": "file",
                "path": str(task_file),
                "question_field": "question",
                "answer_field": "answer",
                "n_prompts": 4,
            }
        },
        "analyses": {"relative_contribution": {}, "logit_lens": {"top_k": 5}},
        "effective_depth": {"bootstrap": 10},
    }


@pytest.fixture
def experiment(tmp_path, tiny_models) -> tuple[Path, Path, Path]:
    """(working directory, its config file, its task file)."""
    task = tmp_path / "t.jsonl"
    shutil.copy(REPO / "tests" / "data" / "tiny_task.jsonl", task)
    return tmp_path, write_config(tmp_path, small_config(tiny_models, task)), task


@pytest.mark.slow
def test_a_task_file_edited_with_its_old_mtime_rebuilds_its_prompts(experiment):
    workdir, config, task = experiment
    prompts = "resources/prompts/words.parquet"
    snakemake(workdir, prompts, "--cores", "1", "--configfile", str(config))
    assert "Nothing to be done" in snakemake(workdir, prompts, "-n", "--configfile", str(config)).stdout

    stat = task.stat()
    lines = task.read_text().splitlines()
    lines[0] = lines[0].replace(lines[0].split('"answer": ')[1], '" zzz zzz zzz"}')
    task.write_text("\n".join(lines) + "\n")
    os.utime(task, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # what cp -p, rsync -a, tar x do

    assert [rule for rule, _ in planned_jobs(snakemake(workdir, prompts, "-n", "--configfile", str(config)).stdout)] == [
        "prepare_prompts"
    ]
    snakemake(workdir, prompts, "--cores", "1", "--configfile", str(config))
    assert pl.read_parquet(workdir / prompts)["answer"][0] == " zzz zzz zzz"


@pytest.mark.slow
def test_the_damaged_cache_message_gives_a_command_that_rebuilds_it(experiment):
    workdir, config, _ = experiment
    table = "results/tables/effective_depth.parquet"
    forward = workdir / "results/tables/tiny-qwen2/words/forward.parquet"
    snakemake(workdir, table, "--cores", "2", "--configfile", str(config))
    clean = pl.read_parquet(forward)

    cache = workdir / "results/cache/tiny-qwen2/words/stats.safetensors"
    data = bytearray(cache.read_bytes())
    data[8 + int.from_bytes(data[:8], "little") + 339] ^= 0x40  # one bit of the first tensor
    cache.write_bytes(bytes(data))
    rebuild_table = [str(forward.relative_to(workdir)), "--forcerun", "forward_tables", "--cores", "1"]
    failed = snakemake(workdir, *rebuild_table, "--configfile", str(config), check=False)
    assert failed.returncode != 0
    message = next(line for line in failed.stderr.splitlines() if "CacheError" in line)
    command = re.search(r"`(snakemake [^`]*)`", message).group(1).split()  # the first command it names
    assert command == ["snakemake", "--forcerun", "results/cache/tiny-qwen2/words/stats.safetensors"]

    snakemake(workdir, table, *command[1:], "--cores", "1", "--configfile", str(config))
    assert pl.read_parquet(forward).equals(clean)
    assert "Nothing to be done" in snakemake(workdir, table, "-n", "--configfile", str(config)).stdout


def _in_read_only_mount(directory: Path, command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run ``command`` with ``directory`` read-only.  As an ordinary user the directory's write bits
    are removed (restored afterwards); as root, whom permission bits do not stop, it is bind-mounted
    read-only in a private mount namespace (``unshare --mount``).  Where root cannot make that mount
    (no util-linux, no CAP_SYS_ADMIN) the test fails, naming why, unless
    EFFDEPTH_SKIP_READONLY_MOUNT=1 says to skip it (as EFFDEPTH_SKIP_SLURM does for SLURM)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "src")}
    if os.geteuid() != 0:
        mode = directory.stat().st_mode
        directory.chmod(0o555)
        try:
            return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
        finally:
            directory.chmod(mode)
    script = f'mount --bind "{directory}" "{directory}" && mount -o remount,ro,bind "{directory}" && exec "$@"'
    probe = (
        subprocess.run(["unshare", "--mount", "sh", "-c", script + ' && ! touch "$0/probe"', str(directory)], capture_output=True)
        if shutil.which("unshare")
        else None
    )
    if probe is None or probe.returncode != 0:
        why = "unshare is not installed" if probe is None else probe.stderr.decode()[-200:]
        if os.environ.get("EFFDEPTH_SKIP_READONLY_MOUNT") == "1":
            pytest.skip(f"EFFDEPTH_SKIP_READONLY_MOUNT=1 and root cannot make a read-only mount here: {why}")
        pytest.fail(f"root cannot make a read-only mount here ({why}); set EFFDEPTH_SKIP_READONLY_MOUNT=1 to skip this test")
    return subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, "sh", *command], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


def test_a_read_only_results_directory_allows_a_dry_run_and_stops_a_real_run(experiment):
    workdir, config, _ = experiment
    results = workdir / "results"
    results.mkdir()
    base = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir)]
    target = "results/tables/effective_depth.parquet"

    dry = _in_read_only_mount(results, [*base, target, "-n", "--configfile", str(config), *JOB_BLOCKS], workdir)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert {"prepare_prompts", "extract", "effective_depth"} <= {rule for rule, _ in planned_jobs(dry.stdout)}
    assert "results/ is not writable" in dry.stderr + dry.stdout

    real = _in_read_only_mount(results, [*base, target, "--cores", "1", "--configfile", str(config)], workdir)
    assert real.returncode != 0
    assert "results/ is not writable" in real.stderr and "OSError" not in real.stderr
    assert not (workdir / "logs").exists() and list(results.iterdir()) == []  # no job started
