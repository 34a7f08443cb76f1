"""The `guide` params group (train_guide): where the AutoGuidance guide comes from, and the DiT-DH it trains."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..models.dit import DiTConfig


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
