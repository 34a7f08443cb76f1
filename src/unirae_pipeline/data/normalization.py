"""Latent normalization by the cached statistics: what the DiT trains on and the sampler undoes before decoding."""

from __future__ import annotations

import torch

# The reference's epsilon inside the square root: z_norm = (z - mean) / sqrt(var + 1e-5).
STATS_EPS = 1e-5


def normalize(z: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    return (z - mean) / torch.sqrt(var + STATS_EPS)


def denormalize(z: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    return z * torch.sqrt(var + STATS_EPS) + mean


def norm_stats(stats: dict[str, torch.Tensor], latent_norm: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, var) for `normalize`/`denormalize` under `diffusion.latent_norm`: `var` scales only (a zero mean, as
    the reference treats statistics without one), `mean_var` also centres; `TransportConfig` validates the value."""
    var = stats["var"]
    return (stats["mean"] if latent_norm == "mean_var" else torch.zeros_like(var)), var
