"""train_guide: the AutoGuidance guide as the reference makes it, a separate, smaller DiT-DH trained briefly by the
stage-2 recipe (its 1.13: DiT-DH-S, 14 epochs); or nothing, when the guide is train_dit's EMA snapshot."""

from __future__ import annotations

import logging
from typing import Any

from ...config.guide import GuideConfig
from ...data.latents import LatentStore
from ...diffusion.transport import TransportConfig
from ...models.serialization import Blob, to_blob
from ...runtime import RuntimeConfig
from ...training.dit import fit_dit
from ...training.fit import TrainerConfig
from ...training.optim import DiTTrainConfig

log = logging.getLogger(__name__)


def empty_guide() -> Blob:
    """What train_guide writes when it trains nothing: no weights (sample then uses train_dit's snapshot)."""
    return {}, {"source": '"snapshot"'}


def train_guide(latents: LatentStore, latent_stats: Blob, cfg: GuideConfig, transport: TransportConfig,
                trainer: TrainerConfig, seed: int, run: RuntimeConfig, **train_dit: Any) -> Blob:
    """`train_dit`: the main run's recipe less its duration and guide_at (see the pipeline), which the guide's
    `guide.duration` replaces."""
    if cfg.source == "snapshot":
        log.info("guide.source is snapshot: the AutoGuidance guide is train_dit's EMA weights at guide_at")
        return empty_guide()
    recipe = DiTTrainConfig(**train_dit, duration=cfg.duration, guide_at=cfg.duration)
    module, _, meta, _ = fit_dit(latents, latent_stats, cfg.dit, recipe, transport, trainer, run, seed, "train_guide",
                                 {"guide": cfg, **{f"train_dit.{k}": v for k, v in train_dit.items()}})
    return to_blob(module.ema.module, **meta, source="train", step=int(module.optim.steps))
