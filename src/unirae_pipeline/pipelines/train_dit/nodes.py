"""train_dit: DiT-DH (stage 2) by flow matching on the cached, normalized latents, read memory-mapped from the shards
in `train_dit.num_workers` processes; no encoder in the loop."""

from __future__ import annotations

import json
from functools import partial

import pandas as pd

from ...data.latents import LatentRows, LatentStore, norm_stats
from ...diffusion import TransportConfig, shift_factor
from ...models import DiTConfig, build_dit
from ...models.serialization import Blob, check_fingerprints, to_blob
from ...params import build, run_key
from ...training.data import KeyedBatches
from ...training.fit import EMASnapshot, TrainerConfig, fit, steps_per_epoch
from ...training.modules import TrainModule, dit_objective
from ...training.optim import DiTTrainConfig


def train_dit(latents: LatentStore, latent_stats: Blob, dit: dict, train_dit: dict, diffusion: dict, trainer: dict,
              seed: int) -> tuple[Blob, Blob, pd.DataFrame]:
    """The EMA model, the EMA snapshot at `train_dit.guide_at` (the AutoGuidance guide) and the loss curve."""
    cfg = build(DiTConfig, dit, "dit")
    optim = build(DiTTrainConfig, train_dit, "train_dit")
    transport = build(TransportConfig, diffusion, "diffusion")
    trainer_cfg = build(TrainerConfig, trainer, "trainer")
    manifest = latents.manifest
    fingerprint = check_fingerprints(latents=manifest["fingerprint"],
                                     latent_stats=json.loads(latent_stats[1]["fingerprint"]))
    shape, num_classes = tuple(manifest["latent_shape"]), len(manifest["class_names"])
    rows = LatentRows(latents, "train")
    batches = KeyedBatches(rows, optim.batch_size, seed, optim.num_workers, views=latents.views("train"))
    optim = optim.in_steps(steps_per_epoch(batches.num_samples, optim.batch_size, trainer_cfg))
    model = build_dit(cfg, shape, num_classes, seed)
    shift = shift_factor(shape, transport.shift_base)
    stats = norm_stats(latent_stats[0], transport.latent_norm)
    module = TrainModule(model, optim, partial(dit_objective, transport=transport, shift=shift, stats=stats))
    snapshot = EMASnapshot(int(optim.guide_at))
    key = run_key(dit=dit, train_dit=train_dit, diffusion=diffusion, trainer=trainer, seed=seed, latents=manifest)
    curve = fit(module, batches, trainer_cfg, "train_dit", seed, callbacks=(snapshot,), run_key=key)
    meta = dict(config=cfg.to_dict(), latent_shape=list(shape), num_classes=num_classes, fingerprint=fingerprint,
                seed=seed)
    guide = build_dit(cfg, shape, num_classes, seed)
    guide.load_state_dict(snapshot.state)
    return to_blob(module.ema.module, **meta), to_blob(guide, **meta, step=int(optim.guide_at)), curve
