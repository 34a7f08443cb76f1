"""train_dit: DiT-DH (stage 2) by flow matching on the cached, normalized latents, read memory-mapped from the shards
in `runtime.num_workers` processes; no encoder in the loop."""

from __future__ import annotations

import json
from functools import partial

import lightning as L
import pandas as pd

from ...data.latents import LatentRows, LatentStore, norm_stats
from ...diffusion.transport import TransportConfig, shift_factor
from ...models.dit import DiTConfig, build_dit
from ...models.serialization import Blob, check_fingerprints, to_blob
from ...params import build
from ...runtime import RuntimeConfig
from ...scratch import RunKey
from ...training.data import KeyedBatches
from ...training.fit import EMASnapshot, TrainerConfig, fit, steps_per_epoch
from ...training.modules import TrainModule
from ...training.objectives import dit_objective
from ...training.optim import DiTTrainConfig


def fit_dit(latents: LatentStore, latent_stats: Blob, cfg: DiTConfig, recipe: dict, diffusion: dict, trainer: dict,
            runtime: dict, seed: int, name: str, params: dict, snapshot: bool = False,
            ) -> tuple[TrainModule, pd.DataFrame, dict, dict | None]:
    """Train one DiT-DH of architecture `cfg` by the `recipe` (a `train_dit` group) on the cached latents, resumable
    under the run key made of `params` (the params.yaml values that chose `cfg` and `recipe`), the rest of the stage's
    params and the cache's manifest. Returns the module (its EMA is the model), the loss
    curve, the metadata of its model files and, with `snapshot`, the EMA state at `recipe.guide_at`."""
    optim = build(DiTTrainConfig, recipe, "train_dit")
    transport = build(TransportConfig, diffusion, "diffusion")
    trainer_cfg, run = build(TrainerConfig, trainer, "trainer"), build(RuntimeConfig, runtime, "runtime")
    manifest = latents.manifest
    fingerprint = check_fingerprints(latents=manifest["fingerprint"],
                                     latent_stats=json.loads(latent_stats[1]["fingerprint"]))
    shape, num_classes = tuple(manifest["latent_shape"]), len(manifest["class_names"])
    batches = KeyedBatches(LatentRows(latents, "train"), optim.batch_size, seed, run.num_workers,
                           views=latents.views("train"))
    optim = optim.in_steps(steps_per_epoch(batches.num_samples, optim.batch_size, trainer_cfg))
    model = build_dit(cfg, shape, num_classes, seed)
    stats = norm_stats(latent_stats[0], transport.latent_norm)
    module = TrainModule(model, optim, partial(dit_objective, transport=transport,
                                               shift=shift_factor(shape, transport.shift_base), stats=stats))
    callbacks: tuple[L.Callback, ...] = (EMASnapshot(int(optim.guide_at)),) if snapshot else ()
    curve = fit(module, batches, trainer_cfg, run, name, seed, callbacks=callbacks,
                key=RunKey({**params, "diffusion": diffusion, "trainer": trainer, "seed": seed}, {"latents": manifest}))
    meta = dict(config=cfg.to_dict(), latent_shape=list(shape), num_classes=num_classes, fingerprint=fingerprint,
                seed=seed)
    return module, curve, meta, callbacks[0].state if snapshot else None


def train_dit(latents: LatentStore, latent_stats: Blob, dit: dict, train_dit: dict, diffusion: dict, trainer: dict,
              seed: int, runtime: dict) -> tuple[Blob, Blob, pd.DataFrame]:
    """The EMA model, the EMA snapshot at `train_dit.guide_at` (the AutoGuidance guide unless train_guide trains a
    separate one) and the loss curve."""
    cfg = build(DiTConfig, dit, "dit")
    module, curve, meta, state = fit_dit(latents, latent_stats, cfg, train_dit, diffusion, trainer, runtime, seed,
                                         "train_dit", dict(dit=dit, train_dit=train_dit), snapshot=True)
    snapshot = build_dit(cfg, tuple(meta["latent_shape"]), meta["num_classes"], seed)
    snapshot.load_state_dict(state)
    return to_blob(module.ema.module, **meta), to_blob(snapshot, **meta, step=int(module.optim.guide_at)), curve
