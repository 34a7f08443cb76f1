"""train_guide: the AutoGuidance guide as the reference makes it, a separate, smaller DiT-DH trained briefly by the
stage-2 recipe (its 1.13: DiT-DH-S, 14 epochs); or nothing, when the guide is train_dit's EMA snapshot."""

from __future__ import annotations

import logging
from typing import Any

from ...config.guide import RECIPE, GuideConfig
from ...data.latents import LatentStore
from ...diffusion.transport import TransportConfig
from ...models.dit import dit_file
from ...models.serialization import ModelFile
from ...runtime import RuntimeConfig
from ...training.dit import fit_dit
from ...training.fit import TrainerConfig

log = logging.getLogger(__name__)


def empty_guide() -> ModelFile:
    """What train_guide writes when it trains nothing: a file without weights (sample then uses train_dit's
    snapshot)."""
    return ModelFile("dit", {}, {"source": "snapshot"})


def train_guide(latents: LatentStore, latent_stats: ModelFile, cfg: GuideConfig, transport: TransportConfig,
                trainer: TrainerConfig, seed: int, run: RuntimeConfig, **train_dit: Any) -> ModelFile:
    """The separately trained guide, or (`guide.source: snapshot`) a file without weights. `train_dit`: the main
    run's values of `RECIPE` (the pipeline reads exactly those keys), which `GuideConfig.recipe` types."""
    if cfg.source == "snapshot":
        log.info("guide.source is snapshot: the AutoGuidance guide is train_dit's EMA weights at guide_at")
        return empty_guide()
    recipe = cfg.recipe(**train_dit)
    module, _, meta, _ = fit_dit(latents, latent_stats, cfg.dit, recipe, transport, trainer, run, seed, "train_guide",
                                 {"guide": cfg, **{f"train_dit.{k}": getattr(recipe, k) for k in RECIPE}})
    return dit_file(module.ema.module, **meta, source="train", step=int(module.optim.steps))
