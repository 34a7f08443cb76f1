"""evaluate: class accuracy and Fréchet distance of the samples, against the untrained model as the floor."""

from __future__ import annotations

import logging

import numpy as np
import torch

from ...evaluation.classifier import classifier_from_blob, predict
from ...evaluation.fd import feature_stats, frechet_distance
from ...models.serialization import Blob

log = logging.getLogger(__name__)


def _score(samples: dict[str, np.ndarray], classifier: torch.nn.Module, reference: dict) -> tuple[float, float]:
    images = torch.from_numpy(samples["images"]).permute(0, 3, 1, 2)
    features, preds = predict(classifier, images)
    accuracy = float((preds == torch.from_numpy(samples["labels"])).float().mean())
    return accuracy, frechet_distance(feature_stats(features), reference)


def evaluate(samples: dict[str, np.ndarray], samples_untrained: dict[str, np.ndarray], classifier: Blob,
             reference_stats: dict[str, np.ndarray]) -> dict:
    model = classifier_from_blob(classifier)
    accuracy, fd = _score(samples, model, reference_stats)
    metrics = {"class_accuracy": accuracy, "fd": fd, "num_samples": len(samples["labels"])}
    if len(samples_untrained["labels"]):  # absent when sample.untrained_baseline is off
        accuracy_untrained, fd_untrained = _score(samples_untrained, model, reference_stats)
        metrics.update(class_accuracy_untrained=accuracy_untrained, fd_untrained=fd_untrained,
                       fd_ratio=fd / fd_untrained)
    log.info("evaluation: %s", metrics)
    return metrics
