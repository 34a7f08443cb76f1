"""Per-element latent statistics over a whole split, streamed (latent_stats alone)."""

from __future__ import annotations

import torch


class RunningMoments:
    """Exact streaming mean/variance per element (Chan et al. parallel merge, float64 accumulators)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def update(self, batch: torch.Tensor) -> None:
        x = batch.double()
        n = x.shape[0]
        mean = x.mean(0)
        m2 = ((x - mean) ** 2).sum(0)
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta ** 2 * (self.count * n / total)
        self.count = total

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, population variance) as float32, like the reference's `stat.pt`."""
        if self.mean is None:
            raise ValueError("no samples seen")
        return self.mean.float(), (self.m2 / self.count).float()
