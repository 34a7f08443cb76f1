"""This process's place in a distributed launch (torchrun, SLURM or Lightning's re-launch), from the environment:
valid before any process group exists, e.g. in stages that do not train."""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


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


@contextmanager
def claimed(folder: Path) -> Iterator[None]:
    """This rank's hold on a run folder for as long as it works in it: an exclusive lock on `<folder>/.rank-<r>`
    (released by the kernel when the process ends, so a killed run leaves nothing stale). A second process of the
    same rank on the same folder (the same stage and params started twice on one scratch space) is refused instead
    of racing the first one or deleting its files; the other ranks read the locks to see who is running."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".rank-{global_rank()}"
    with open(path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise RuntimeError(f"{folder} is in use by another run of this stage with the same params "
                               f"({f.read().strip() or 'a process'}, rank {global_rank()}): wait for it to finish, "
                               "or give one of them its own runtime.scratch") from None
        f.truncate(0)
        f.write(f"pid {os.getpid()} on {socket.gethostname()}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def is_running(folder: Path, rank: int) -> bool:
    """Whether rank `rank` holds its claim on `folder` now (see `claimed`)."""
    path = folder / f".rank-{rank}"
    if not path.is_file():
        return False
    with open(path, encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def in_use(folder: Path) -> bool:
    """Whether any rank holds a claim on `folder` or on a folder inside it."""
    return any(is_running(f.parent, int(f.name.removeprefix(".rank-"))) for f in folder.rglob(".rank-*"))


STARTUP_S = 300.0  # how long rank zero gives the other ranks to start (interpreter, torch and kedro imports)


def wait_for_files(paths: list, what: str, poll_s: float = 1.0, stall_s: float = 3 * 3600) -> None:
    """Rank zero's wait for the files the other ranks write (no process group needed: a shared filesystem), shard k
    being rank k % world's. It stops, naming what is missing, when a rank that owes files is not running (see
    `claimed`) `STARTUP_S` after the wait began (it never started: e.g. `sbatch --ntasks=4` without `srun` starts one
    process that believes it has three peers; or it died), and after `stall_s` without a new file."""
    import logging
    import time

    log, world, reported = logging.getLogger(__name__), world_size(), None
    began = since = time.monotonic()
    while missing := [k for k, p in enumerate(paths) if not p.is_file()]:
        now = time.monotonic()
        if len(missing) != reported:
            log.info("rank %d: waiting for %d %s of other ranks", global_rank(), reported := len(missing), what)
            since = now
        owing = sorted({k % world for k in missing})
        absent = [r for r in owing if not is_running(paths[0].parent, r)] if now - began > STARTUP_S else []
        if absent:
            raise RuntimeError(f"rank {global_rank()}: ranks {absent} of {world} are not running and {len(missing)} "
                               f"{what} are missing (first: {paths[missing[0]]}). The launch says {world} processes "
                               "(WORLD_SIZE or SLURM_NTASKS): start them all (torchrun, or srun inside sbatch), or run "
                               "one process. Complete shards are kept: rerun the stage")
        if now - since > stall_s:
            raise TimeoutError(f"rank {global_rank()}: no new {what} from the other ranks for {stall_s:.0f} s, "
                               f"{len(missing)} missing (first: {paths[missing[0]]}). Did a rank fail? Complete "
                               "shards are kept: rerun the stage")
        time.sleep(poll_s)


def sharded_job(paths: list, make: Callable[[int], None], what: str,
                intact: Callable[[Path], bool] | None = None) -> tuple[int, int]:
    """The one resumable, rank-split job of the stages that write shards (cache_latents, sample): shard k is the file
    `paths[k]`, written by `make(k)` once complete. Each rank claims the folder (`claimed`: the same run twice is
    refused) and makes every world-size-th shard that is not on disk (the complete shards of an interrupted run are
    kept, unless `intact` says a kept one is damaged: it is made again); rank zero then waits for the other ranks'
    files. A single process never waits. Returns (kept, made) for this rank."""
    from .progress import progress

    world, rank = world_size(), global_rank()
    kept = made = 0
    with claimed(paths[0].parent):
        for k in progress(range(rank, len(paths), world), what, unit="shard"):
            if paths[k].is_file() and (intact is None or intact(paths[k])):
                kept += 1
            else:
                make(k)
                made += 1
        if rank == 0 and world > 1:
            wait_for_files(paths, what)
    return kept, made
