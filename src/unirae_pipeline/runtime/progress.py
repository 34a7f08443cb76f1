"""Progress bars, heartbeats and verbosity, set from the environment rather than params (showing them must not
invalidate a stage): `UNIRAE_PROGRESS=1|0` forces the bars on or off (default: on when stderr is a terminal); without
bars, a long loop logs a heartbeat line every `UNIRAE_HEARTBEAT_S` seconds (default 60), so that a run logged to a
file is never silent; `UNIRAE_LOG_LEVEL=DEBUG|INFO|WARNING` sets the level (default INFO: the pipeline's one-line
summaries; DEBUG adds Kedro's per-dataset lines, Lightning's messages and per-file messages; WARNING: problems only)."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
log = logging.getLogger(__name__)


def show_progress() -> bool:
    forced = os.environ.get("UNIRAE_PROGRESS")
    return sys.stderr.isatty() if forced is None else forced not in ("0", "", "false")


def heartbeat_s() -> float:
    value = os.environ.get("UNIRAE_HEARTBEAT_S", "60")
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"UNIRAE_HEARTBEAT_S must be a number of seconds, got {value!r}") from None
    return max(seconds, 0.0)


class Progress:
    """`total` units of work: a bar on stderr when progress is shown, else a log line at most every heartbeat
    period (done, the last period's rate, the time left at that rate)."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", initial: int = 0) -> None:
        self.desc, self.unit, self.total, self.done, self.initial = desc, unit, total, initial, initial
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                        leave=False) if show_progress() else None
        self.last, self.last_done = time.perf_counter(), initial
        self.period = heartbeat_s()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter()
        if now - self.last >= self.period:
            # the rate of the last period, not since the start: a machine that slows down (another job, throttling)
            # would otherwise show the early rate's "time left" for a long time
            rate = (self.done - self.last_done) / max(now - self.last, 1e-9)
            self.last, self.last_done = now, self.done
            left = f", about {(self.total - self.done) / rate:.0f} s left" if self.total and rate > 0 else ""
            of = f"/{self.total}" if self.total else ""
            log.info("%s: %d%s %s, %.2f %s/s%s", self.desc, self.done, of, self.unit, rate, self.unit, left)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """`items`, counted by a `Progress`."""
    counter = Progress(total, desc, unit)
    try:
        for item in items:
            yield item
            counter.update()
    finally:
        counter.close()


def apply_log_level() -> None:
    """The pipeline's loggers at UNIRAE_LOG_LEVEL (after Kedro has read conf/logging.yml)."""
    name = os.environ.get("UNIRAE_LOG_LEVEL", "").upper()
    if not name:
        return
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        raise ValueError(f"UNIRAE_LOG_LEVEL must be DEBUG, INFO or WARNING, got {name!r}")
    logging.getLogger("unirae_pipeline").setLevel(level)
    if level <= logging.DEBUG:  # Kedro's per-dataset lines and Lightning's messages too
        for lib in ("kedro", "lightning", "lightning.pytorch", "lightning_fabric"):
            logging.getLogger(lib).setLevel(logging.INFO)
