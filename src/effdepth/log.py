"""One logging helper for the package and every workflow script.

Every workflow script starts with ``setup_job(snakemake)``: from then on the job's log file (the
rule's ``log:``) receives a start line, every effdepth message, warnings of the libraries it uses,
the full traceback of an uncaught exception, and a finish line.  Long loops go through
``progress``, which reports counts and the time left at least every ``every_s`` seconds even while
one item takes longer than that.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_DATEFMT = "%Y-%m-%d %H:%M:%S"


def _formatter() -> logging.Formatter:
    return logging.Formatter(_FORMAT, _DATEFMT)


def get_logger(name: str = "effdepth", logfile: str | None = None) -> logging.Logger:
    """Logger ``effdepth.<name>`` writing INFO and above to stderr and, when given, to ``logfile``.

    logfile: a path (truncated) that then also receives warnings of other libraries (it is attached
    to the root logger).
    """
    root = logging.getLogger("effdepth")
    if not getattr(root, "_effdepth_configured", False):
        root.setLevel(logging.INFO)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_formatter())
        root.addHandler(handler)
        root._effdepth_configured = True  # type: ignore[attr-defined]
    if logfile:
        _attach_file(logfile)
    return logging.getLogger(name if name.startswith("effdepth") else f"effdepth.{name}")


def _attach_file(logfile: str) -> logging.FileHandler:
    """A file handler on the root logger: effdepth's records reach it by propagation, other
    libraries' warnings directly."""
    handler = logging.FileHandler(logfile, mode="w", encoding="utf-8")
    handler.setFormatter(_formatter())
    logging.getLogger().addHandler(handler)
    logging.captureWarnings(True)  # warnings.warn -> logger "py.warnings" -> root -> the file
    return handler


def _describe(smk: Any) -> str:
    rule = getattr(smk, "rule", None) or "job"
    wildcards = dict(getattr(smk, "wildcards", {}) or {})
    wild = ", ".join(f"{k}={v}" for k, v in wildcards.items() if not str(k).isdigit())
    return f"rule {rule}" + (f" ({wild})" if wild else "")


def setup_job(smk: Any) -> logging.Logger:
    """Start of every workflow script.

    smk: the ``snakemake`` object of a script (uses ``log``, ``threads``, ``rule``, ``wildcards``,
    ``output``).  Logs to the rule's first log file (and stderr), uses the job's threads in torch,
    writes a start line, and installs ``sys.excepthook`` and an exit handler so the log ends with
    either the traceback of the exception that ended the job or a "finished" line with the run time.
    Returns the ``effdepth`` logger.
    """
    logfile = str(smk.log[0]) if getattr(smk, "log", None) else None
    logger = get_logger("effdepth", logfile)
    torch = sys.modules.get("torch")  # only jobs that already use torch pay for it
    threads = max(1, int(getattr(smk, "threads", 1) or 1))
    if torch is not None:
        torch.set_num_threads(threads)
    what = _describe(smk)
    outputs = [str(o) for o in (getattr(smk, "output", None) or [])]
    logger.info("start %s, %d thread(s); outputs: %s", what, threads, ", ".join(outputs) or "none")
    state = {"start": time.monotonic(), "failed": False}
    previous = sys.excepthook

    def excepthook(kind, value, tb):
        state["failed"] = True
        logger.critical(
            "%s failed after %.1f s: %s: %s",
            what,
            time.monotonic() - state["start"],
            kind.__name__,
            value,
            exc_info=(kind, value, tb),
        )
        for handler in [*logger.handlers, *logging.getLogger().handlers]:
            handler.flush()
        if previous is not sys.__excepthook__:  # the default would print the traceback to stderr a second time
            previous(kind, value, tb)

    def finished():
        if not state["failed"]:
            logger.info("finished %s in %.1f s", what, time.monotonic() - state["start"])

    sys.excepthook = excepthook
    atexit.register(finished)
    return logger


def format_duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``42s``."""
    if seconds != seconds or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class _Progress:
    def __init__(self, total: int, what: str, logger: logging.Logger, sizes: Sequence[float] | None, unit: str):
        self.total, self.what, self.logger, self.unit = total, what, logger, unit
        self.sizes = [float(x) for x in sizes] if sizes is not None else None
        self.work_total = sum(self.sizes) if self.sizes is not None else float(total)
        self.done = 0
        self.work_done = 0.0
        self.start = self.last = time.monotonic()
        self.lock = threading.Lock()

    def report(self, final: bool = False) -> None:
        with self.lock:
            now = time.monotonic()
            elapsed = now - self.start
            rate = self.work_done / elapsed if elapsed > 0 else 0.0
            left = (self.work_total - self.work_done) / rate if rate > 0 else float("nan")
            extra = f", {self.work_done:.0f}/{self.work_total:.0f} {self.unit}" if self.sizes is not None else ""
            tail = (
                f"done in {format_duration(elapsed)}"
                if final
                else f"elapsed {format_duration(elapsed)}, about {format_duration(left)} left"
            )
            self.logger.info("%s: %d/%d%s, %s", self.what, self.done, self.total, extra, tail)
            self.last = now

    def advance(self, index: int) -> None:
        with self.lock:
            self.done += 1
            self.work_done += self.sizes[index] if self.sizes is not None and index < len(self.sizes) else 1.0


def progress(
    items: Iterable[T],
    total: int,
    what: str,
    logger: logging.Logger,
    every_s: float = 30.0,
    *,
    sizes: Sequence[float] | None = None,
    unit: str = "",
) -> Iterator[T]:
    """Yield ``items`` and log ``what: done/total, elapsed, about … left`` at least every ``every_s``
    seconds (a background timer keeps reporting while one item runs long), and once at the end.

    total: the number of items.  sizes: optional work per item (e.g. tokens per batch, with
    ``unit="tokens"``) so the time left accounts for unequal items; otherwise items count equally.
    The estimate is elapsed / work done × work left.
    """
    state = _Progress(total, what, logger, sizes, unit)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(max(every_s / 4, 0.05)):
            if time.monotonic() - state.last >= every_s:
                state.report()

    thread = threading.Thread(target=beat, name=f"progress {what}", daemon=True)
    thread.start()
    try:
        for i, item in enumerate(items):
            yield item
            state.advance(i)
            if time.monotonic() - state.last >= every_s:
                state.report()
        state.report(final=True)
    finally:
        stop.set()
        thread.join()
