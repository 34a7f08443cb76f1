"""Progress bars and verbosity, set from the environment rather than params (showing them must not invalidate a
stage): `UNIRAE_PROGRESS=1|0` forces the bars on or off (default: on when stderr is a terminal), and
`UNIRAE_LOG_LEVEL=DEBUG|INFO|WARNING` sets the pipeline's log level (default INFO: one-line summaries; DEBUG also
lets Lightning and the per-file messages through)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def show_progress() -> bool:
    forced = os.environ.get("UNIRAE_PROGRESS")
    return sys.stderr.isatty() if forced is None else forced not in ("0", "", "false")


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """`items`, with a bar on stderr when progress is shown."""
    return iter(tqdm(items, desc=desc, total=total, unit=unit, disable=not show_progress(), file=sys.stderr,
                     dynamic_ncols=True, leave=False))


def apply_log_level() -> None:
    """The pipeline's loggers at UNIRAE_LOG_LEVEL (after Kedro has read conf/logging.yml)."""
    name = os.environ.get("UNIRAE_LOG_LEVEL", "").upper()
    if not name:
        return
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        raise ValueError(f"UNIRAE_LOG_LEVEL must be DEBUG, INFO or WARNING, got {name!r}")
    logging.getLogger("unirae_pipeline").setLevel(level)
    if level <= logging.DEBUG:
        for lib in ("lightning", "lightning.pytorch", "lightning_fabric"):
            logging.getLogger(lib).setLevel(logging.INFO)
