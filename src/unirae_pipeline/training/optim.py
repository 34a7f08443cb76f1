"""Optimizer, LR schedule and EMA shared by every training stage."""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn


@dataclass(frozen=True)
class OptimConfig:
    """One stage's optimization recipe (`train_dit`, `train_rae` in params.yaml)."""

    steps: int
    batch_size: int
    lr: float
    final_lr: float
    betas: tuple[float, float]
    weight_decay: float
    warmup_steps: int
    schedule: Literal["constant", "cosine", "linear"]
    ema_decay: float
    grad_clip: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))
        if self.steps < 1 or self.batch_size < 1 or self.warmup_steps < 0:
            raise ValueError(f"steps and batch_size must be >= 1 and warmup_steps >= 0: {asdict(self)}")
        if self.schedule not in ("constant", "cosine", "linear"):
            raise ValueError(f"schedule must be constant, cosine or linear, got {self.schedule!r}")
        if not 0 <= self.ema_decay < 1 or self.lr <= 0 or self.final_lr < 0 or self.grad_clip < 0:
            raise ValueError(f"need 0 <= ema_decay < 1, lr > 0, final_lr >= 0, grad_clip >= 0: {asdict(self)}")


@dataclass(frozen=True)
class DiTTrainConfig(OptimConfig):
    """`train_dit`: the recipe plus the step whose EMA weights become the AutoGuidance guide (`dit_guide`)."""

    guide_step: int

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.guide_step <= self.steps:
            raise ValueError(f"train_dit.guide_step must be in [1, steps={self.steps}], got {self.guide_step}")


def lr_factor(cfg: OptimConfig, step: int) -> float:
    """Multiplier of cfg.lr at an optimizer step: linear warm-up, then constant/cosine/linear to final_lr."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    floor = cfg.final_lr / cfg.lr
    if cfg.schedule == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "linear":
        return 1 + (floor - 1) * progress
    return 1.0


def build_optimizer(cfg: OptimConfig, params) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(cfg, step))


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
