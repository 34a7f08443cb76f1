"""The scoring loops of the stages, streamed batch by batch so that memory does not grow with the image count: the
features of real images, the metrics of generated samples, and the reconstructions of stage 1 scored as saved."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .extractors import Extractor
from .fd import feature_stats, frechet_distance, inception_score, precision_recall, psnr_ssim
from .report import check_finite, quantize

log = logging.getLogger(__name__)
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (latents, uint8 original images, labels)


@dataclass
class Features:
    """Features and logits of a stream of labelled images (see `Extractor`), with the labels."""

    features: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor

    def accuracy(self) -> float:
        """The classifier's accuracy on these images (its logits are class scores)."""
        return int((self.logits.argmax(-1) == self.labels).sum()) / len(self.labels)

    @staticmethod
    def concat(parts: list[Features]) -> Features:
        return Features(*(torch.cat([getattr(p, k) for p in parts]) for k in ("features", "logits", "labels")))


def extract(extractor: Extractor, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Features:
    """Run `extractor` over (uint8 NCHW images, labels) batches."""
    return Features.concat([Features(*extractor(images), labels) for images, labels in batches])


MIN_PR_IMAGES = 500  # below this, k-NN manifolds (k = 3) of a few hundred points cover nearly everything: precision
# 1.0 for a trained and an untrained model alike (a 200-image folder), so the metric is left out


def pr_skipped(fewest: int) -> str:
    """The metrics' note when precision/recall are left out."""
    return f"too few images ({fewest} < {MIN_PR_IMAGES})"


def sample_scores(found: Features, kind: str, reference: dict[str, np.ndarray]) -> dict[str, float]:
    """FD to the reference, precision/recall when the reference keeps its features, and class accuracy
    (classifier) or Inception score (Inception)."""
    scores = {"fd": frechet_distance(feature_stats(found.features), reference)}
    if "features" in reference:  # a reference with its features (computed, or an ADM batch with images)
        if (fewest := min(len(found.features), len(reference["features"]))) >= MIN_PR_IMAGES:
            scores.update(precision_recall(found.features, torch.from_numpy(reference["features"])))
        else:
            log.warning("precision/recall not computed: %s (%d samples, %d reference images)", pr_skipped(fewest),
                        len(found.features), len(reference["features"]))
    if kind == "classifier":
        scores["class_accuracy"] = found.accuracy()
    elif kind == "inception":
        scores["inception_score"] = inception_score(found.logits)
    return scores


@dataclass
class Reconstructions:
    """What stage 1's evaluation keeps of the val reconstructions: per-image PSNR/SSIM sums, the features of the
    reconstructions, and the (original, reconstruction) pairs at the `show` positions for a grid."""

    count: int = 0
    sums: dict[str, float] = field(default_factory=lambda: {"psnr": 0.0, "ssim": 0.0})
    found: list[Features] = field(default_factory=list)
    shown: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def metrics(self, kind: str, reference: dict[str, np.ndarray]) -> dict[str, float]:
        """Mean PSNR and SSIM, FD to the `reference` statistics (rFID with Inception) and, for the classifier, its
        accuracy on the reconstructions."""
        found = Features.concat(self.found)
        metrics = {k: v / self.count for k, v in self.sums.items()}
        metrics["recon_fd"] = frechet_distance(feature_stats(found.features), reference)
        if kind == "classifier":
            metrics["recon_accuracy"] = found.accuracy()
        return metrics


@torch.no_grad()
def reconstruct(decoder: nn.Module, extractor: Extractor, pairs: Iterable[Batch], device: torch.device,
                show: set[int], keep: Callable[[torch.Tensor], None] | None = None) -> Reconstructions:
    """Decode each (latents, uint8 originals, labels) batch without noise, to uint8 as the reference saves its
    reconstructions (handed to `keep`, batch by batch, when given), and score those against the originals (the
    reference's `src/eval`)."""
    out = Reconstructions()
    for z, real, labels in pairs:
        real = real.to(device, non_blocking=True)
        recon = quantize(check_finite(decoder(z.to(device).float()), f"reconstructions from image {out.count}"))
        if keep is not None:
            keep(recon)
        for k, v in psnr_ssim(recon, real).items():
            out.sums[k] += v * len(z)
        features, logits = extractor(recon)
        out.found.append(Features(features.float(), logits, labels))  # float32: half the memory of 50k x 2048
        out.shown.update({out.count + i: (real[i].cpu(), recon[i].cpu()) for i in range(len(z))
                          if out.count + i in show})
        out.count += len(z)
    return out


def paired(latent_shards: Iterable[dict[str, torch.Tensor]], images: Iterable[tuple[torch.Tensor, ...]],
           batch_size: int) -> Iterator[Batch]:
    """(latents, images, labels) batches from cached shards and an image loader of the same split in index order
    (`batch_size` images per batch on both sides); fails when the two orders differ."""
    images = iter(images)
    for shard in latent_shards:
        for z, rows, labels in zip(*(shard[k].split(batch_size) for k in ("latents", "rows", "labels"))):
            real, _, image_rows = next(images)
            if not torch.equal(image_rows, rows):
                raise ValueError("the val latents are not in image-index order; re-run cache_latents")
            yield z, real, labels
