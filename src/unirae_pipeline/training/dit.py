"""Training one DiT on the cached latents: the body that train_dit (the model and its guide snapshot) and train_guide
(a separately trained AutoGuidance guide) share. DiT-DH trains by RAE's velocity loss, RAEv2's DiT by its own."""

from __future__ import annotations

from functools import partial
from typing import Any

import lightning as L
import pandas as pd

from ..data.latent_rows import LatentRows
from ..data.latents import LatentStore
from ..data.normalization import norm_stats
from ..diffusion.transport import TransportConfig, shift_factor
from ..models.dit import AnyDiTConfig, build_dit
from ..models.dit_raev2 import RAEv2DiTConfig
from ..models.serialization import ModelFile, check_fingerprints
from ..runtime import RuntimeConfig
from ..runtime.scratch import RunKey
from .data import KeyedBatches
from .fit import EMASnapshot, TrainerConfig, fit, recipe_in_steps
from .modules import TrainModule
from .muon import muon_optimizer
from .objectives import dit_objective, raev2_objective
from .optim import DiTTrainConfig, build_optimizer


def fit_dit(latents: LatentStore, latent_stats: ModelFile, cfg: AnyDiTConfig, optim: DiTTrainConfig,
            transport: TransportConfig, trainer: TrainerConfig, run: RuntimeConfig, seed: int, name: str,
            params: dict[str, Any], snapshot: bool = False) -> tuple[TrainModule, pd.DataFrame, dict, dict | None]:
    """Train one DiT of architecture `cfg` by the recipe `optim` on the cached latents, resumable under the run key
    made of `params` (the params.yaml values that chose `cfg` and `optim`), the rest of the stage's params and the
    cache's manifest. Returns the module (its EMA is the model), the loss curve, the metadata of its model files and,
    with `snapshot`, the EMA state at `optim.guide_at`."""
    manifest = latents.manifest
    fingerprint = check_fingerprints(latents=manifest["fingerprint"],
                                     latent_stats=latent_stats.expect("stats").meta["fingerprint"])
    shape, num_classes = tuple(manifest["latent_shape"]), len(manifest["class_names"])
    rows, views = LatentRows(latents, "train"), latents.views("train")
    optim = recipe_in_steps(optim, len(views), trainer, "train_dit")  # the guide's recipe is train_dit's too
    batches = KeyedBatches(rows, optim.batch_size, seed, run.num_workers, views=views, key="train_dit.batch_size")
    model = build_dit(cfg, shape, num_classes, seed)
    stats = norm_stats(latent_stats.tensors, transport.latent_norm)
    shift = shift_factor(shape, transport.shift_base)
    objective = (partial(raev2_objective, null_label=num_classes, label_dropout=cfg.class_dropout_prob)
                 if isinstance(cfg, RAEv2DiTConfig) else dit_objective)
    module = TrainModule(model, optim, partial(objective, transport=transport, shift=shift, stats=stats),
                         muon_optimizer if optim.muon is not None else build_optimizer)
    callbacks: tuple[L.Callback, ...] = (EMASnapshot(int(optim.guide_at)),) if snapshot else ()
    curve = fit(module, batches, trainer, run, name, seed, callbacks=callbacks,
                key=RunKey({**params, "diffusion": transport, "trainer": trainer, "seed": seed}, {"latents": manifest}))
    meta = dict(latent_shape=list(shape), num_classes=num_classes, fingerprint=fingerprint,
                seed=seed, class_names=manifest["class_names"])  # label k is class_names[k]: sample's grid rows
    return module, curve, meta, callbacks[0].state if snapshot else None
