"""The `fid` params group: the feature network of every Fréchet distance and the reference statistics (fid_reference,
and the stages that score against them read it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import timm

from ..evaluation.classifier import ClassifierConfig
from ..training.optim import OptimConfig


@dataclass(frozen=True)
class FIDConfig:
    """The `fid` params group: which feature network, where its weights are, and the reference statistics."""

    extractor: Literal["classifier", "inception", "dinov2"]
    inception_weights: str | None   # torch-fidelity's pt_inception-2015-12-05 file, for extractor: inception
    dinov2_weights: str | None      # DINOv2 checkpoint (torch-hub dinov2_vitl14_pretrain.pth layout), for dinov2
    dinov2_model: str               # its timm architecture: vit_large_patch14_dinov2 for FD-DINOv2
    reference_npz: str | None       # e.g. ADM's VIRTUAL_imagenet256_labeled.npz (its mu/sigma); else computed
    classifier: ClassifierConfig
    train: OptimConfig

    def __post_init__(self) -> None:
        if not timm.is_model(self.dinov2_model):
            raise ValueError(f"fid.dinov2_model {self.dinov2_model!r} is not a timm model name")

    def check_environment(self) -> None:
        """The feature network's weights and the reference statistics exist (checked when a stage that reads `fid`
        starts)."""
        if self.extractor == "inception" and not (self.inception_weights and Path(self.inception_weights).is_file()):
            raise FileNotFoundError(f"fid.inception_weights: Inception weights file {self.inception_weights!r} not "
                                    "found (torch-fidelity's pt_inception-2015-12-05; nothing is downloaded)")
        if self.extractor == "dinov2" and not (self.dinov2_weights and Path(self.dinov2_weights).is_file()):
            raise FileNotFoundError(f"fid.dinov2_weights: DINOv2 weights file {self.dinov2_weights!r} not found "
                                    "(dinov2_vitl14_pretrain.pth for FD-DINOv2; nothing is downloaded)")
        if self.reference_npz is not None and not Path(self.reference_npz).is_file():
            raise FileNotFoundError(f"fid.reference_npz: reference statistics {self.reference_npz!r} not found")
