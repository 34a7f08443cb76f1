"""This process's place in a distributed launch (torchrun, SLURM or Lightning's re-launch), from the environment:
valid before any process group exists, e.g. in stages that do not train."""

from __future__ import annotations

import os
from collections.abc import Callable


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


def wait_for_files(paths: list, what: str, poll_s: float = 1.0, stall_s: float = 3 * 3600) -> None:
    """Rank zero's wait for the files the other ranks write (no process group needed: a shared filesystem). A rank
    that died (SLURM keeps the others running unless told to kill them) would leave it waiting for ever: after
    `stall_s` without a new file it stops, naming what is missing."""
    import logging
    import time

    log, reported, since = logging.getLogger(__name__), None, time.monotonic()
    while missing := [p for p in paths if not p.is_file()]:
        if len(missing) != reported:
            log.info("rank %d: waiting for %d %s of other ranks", global_rank(), reported := len(missing), what)
            since = time.monotonic()
        elif time.monotonic() - since > stall_s:
            raise TimeoutError(f"rank {global_rank()}: no new {what} from the other ranks for {stall_s:.0f} s, "
                               f"{len(missing)} missing (first: {missing[0]}). Did a rank fail? Complete shards "
                               "are kept: rerun the stage")
        time.sleep(poll_s)


def sharded_job(paths: list, make: Callable[[int], None], what: str) -> tuple[int, int]:
    """The one resumable, rank-split job of the stages that write shards (cache_latents, sample): shard k is the file
    `paths[k]`, written by `make(k)` once complete. Each rank makes every world-size-th shard that is not on disk
    (the complete shards of an interrupted run are kept); rank zero then waits for the other ranks' files. Returns
    (kept, made) for this rank."""
    from .progress import progress

    world, rank = world_size(), global_rank()
    kept = made = 0
    for k in progress(range(rank, len(paths), world), what, unit="shard"):
        if paths[k].is_file():
            kept += 1
        else:
            make(k)
            made += 1
    if rank == 0 and world > 1:
        wait_for_files(paths, what)
    return kept, made
