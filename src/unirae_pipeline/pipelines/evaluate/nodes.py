"""evaluate: FD of the samples to the reference (FID with Inception, FD-DINOv2 with DINOv2), precision/recall, and
class accuracy (classifier) or Inception score (Inception), next to the same for the untrained model, the floor."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import torch

from ...data.samples import SampleSet
from ...evaluation.extractors import Extractor
from ...evaluation.scoring import extract, pr_skipped, sample_scores
from ...models.serialization import ModelFile
from ...runtime.progress import progress

log = logging.getLogger(__name__)


def _score(samples: SampleSet, extractor: Extractor, reference: dict) -> dict[str, float]:
    blocks = progress(samples.chunks(4096), "scoring", total=-(-len(samples) // 4096), unit="block")
    labels = torch.from_numpy(samples.labels).split(4096)
    found = extract(extractor, ((torch.from_numpy(b).permute(0, 3, 1, 2), y) for b, y in zip(blocks, labels)))
    return sample_scores(found, extractor.kind, reference)


SCORE_COLUMNS = ("fd", "precision", "recall", "class_accuracy", "inception_score")  # one table for every extractor


def evaluate(samples: SampleSet, samples_untrained: SampleSet, feature_extractor: ModelFile,
             reference_stats: dict[str, np.ndarray]) -> tuple[dict, pd.DataFrame]:
    """The metrics (DVC metrics: `dvc exp show`), and the same as a table of the trained model and its untrained
    floor (DVC plots: bars per experiment in `dvc plots diff`)."""
    extractor = Extractor(feature_extractor)
    start = time.perf_counter()
    trained = _score(samples, extractor, reference_stats)
    metrics = {**trained, "num_samples": len(samples)}
    if "features" in reference_stats and "precision" not in trained:  # too few images: say so, never print 1.0
        metrics["precision_recall"] = pr_skipped(min(len(samples), len(reference_stats["features"])))
    rows = [{"model": "trained", **trained}]
    if len(samples_untrained):  # empty when sample.untrained_baseline is off
        untrained = _score(samples_untrained, extractor, reference_stats)
        metrics.update({f"{k}_untrained": v for k, v in untrained.items()})
        metrics["fd_ratio"] = metrics["fd"] / metrics["fd_untrained"]
        rows.append({"model": "untrained", **untrained})
    scored = len(samples) + len(samples_untrained)
    seconds = time.perf_counter() - start
    log.info("scored %d images with %s features in %.1f s (%.0f img/s): %s", scored, extractor.kind, seconds,
             scored / seconds, metrics)
    return metrics, pd.DataFrame(rows, columns=["model", *SCORE_COLUMNS])
