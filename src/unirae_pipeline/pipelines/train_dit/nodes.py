"""train_dit: the DiT (stage 2: DiT-DH, or RAEv2's) by flow matching on the cached, normalized latents, read
memory-mapped from the shards in `runtime.num_workers` processes; no encoder in the loop."""

from __future__ import annotations

import pandas as pd

from ...config.build import Tagged
from ...data.latents import LatentStore
from ...diffusion.transport import TransportConfig
from ...models.dit import build_dit, dit_file
from ...models.serialization import ModelFile, load_strict
from ...runtime import RuntimeConfig
from ...training.dit import fit_dit
from ...training.fit import TrainerConfig
from ...training.optim import DiTTrainConfig


def train_dit(latents: LatentStore, latent_stats: ModelFile, cfg: Tagged, optim: DiTTrainConfig,
              transport: TransportConfig, trainer: TrainerConfig, seed: int,
              run: RuntimeConfig) -> tuple[ModelFile, ModelFile, pd.DataFrame]:
    """`cfg` is the `dit` group: DiT-DH's `DiTConfig` or RAEv2's `RAEv2DiTConfig` (see `config.build.Tagged`).
    The EMA model, the EMA snapshot at `train_dit.guide_at` (the AutoGuidance guide unless train_guide trains a
    separate one) and the loss curve."""
    module, curve, meta, state = fit_dit(latents, latent_stats, cfg, optim, transport, trainer, run, seed,
                                         "train_dit", dict(dit=cfg, train_dit=optim), snapshot=True)
    snapshot = build_dit(cfg, tuple(meta["latent_shape"]), meta["num_classes"], seed)
    load_strict(snapshot, state, "train_dit's EMA snapshot")
    return dit_file(module.ema.module, **meta), dit_file(snapshot, **meta, step=int(module.optim.guide_at)), curve
