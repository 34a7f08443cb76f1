"""This process's place in a distributed launch (torchrun, SLURM or Lightning's re-launch), from the environment:
valid before any process group exists, e.g. in stages that do not train."""

from __future__ import annotations

import os


def _env(names: tuple[str, ...], default: int) -> int:
    for name in names:
        if name in os.environ:
            return int(os.environ[name])
    return default


def global_rank() -> int:
    return _env(("RANK", "SLURM_PROCID", "LOCAL_RANK"), 0)


def local_rank() -> int:
    return _env(("LOCAL_RANK", "SLURM_LOCALID"), 0)


def world_size() -> int:
    return _env(("WORLD_SIZE", "SLURM_NTASKS"), 1)


def is_rank_zero() -> bool:
    return global_rank() == 0


def local_device():
    """This rank's GPU when there is one, else the CPU."""
    import torch

    return torch.device(f"cuda:{local_rank()}" if torch.cuda.is_available() else "cpu")


def wait_for_files(paths: list, what: str, poll_s: float = 1.0) -> None:
    """Rank zero's wait for the files the other ranks write (no process group needed: a shared filesystem)."""
    import logging
    import time

    log, reported = logging.getLogger(__name__), None
    while missing := [p for p in paths if not p.is_file()]:
        if len(missing) != reported:
            log.info("rank %d: waiting for %d %s of other ranks", global_rank(), reported := len(missing), what)
        time.sleep(poll_s)
