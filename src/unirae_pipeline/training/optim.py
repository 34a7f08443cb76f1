"""Optimizer, LR schedule and EMA shared by every training stage."""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, replace
from typing import Literal

import torch
from torch import nn

MIN_BATCHES_PER_EPOCH = 4  # `fit_batch` halves a batch until an epoch holds this many


@dataclass(frozen=True)
class OptimConfig:
    """One stage's optimization recipe (`train_dit`, `train_rae`, `fid.train` in params.yaml).

    `duration`, `warmup`, `decay_start` and `decay_end` count `unit`s: optimizer steps, or epochs of the training
    set (converted with `in_steps`). The LR warms up linearly, holds, then decays (cosine or linear) from
    `decay_start` (null: the end of warm-up) to `final_lr` at `decay_end` (null: the end) and stays there; the
    reference stage-2 recipe is constant for 40 epochs, linear to 2e-5 at epoch 800. `decay_end` may lie past
    `duration`: a run stopped early on a longer schedule, as the paper's 80-epoch snapshot of its 800-epoch run.
    `fit_batch`: a training set too small for `batch_size` gets a smaller batch instead of a refusal (`fitted`).
    """

    unit: Literal["steps", "epochs"]
    duration: float
    batch_size: int
    lr: float
    final_lr: float
    betas: tuple[float, float]
    weight_decay: float
    warmup: float
    schedule: Literal["constant", "cosine", "linear"]
    decay_start: float | None
    decay_end: float | None
    ema_decay: float
    grad_clip: float
    fit_batch: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))
        if self.duration <= 0 or self.batch_size < 1 or self.warmup < 0:
            raise ValueError(f"duration and batch_size must be positive and warmup >= 0: {asdict(self)}")
        if not (self.warmup <= self.start <= self.end and self.warmup <= self.duration):
            raise ValueError(f"need warmup <= decay_start <= decay_end and warmup <= duration: {asdict(self)}")
        if not all(0 <= beta < 1 for beta in self.betas):
            raise ValueError(f"betas must be in [0, 1) (AdamW's moment decays), got {list(self.betas)}")
        if not 0 <= self.ema_decay < 1 or self.lr <= 0 or self.final_lr < 0 or self.grad_clip < 0:
            raise ValueError(f"need 0 <= ema_decay < 1, lr > 0, final_lr >= 0, grad_clip >= 0: {asdict(self)}")

    # fields counted in `unit`, converted together by `in_steps`; POSITIVE ones are at least one step
    TIMES = ("duration", "warmup", "decay_start", "decay_end")
    POSITIVE = ("duration",)

    @property
    def start(self) -> float:
        return self.warmup if self.decay_start is None else self.decay_start

    @property
    def end(self) -> float:
        return self.duration if self.decay_end is None else self.decay_end

    @property
    def steps(self) -> int:
        if self.unit != "steps":
            raise ValueError("convert the recipe with in_steps() first")
        return int(self.duration)

    def fitted(self, num_samples: int, replicas: int) -> OptimConfig:
        """The recipe for a training set of `num_samples` items, each optimizer step taking `replicas` batches
        (accumulation x devices x nodes). With `fit_batch`, a batch that leaves fewer than MIN_BATCHES_PER_EPOCH
        steps per epoch is halved until it leaves that many (down to 1), the LRs scaled by the square root of the
        ratio (the rule for Adam) and step-counted times by its inverse: the run sees as many images, and a set of
        a few dozen images trains as well as the recipe's set rather than taking one noisy step per epoch."""
        batch = self.batch_size
        while self.fit_batch and batch > 1 and num_samples // (batch * replicas) < MIN_BATCHES_PER_EPOCH:
            batch //= 2
        if batch == self.batch_size:
            return self
        ratio = self.batch_size / batch
        times = {} if self.unit == "epochs" else {
            k: None if getattr(self, k) is None else getattr(self, k) * ratio for k in self.TIMES}
        return replace(self, batch_size=batch, lr=self.lr / math.sqrt(ratio),
                       final_lr=self.final_lr / math.sqrt(ratio), **times)

    def in_steps(self, steps_per_epoch: int) -> OptimConfig:
        """The same recipe counted in optimizer steps."""
        if self.unit == "steps":
            return self
        if steps_per_epoch < 1:
            raise ValueError("an epoch holds no optimizer step: the data set is smaller than one global batch")
        # truncated, as the reference converts epochs to steps (`int(epochs * steps_per_epoch)`)
        times = {k: None if getattr(self, k) is None else int(getattr(self, k) * steps_per_epoch)
                 for k in self.TIMES}
        times.update({k: max(1, times[k]) for k in self.POSITIVE})
        return replace(self, unit="steps", **times)


@dataclass(frozen=True)
class MuonConfig:
    """`train_dit.muon`: Muon (RAEv2's `gmuon`) for the matrices with this momentum (Nesterov's or plain), the
    Newton-Schulz iteration in `precision` (RAEv2: fp16); null trains every parameter with AdamW."""

    momentum: float
    nesterov: bool
    precision: Literal["fp16", "fp32"]

    def __post_init__(self) -> None:
        if not 0 <= self.momentum < 1:
            raise ValueError(f"train_dit.muon.momentum must be in [0, 1), got {self.momentum}")


@dataclass(frozen=True)
class DiTTrainConfig(OptimConfig):
    """`train_dit`: the recipe, when (in `unit`) the EMA weights are kept as the AutoGuidance guide, whether the
    DiT's sin-cos position table and Fourier frequencies train (`train_tables`: the reference's GPU trainer calls
    `requires_grad_(True)` on the whole model, so they do, with the weight decay and EMA of every weight), and
    `muon`: null for AdamW on every parameter, or RAEv2's Muon for the matrices (AdamW with `betas` for the rest)."""

    guide_at: float
    train_tables: bool
    muon: MuonConfig | None

    TIMES = (*OptimConfig.TIMES, "guide_at")
    POSITIVE = (*OptimConfig.POSITIVE, "guide_at")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.guide_at <= self.duration:
            raise ValueError(f"train_dit.guide_at must be in (0, duration={self.duration}], got {self.guide_at}")


def lr_factor(cfg: OptimConfig, step: int) -> float:
    """Multiplier of cfg.lr at an optimizer step (cfg in steps): warm-up, hold, decay to final_lr, hold."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    if cfg.schedule == "constant":
        return 1.0
    progress = min(1.0, max(0.0, (step - cfg.start) / max(1, cfg.end - cfg.start)))
    floor = cfg.final_lr / cfg.lr
    if cfg.schedule == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1 + (floor - 1) * progress


def build_optimizer(cfg: OptimConfig, params, delayed=(), delay: int = 0,
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with the recipe's per-step schedule (a recipe with `muon` builds `muon.muon_optimizer` instead).
    `delayed` parameters (the stage-1 discriminator) get the same schedule shifted to start at step `delay`, LR 0
    before: the reference steps their scheduler only once they train."""
    groups = [{"params": list(params)}]
    factors = [lambda step: lr_factor(cfg, step)]
    delayed = list(delayed)
    if delayed:
        groups.append({"params": delayed})
        factors.append(lambda step: lr_factor(cfg, step - delay) if step >= delay else 0.0)
    on_gpu = all(p.is_cuda for group in groups for p in group["params"])
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                            **({"fused": True} if on_gpu else {"foreach": True}))  # one kernel for all params
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factors)


class EMA(nn.Module):
    """Exponential moving average of a model's floating-point state, updated with one fused foreach op."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema = [p for p in self.module.parameters()]
        src = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema, src, 1 - self.decay)
