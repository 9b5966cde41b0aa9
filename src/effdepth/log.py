"""One logging helper for the package and every workflow script."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def get_logger(name: str = "effdepth", logfile: str | None = None) -> logging.Logger:
    """Logger writing to stderr and, when given, to ``logfile`` (a Snakemake ``log:``)."""
    root = logging.getLogger("effdepth")
    if not getattr(root, "_effdepth_configured", False):
        root.setLevel(logging.INFO)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, "%H:%M:%S"))
        root.addHandler(handler)
        root._effdepth_configured = True  # type: ignore[attr-defined]
    if logfile:
        handler = logging.FileHandler(logfile, mode="w")
        handler.setFormatter(logging.Formatter(_FORMAT, "%H:%M:%S"))
        root.addHandler(handler)
    return logging.getLogger(name if name.startswith("effdepth") else f"effdepth.{name}")


def setup_job(smk) -> logging.Logger:
    """Start of every workflow script: log to the rule's log file, use the job's threads in torch."""
    logger = get_logger("effdepth", smk.log[0] if smk.log else None)
    torch = sys.modules.get("torch")  # only jobs that already use torch pay for it
    if torch is not None:
        torch.set_num_threads(max(1, int(smk.threads)))
    return logger


def progress(items: Iterable[T], total: int, what: str, logger: logging.Logger, every_s: float = 10.0) -> Iterator[T]:
    """Yield ``items`` and log ``done/total`` with an ETA at most every ``every_s`` seconds."""
    start = last = time.monotonic()
    for i, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - last >= every_s or i == total:
            rate = i / max(now - start, 1e-9)
            eta = (total - i) / rate if rate > 0 else float("nan")
            logger.info("%s: %d/%d (%.1f/s, ETA %.0fs)", what, i, total, rate, eta)
            last = now
