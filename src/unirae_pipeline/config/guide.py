"""The `guide` params group (train_guide): where the AutoGuidance guide comes from, and the DiT-DH it trains."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

from ..models.dit import DiTConfig
from ..training.optim import DiTTrainConfig
from .build import build

# The guide is trained by the main run's recipe but for its own duration: it reads every train_dit key except those
# two, so that running the main DiT longer (or snapshotting elsewhere) does not retrain the guide.
RECIPE = tuple(f.name for f in fields(DiTTrainConfig) if f.name not in ("duration", "guide_at"))


@dataclass(frozen=True)
class GuideConfig:
    """The `guide` params group: `source: snapshot` uses train_dit's EMA weights at `train_dit.guide_at`; `train`
    trains the DiT-DH `dit` for `duration` (in `train_dit.unit`) with the rest of the `train_dit` recipe."""

    source: Literal["snapshot", "train"]
    duration: float
    dit: DiTConfig | None

    def __post_init__(self) -> None:
        if self.source == "train":
            if not isinstance(self.duration, (int, float)) or self.duration <= 0:
                raise ValueError(f"guide.duration must be > 0 when guide.source is 'train', got {self.duration!r}")
            if self.dit is None:
                raise ValueError("guide.dit must hold the guide's DiT-DH sizes when guide.source is 'train' "
                                 "(guide=S, or guide=tiny for the embedded default)")

    def recipe(self, **train_dit: Any) -> DiTTrainConfig:
        """The guide's recipe: the `train_dit` values of `RECIPE`, with `guide.duration` as its duration (and as its
        snapshot time, which a guide does not use), built and checked as the `train_dit` group is."""
        if set(train_dit) != set(RECIPE):
            raise ValueError(f"the guide's recipe takes the train_dit keys {sorted(RECIPE)}, got {sorted(train_dit)}")
        return build(DiTTrainConfig, {**train_dit, "duration": self.duration, "guide_at": self.duration}, "train_dit")
