"""train_guide: the AutoGuidance guide as the reference makes it, a separate, smaller DiT-DH trained briefly by the
stage-2 recipe (its 1.13: DiT-DH-S, 14 epochs); or nothing, when the guide is train_dit's EMA snapshot."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from ...data.latents import LatentStore
from ...diffusion.transport import TransportConfig
from ...models.dit import DiTConfig
from ...models.serialization import Blob, to_blob
from ...runtime import RuntimeConfig
from ...training.fit import TrainerConfig
from ...training.optim import DiTTrainConfig
from ..train_dit.nodes import fit_dit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GuideConfig:
    """The `guide` params group: `source: snapshot` uses train_dit's EMA weights at `train_dit.guide_at`; `train`
    trains the DiT-DH `dit` for `duration` (in `train_dit.unit`) with the rest of the `train_dit` recipe."""

    source: Literal["snapshot", "train"]
    duration: float
    dit: DiTConfig | None

    def __post_init__(self) -> None:
        if self.source not in ("snapshot", "train"):
            raise ValueError(f"guide.source must be 'snapshot' or 'train', got {self.source!r}")
        if self.source == "train":
            if not isinstance(self.duration, (int, float)) or self.duration <= 0:
                raise ValueError(f"guide.duration must be > 0 when guide.source is 'train', got {self.duration!r}")
            if self.dit is None:
                raise ValueError("guide.dit must hold the guide's DiT-DH sizes when guide.source is 'train' "
                                 "(guide=S, or guide=tiny for the embedded default)")


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
