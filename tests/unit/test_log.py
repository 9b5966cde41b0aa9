"""Job logs hold the job's story, failures included; progress reports while a step runs long."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from effdepth.log import progress

ROOT = Path(__file__).resolve().parents[2]


def _job(tmp_path: Path, body: str) -> tuple[subprocess.CompletedProcess, str]:
    log = tmp_path / "logs" / "job.log"
    log.parent.mkdir()
    script = textwrap.dedent(f"""
        import types, warnings
        from effdepth.log import setup_job
        snakemake = types.SimpleNamespace(log=[{str(log)!r}], threads=1, rule="extract",
                                          wildcards={{"model": "tiny", "task": "words"}}, output=["out.safetensors"])
        log = setup_job(snakemake)
    """) + textwrap.dedent(body)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    return done, log.read_text()


def test_failing_job_leaves_its_traceback_in_the_log(tmp_path):
    done, text = _job(
        tmp_path,
        """
        def inner():
            raise ValueError("prompt 3 has no answer")
        inner()
    """,
    )
    assert done.returncode != 0
    assert "start rule extract (model=tiny, task=words)" in text
    assert "failed after" in text and "ValueError: prompt 3 has no answer" in text
    assert "Traceback (most recent call last)" in text and "in inner" in text
    assert "finished" not in text
    assert done.stderr.count("Traceback (most recent call last)") == 1  # the console still shows it, once


def test_successful_job_logs_start_finish_and_library_warnings(tmp_path):
    done, text = _job(
        tmp_path,
        """
        warnings.warn("tokenizer has no pad token")
        import logging; logging.getLogger("transformers.modeling_utils").warning("weights not initialised")
        log.info("wrote cache")
    """,
    )
    assert done.returncode == 0, done.stderr
    lines = text.splitlines()
    assert "start rule extract" in lines[0] and "finished rule extract" in lines[-1]
    assert "wrote cache" in text and "tokenizer has no pad token" in text and "weights not initialised" in text


def test_progress_reports_while_an_item_runs_long(caplog):
    logger = logging.getLogger("effdepth.test_progress")

    def slow():
        yield 1
        time.sleep(0.9)  # one long item: the timer must report during it
        yield 2

    with caplog.at_level(logging.INFO, logger="effdepth"):
        start = time.monotonic()
        assert list(progress(slow(), 2, "batches", logger, every_s=0.2, sizes=[10, 30], unit="tokens")) == [1, 2]
        assert time.monotonic() - start < 5
    messages = [r.getMessage() for r in caplog.records if r.name == "effdepth.test_progress"]
    during = [m for m in messages if "left" in m]
    assert len(during) >= 2, messages
    assert any(m.startswith("batches: 1/2, 10/40 tokens") for m in during)
    assert messages[-1].startswith("batches: 2/2, 40/40 tokens, done in")


def test_progress_is_quiet_for_quick_loops(caplog):
    with caplog.at_level(logging.INFO, logger="effdepth"):
        assert list(progress(range(100), 100, "quick", logging.getLogger("effdepth.q"), every_s=30)) == list(range(100))
    messages = [r.getMessage() for r in caplog.records if r.name == "effdepth.q"]
    assert len(messages) == 1 and messages[0].startswith("quick: 100/100, done in")
