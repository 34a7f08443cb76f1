"""Flow matching on a linear path, reference conventions: x_t = (1 - t) x + t eps, t = 1 is noise, target eps - x."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

# The reference draws training times on [0, 1 - 1/1000] and starts the sampling grid at the same bound.
T_MAX = 0.999

VelocityFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TransportConfig:
    """`shift_base` is n in s = sqrt(C*H*W / n); 4096 in the reference (SD3-style resolution shift). `latent_norm`:
    how the DiT sees the raw latents, `var` divides by sqrt(var + eps) only (the reference: its released DINOv2-B
    statistics hold no mean, and its DiT-DH was trained on them), `mean_var` also subtracts the mean; sampling
    undoes the same."""

    time_dist: Literal["uniform", "logit_normal"]
    shift_base: float
    logit_mean: float
    logit_std: float
    latent_norm: Literal["mean_var", "var"]

    def __post_init__(self) -> None:
        if self.shift_base <= 0 or self.logit_std <= 0:
            raise ValueError("diffusion.shift_base and diffusion.logit_std must be positive")


def shift_factor(latent_shape: tuple[int, ...], base: float) -> float:
    """Dimension-dependent shift s = sqrt(C*H*W / base); s > 1 moves time towards noise."""
    return math.sqrt(math.prod(latent_shape) / base)


def shift_time(t: torch.Tensor, s: float) -> torch.Tensor:
    return s * t / (1 + (s - 1) * t)


def sample_time(cfg: TransportConfig, n: int, s: float, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """Training times: base distribution on [0, T_MAX], then the shift."""
    if cfg.time_dist == "uniform":
        t0 = torch.rand(n, generator=generator, device=device) * T_MAX
    else:
        # Logit-normal truncated to [0, T_MAX] by inverse-CDF sampling, so no mass piles up at the bound.
        normal = torch.distributions.Normal(cfg.logit_mean, cfg.logit_std)
        hi = normal.cdf(torch.tensor(math.log(T_MAX / (1 - T_MAX))))
        u = torch.rand(n, generator=generator, device=device) * hi.to(device)
        t0 = torch.sigmoid(normal.icdf(u.clamp_min(1e-12)))
    return shift_time(t0, s)


def draw_noise_and_time(cfg: TransportConfig, x: torch.Tensor, s: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A training step's noise, then its times, from the global generators in the reference's order and devices
    (`Transport.sample`: noise like x, times on the CPU): a seed gives the reference's draws."""
    noise = torch.randn_like(x)
    return noise, sample_time(cfg, x.shape[0], s).to(x.device, non_blocking=True)


def flow_matching_loss(model: VelocityFn, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor,
                       noise: torch.Tensor) -> torch.Tensor:
    """Mean squared velocity error, averaged over (C, H, W) and the batch, no weighting."""
    tb = t.view(-1, *([1] * (x.dim() - 1)))
    x_t = (1 - tb) * x + tb * noise
    return (model(x_t, t, y) - (noise - x)).pow(2).mean()
