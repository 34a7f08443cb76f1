"""How a stage runs, never what it computes: the `runtime` settings and the code that only runs the work.

The rule: nothing in this package can change an output byte. Its modules show progress and heartbeats (`progress`),
place and coordinate ranks (`ranks`), name, claim and prune scratch folders (`scratch`) and check resume checkpoints
before they are used (`checkpoints`); a resumed run equals an unbroken one (tested), so none of them decides a result.
DVC follows none of them: `dvc_stages` stops at this package when it collects a stage's code, so editing it reruns
nothing and needs no hand-judged `dvc commit`. Code that could change a result (a seed, a numeric policy, what a batch
holds) does not belong here.

The `runtime` params group holds every setting that cannot change a result: data-loading processes, log and
checkpoint intervals, torch.compile, the sampling device, and where scratch space (resumable shards, checkpoints)
and logs go. `dvc_stages` tracks no key of it and no resume key contains it, so changing one reruns nothing and a
killed stage still resumes from its shards and checkpoints (DESIGN: results vs runtime).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

from .ranks import local_device


@dataclass(frozen=True)
class RuntimeConfig:
    num_workers: int                      # data-loading processes of every stage (image decoding, latent shards)
    log_every_n_steps: int                # training logs, the loss curves' resolution and the NaN check
    checkpoint_every_n_steps: int         # resume checkpoints of the training stages (0: none)
    compile: bool                         # torch.compile the trained model and the sampled DiT
    device: Literal["auto", "cpu", "cuda"]  # where `sample` runs (auto: cuda when available)
    scratch: str                          # resumable shards and checkpoints, under <scratch>/<kind>/<run key>
    logs: str                             # TensorBoard logs, one folder per stage

    def __post_init__(self) -> None:
        if self.num_workers < 0 or self.checkpoint_every_n_steps < 0 or self.log_every_n_steps < 1:
            raise ValueError("runtime.num_workers and runtime.checkpoint_every_n_steps must be >= 0 and "
                             f"runtime.log_every_n_steps >= 1: {asdict(self)}")
        if not isinstance(self.compile, bool):
            raise ValueError(f"runtime.compile must be true or false, got {self.compile!r}")

    def sampling_device(self) -> torch.device:
        """This rank's GPU (one per rank under torchrun/SLURM) when CUDA is asked for or `auto` finds it."""
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("runtime.device is 'cuda' but no CUDA device is available")
        cuda = self.device == "cuda" or (self.device == "auto" and torch.cuda.is_available())
        return local_device() if cuda else torch.device("cpu")

    def scratch_dir(self, kind: str) -> Path:
        """The scratch folder of one kind of work in progress: latents, samples or ckpts."""
        return in_repository(self.scratch) / kind

    @property
    def logs_dir(self) -> Path:
        return in_repository(self.logs)


def repository_root() -> Path:
    """The repository a run belongs to: DVC's `DVC_ROOT` (which `dvc queue` points at the real repository, not the
    temporary copy its worker runs in), else the current folder (a plain `kedro run`)."""
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def in_repository(path: str) -> Path:
    """A `runtime` path, relative ones taken from the repository (`repository_root`): a queued run's checkpoints and
    logs outlive its temporary copy, so that a retried task resumes and `tensorboard --logdir logs` finds it."""
    return Path(path) if Path(path).is_absolute() else repository_root() / path
