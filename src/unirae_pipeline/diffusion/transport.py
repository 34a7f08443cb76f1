"""Flow matching on a linear path, reference conventions: x_t = (1 - t) x + t eps, t = 1 is noise, target eps - x."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

# The reference draws training times on [0, 1 - 1/1000] and starts the sampling grid at the same bound.
T_MAX = 0.999
# RAEv2's floor of t where an x-prediction becomes a velocity (`t_eps`, its config default): (x_t - x) / max(t, T_EPS).
T_EPS = 0.05

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


def x_to_velocity(x_t: torch.Tensor, x_hat: torch.Tensor, t: torch.Tensor, t_eps: float) -> torch.Tensor:
    """A prediction of the clean latent as a velocity on the linear path, (x_t - x_hat) / max(t, t_eps) (RAEv2's
    `convert_model_pred`): the clamp keeps the division finite at t -> 0, where x-prediction is well posed."""
    return (x_t - x_hat) / t.view(-1, *([1] * (x_t.dim() - 1))).clamp_min(t_eps)


def draw_raev2(x: torch.Tensor, y: torch.Tensor, *, null_label: int, label_dropout: float, shift: float,
               logit_mean: float = 0.0, logit_std: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A training step's labels (dropped to the null class with `label_dropout`), noise and times, from the global
    generators in RAEv2's order and devices (`Transport.training_losses`: label mask, noise like x, then an
    untruncated logit-normal time on the CPU, shifted): a seed gives RAEv2's draws."""
    drop = torch.rand(y.shape[0], device=y.device) < label_dropout
    noise = torch.randn_like(x)
    t = shift_time(torch.sigmoid(torch.randn(x.shape[0]) * logit_std + logit_mean), shift)
    return torch.where(drop, torch.full_like(y, null_label), y), noise, t.to(x)


def x_prediction_losses(model: Callable[..., tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor, y: torch.Tensor,
                        t: torch.Tensor, noise: torch.Tensor, *, t_eps: float,
                        base_coeff: float) -> dict[str, torch.Tensor]:
    """RAEv2's objective for a model that predicts the clean latent with two heads `(full, base)`: each prediction
    converted to a velocity (`x_to_velocity`) and scored by its squared error against the path's velocity, the base
    head's weighted by `base_coeff`, summed elementwise before the mean. Returns the total and both heads' means."""
    tb = t.view(-1, *([1] * (x.dim() - 1)))
    x_t = (1 - tb) * x + tb * noise
    target = x_to_velocity(x_t, x, t, t_eps)  # = noise - x wherever t >= t_eps
    full, base = model(x_t, t, y)
    full_err = (x_to_velocity(x_t, full, t, t_eps) - target).pow(2)
    base_err = (x_to_velocity(x_t, base, t, t_eps) - target).pow(2)
    return {"loss": (full_err + base_coeff * base_err).mean(), "loss_full": full_err.mean(),
            "loss_base": base_err.mean()}
