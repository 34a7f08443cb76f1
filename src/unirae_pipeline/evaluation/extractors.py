"""Feature networks of the Fréchet distance: the embedded default's classifier, torch-fidelity's Inception-v3
(`inception-v3-compat`, the TF-ported network of FID/IS), or DINOv2 ViT-L/14 (FD-DINOv2, Stein et al. 2023: the
normed CLS token at 224 px), each from its `extractor` model file (`interop.fid_weights` reads the foreign weights
files into one); never downloaded."""

from __future__ import annotations

import tempfile
from pathlib import Path

import timm
import torch
from torch import nn
from torch.nn import functional as F

from ..models.imagenet import IMAGENET_MEAN, IMAGENET_STD
from ..models.serialization import ModelFile, load_strict
from ..runtime.ranks import local_device
from .classifier import classifier_from_file

INCEPTION_FEATURES = ("2048", "logits_unbiased")


def _inception(state: dict[str, torch.Tensor]) -> nn.Module:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    with tempfile.TemporaryDirectory() as tmp:  # torch-fidelity takes a path; this file holds checked tensors only
        torch.save(state, Path(tmp) / "inception.pt")
        return FeatureExtractorInceptionV3("inception-v3-compat", list(INCEPTION_FEATURES),
                                           feature_extractor_weights_path=str(Path(tmp) / "inception.pt"))


class DINOv2Features(nn.Module):
    """uint8 images -> the final normed CLS token of a DINOv2 ViT at 224 px (bicubic, antialiased, ImageNet norm)."""

    SIZE = 224

    def __init__(self, model: str, state: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.vit = timm.create_model(model, pretrained=False, num_classes=0, img_size=self.SIZE)
        if state is not None:
            load_strict(self.vit, state, "fid.dinov2_weights")
        self.vit.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255
        if x.shape[-2:] != (self.SIZE, self.SIZE):
            x = F.interpolate(x, size=(self.SIZE, self.SIZE), mode="bicubic", antialias=True).clamp(0, 1)
        return self.vit.forward_head(self.vit.forward_features((x - self.mean) / self.std), pre_logits=True)


class Extractor:
    """uint8 images (N, 3, H, W) -> features (N, D) and logits: our classes for the classifier, Inception's 1008
    for the IS, none (N, 0) for DINOv2."""

    def __init__(self, file: ModelFile, batch_size: int = 256) -> None:
        meta = file.expect("extractor").meta
        self.kind = meta.get("kind", "classifier")  # which feature network
        self.batch_size = batch_size
        if self.kind == "classifier":
            net = classifier_from_file(file)
        elif self.kind == "dinov2":
            net = DINOv2Features(meta["model"], file.tensors)
        else:
            net = _inception(file.tensors)
        self.device = local_device()
        self.net = net.eval().to(self.device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, logits): class logits for the classifier, Inception's 1008-way logits for the IS."""
        feats, logits = [], []
        for chunk in images.split(self.batch_size):
            chunk = chunk.to(self.device, non_blocking=True)
            if self.kind == "classifier":
                f = self.net.features(chunk.float() / 255)
                feats.append(f)
                logits.append(self.net.head(f))
            elif self.kind == "dinov2":
                f = self.net(chunk)
                feats.append(f)
                logits.append(f[:, :0])
            else:
                f, lg = self.net(chunk)
                feats.append(f)
                logits.append(lg)
        return torch.cat(feats).double().cpu(), torch.cat(logits).double().cpu()
