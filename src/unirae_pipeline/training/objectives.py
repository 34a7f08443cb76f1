"""The flow-matching objectives of the DiT stages (plain functions of the model and a batch, for `TrainModule`): RAE's
velocity loss and RAEv2's two-head x-prediction loss."""

from __future__ import annotations

import torch
from torch import nn

from ..data.normalization import normalize
from ..diffusion.transport import (
    T_EPS,
    TransportConfig,
    draw_noise_and_time,
    draw_raev2,
    flow_matching_loss,
    x_prediction_losses,
)


def dit_objective(model: nn.Module, batch: tuple[torch.Tensor, ...], *, transport: TransportConfig, shift: float,
                  stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Velocity loss with shifted training times on latents normalized here, on the training device, with
    `stats` (mean, var; see `data.normalization.norm_stats`): batches travel in the cache's dtype (bf16: half the
    bytes of float32). Noise, times and label dropout are drawn in the reference's order
    (`Transport.training_losses`)."""
    x, y = batch
    x = _normalized(x, stats)
    noise, t = draw_noise_and_time(transport, x, shift)
    return flow_matching_loss(model, x, y, t, noise)


def raev2_objective(model: nn.Module, batch: tuple[torch.Tensor, ...], *, transport: TransportConfig, shift: float,
                    null_label: int, label_dropout: float,
                    stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """RAEv2's loss (`Transport.training_losses`) for its two-head DiT: labels dropped here, then noise and
    untruncated logit-normal times drawn in its order; both heads' x-predictions scored as velocities, the base head
    weighted 1. Returns the total (`loss`) and each head's term (the loss curve's `loss_full` and `loss_base`)."""
    x, y = batch
    x = _normalized(x, stats)
    y, noise, t = draw_raev2(x, y, null_label=null_label, label_dropout=label_dropout, shift=shift,
                             logit_mean=transport.logit_mean, logit_std=transport.logit_std)
    return x_prediction_losses(model, x, y, t, noise, t_eps=T_EPS, base_coeff=1.0)


def _normalized(x: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    x = x.float()
    return x if stats is None else normalize(x, *(s.to(x.device, non_blocking=True) for s in stats))
