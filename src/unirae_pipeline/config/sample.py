"""The `sample` params group (the sample stage): how many samples, their batches and shards, the precision, the
sampler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..diffusion.sampler_config import SamplerConfig


@dataclass(frozen=True)
class SampleConfig:
    """The `sample` params group: how many samples and in which precision; `sampler` is the integrator (where they
    are computed is `runtime.device`)."""

    num_per_class: int
    batch_size: int
    shard_size: int            # images per resumable shard; a multiple of batch_size
    grid_per_class: int
    precision: Literal["fp32", "bf16"]
    untrained_baseline: bool   # also sample an untrained twin of the DiT: the floor of the metrics (small models)
    sampler: SamplerConfig

    def __post_init__(self) -> None:
        if min(self.num_per_class, self.batch_size, self.grid_per_class, self.shard_size) < 1:
            raise ValueError("sample.num_per_class, batch_size, shard_size and grid_per_class must be >= 1")
        if self.shard_size % self.batch_size:
            raise ValueError(f"sample.shard_size {self.shard_size} must be a multiple of sample.batch_size "
                             f"{self.batch_size} (batches are seeded by position)")
