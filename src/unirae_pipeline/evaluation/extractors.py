"""Feature networks of the Fréchet distance: the embedded default's classifier, or torch-fidelity's Inception-v3
(`inception-v3-compat`, the TF-ported network of FID/IS) from a weights file; never downloaded."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ..models.serialization import Blob, blob_meta
from .classifier import ClassifierConfig, classifier_from_blob

INCEPTION_FEATURES = ("2048", "logits_unbiased")


@dataclass(frozen=True)
class FIDConfig:
    """The `fid` params group: which feature network, where its weights are, and the reference statistics."""

    extractor: Literal["classifier", "inception"]
    inception_weights: str | None   # torch-fidelity's pt_inception-2015-12-05 file, for extractor: inception
    reference_npz: str | None       # e.g. ADM's VIRTUAL_imagenet256_labeled.npz (its mu/sigma); else computed
    classifier: dict
    train: dict

    def __post_init__(self) -> None:
        if self.extractor not in ("classifier", "inception"):
            raise ValueError(f"fid.extractor must be 'classifier' or 'inception', got {self.extractor!r}")
        if self.extractor == "inception" and not (self.inception_weights and Path(self.inception_weights).is_file()):
            raise FileNotFoundError(f"fid.inception_weights: Inception weights file {self.inception_weights!r} not "
                                    "found (torch-fidelity's pt_inception-2015-12-05; nothing is downloaded)")
        if self.reference_npz is not None and not Path(self.reference_npz).is_file():
            raise FileNotFoundError(f"fid.reference_npz: reference statistics {self.reference_npz!r} not found")
        ClassifierConfig(**self.classifier)


def read_inception_weights(path: str) -> dict[str, torch.Tensor]:
    """Tensors only (weights_only=True): torch-fidelity itself would unpickle the file without that guard."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means the file is not a plain state dict
        raise ValueError(f"fid.inception_weights {path!r} is not a plain tensor state dict: {err}") from None


def _inception(state: dict[str, torch.Tensor]) -> nn.Module:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    with tempfile.TemporaryDirectory() as tmp:  # torch-fidelity takes a path; this file holds checked tensors only
        torch.save(state, Path(tmp) / "inception.pt")
        return FeatureExtractorInceptionV3("inception-v3-compat", list(INCEPTION_FEATURES),
                                           feature_extractor_weights_path=str(Path(tmp) / "inception.pt"))


class Extractor:
    """uint8 images (N, 3, H, W) -> features (N, D) and, for the classifier, class logits over our labels."""

    def __init__(self, blob: Blob, batch_size: int = 256) -> None:
        self.kind = blob_meta(blob).get("kind", "classifier")
        self.batch_size = batch_size
        self.net = classifier_from_blob(blob) if self.kind == "classifier" else _inception(blob[0])

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, logits): class logits for the classifier, Inception's 1008-way logits for the IS."""
        feats, logits = [], []
        for chunk in images.split(self.batch_size):
            if self.kind == "classifier":
                f = self.net.features(chunk.float() / 255)
                feats.append(f)
                logits.append(self.net.head(f))
            else:
                f, lg = self.net(chunk)
                feats.append(f)
                logits.append(lg)
        return torch.cat(feats).double(), torch.cat(logits).double()
