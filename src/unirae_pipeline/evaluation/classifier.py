"""The embedded default's evaluation network: a small CNN whose penultimate features define its FD."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..config.build import build
from ..models.serialization import ModelFile


@dataclass(frozen=True)
class ClassifierConfig:
    width: int
    feature_dim: int
    blur_sigma: float   # augmentation: Gaussian blur with sigma ~ U(0, blur_sigma)
    noise_std: float    # augmentation: additive noise with std ~ U(0, noise_std)

    def __post_init__(self) -> None:
        if min(self.width, self.feature_dim) < 1 or self.blur_sigma < 0 or self.noise_std < 0:
            raise ValueError(f"fid.classifier: sizes must be positive and augmentations >= 0, got {asdict(self)}")

    def to_dict(self) -> dict:
        return asdict(self)


class ShapeClassifier(nn.Module):
    """Three conv stages and an MLP; `features` (B, feature_dim) is the FD embedding."""

    def __init__(self, cfg: ClassifierConfig, num_classes: int) -> None:
        super().__init__()
        w = cfg.width
        self.cfg, self.num_classes = cfg, num_classes
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.GELU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(32 * w, cfg.feature_dim), nn.GELU())
        self.head = nn.Linear(cfg.feature_dim, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images in [0, 1], (B, 3, H, W)."""
        return self.body(images * 2 - 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def augment(images: torch.Tensor, cfg: ClassifierConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Blur, noise and flips, so that the classifier judges generated images by shape, not by sharpness."""
    b = images.shape[0]
    sigma = torch.rand(b, generator=generator) * cfg.blur_sigma
    radius = max(1, int(2 * cfg.blur_sigma + 0.5))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-offsets[None] ** 2 / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    kernel = kernel / kernel.sum(1, keepdim=True)                                   # (B, k)
    x = images.transpose(0, 1)                                                       # (3, B, H, W): per-sample kernels
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=b)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel[:, None, :, None], groups=b)
    x = x.transpose(0, 1)
    x = x + torch.randn(x.shape, generator=generator) * torch.rand(b, 1, 1, 1, generator=generator) * cfg.noise_std
    flip = torch.rand(b, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x.clamp(0, 1)


def classifier_file(model: ShapeClassifier) -> ModelFile:
    """fid_reference's `extractor` file of a trained classifier: its weights, config and class count."""
    return ModelFile.of("extractor", model, kind="classifier", config=model.cfg.to_dict(),
                        num_classes=model.num_classes)


def classifier_from_file(file: ModelFile) -> ShapeClassifier:
    """The embedded default's classifier from fid_reference's file, its config built as `fid.classifier` is."""
    meta = file.expect("extractor").meta
    cfg = build(ClassifierConfig, meta["config"], "fid.classifier")
    return file.load_into(ShapeClassifier(cfg, meta["num_classes"]))


def classifier_objective(model: nn.Module, batch: tuple[torch.Tensor, ...], *, cfg: ClassifierConfig) -> torch.Tensor:
    """Cross-entropy on blurred, noised, flipped real images."""
    images, labels = batch
    return F.cross_entropy(model(augment(images.float() / 255, cfg)), labels)
