"""The flow-matching objective of the DiT stages (a plain function of the model and a batch, for `TrainModule`)."""

from __future__ import annotations

import torch
from torch import nn

from ..data.normalization import normalize
from ..diffusion.transport import TransportConfig, draw_noise_and_time, flow_matching_loss


def dit_objective(model: nn.Module, batch: tuple[torch.Tensor, ...], *, transport: TransportConfig, shift: float,
                  stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Velocity loss with shifted training times on latents normalized here, on the training device, with
    `stats` (mean, var; see `data.normalization.norm_stats`): batches travel in the cache's dtype (bf16: half the
    bytes of float32). Noise, times and label dropout are drawn in the reference's order
    (`Transport.training_losses`)."""
    x, y = batch
    x = x.float()
    if stats is not None:
        x = normalize(x, *(s.to(x.device, non_blocking=True) for s in stats))
    noise, t = draw_noise_and_time(transport, x, shift)
    return flow_matching_loss(model, x, y, t, noise)
