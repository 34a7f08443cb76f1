"""fid_reference: the feature network of the Fréchet distance and the reference statistics of real images.

`fid.extractor: classifier` trains the embedded default's small CNN on the real training images; `inception` takes
torch-fidelity's Inception-v3 from `fid.inception_weights`. The reference is `fid.reference_npz` (e.g. the ADM batch)
or the statistics of the real val images, streamed from disk.
"""

from __future__ import annotations

import json
import logging
from functools import partial

import numpy as np
import pandas as pd
import torch

from ...data.images import ImageDataset, ImageSet, load_split_uint8
from ...evaluation.classifier import ClassifierConfig, ShapeClassifier
from ...evaluation.extractors import Extractor, FIDConfig, read_inception_weights
from ...evaluation.fd import feature_stats, load_reference
from ...models.serialization import Blob, to_blob
from ...params import build
from ...training.data import TensorBatches
from ...training.fit import TrainerConfig, fit, run_key, steps_per_epoch
from ...training.modules import TrainModule, classifier_objective
from ...training.optim import OptimConfig

log = logging.getLogger(__name__)


def build_feature_extractor(image_set: ImageSet, image_size: int, fid: dict, trainer: dict,
                            seed: int) -> tuple[Blob, pd.DataFrame]:
    """The extractor as a model file (the trained classifier, or the checked Inception weights) and a loss curve."""
    cfg = build(FIDConfig, fid, "fid")
    if cfg.extractor == "inception":
        state = read_inception_weights(cfg.inception_weights)
        return (state, {"kind": json.dumps("inception")}), pd.DataFrame(columns=["step", "loss", "lr"])
    clf = build(ClassifierConfig, cfg.classifier, "fid.classifier")
    optim = build(OptimConfig, cfg.train, "fid.train")
    images, labels = load_split_uint8(image_set, "train", image_size)
    trainer_cfg = build(TrainerConfig, trainer, "trainer")
    optim = optim.in_steps(steps_per_epoch(len(labels), optim.batch_size, trainer_cfg))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ShapeClassifier(clf, image_set.num_classes)
    module = TrainModule(model, optim, partial(classifier_objective, cfg=clf))
    key = run_key(fid=fid, trainer=trainer, seed=seed, image_size=image_size, classes=image_set.class_names,
                  counts={k: len(v) for k, v in image_set.splits.items()})
    curve = fit(module, TensorBatches((images, labels), optim.batch_size, seed), trainer_cfg, "classifier", seed,
                run_key=key)
    blob = to_blob(module.ema.module, kind="classifier", config=clf.to_dict(), num_classes=image_set.num_classes)
    return blob, curve


def _val_features(extractor: Extractor, image_set: ImageSet, image_size: int) -> tuple[torch.Tensor, float]:
    """Features of the real val images, streamed from disk, and the classifier's accuracy on them."""
    loader = torch.utils.data.DataLoader(ImageDataset(image_set, "val", image_size), batch_size=256)
    features, correct = [], 0
    for images, labels, _ in loader:
        f, logits = extractor((images * 255).round().to(torch.uint8))
        features.append(f)
        correct += int((logits.argmax(-1) == labels).sum())
    features = torch.cat(features)
    return features, correct / len(features)


def reference_statistics(feature_extractor: Blob, image_set: ImageSet, image_size: int,
                         fid: dict) -> tuple[dict[str, np.ndarray], dict]:
    """mu/sigma (and the features, for precision/recall) of the reference; for the classifier, its val accuracy."""
    cfg = build(FIDConfig, fid, "fid")
    extractor = Extractor(feature_extractor)
    metrics: dict = {"extractor": extractor.kind, "reference": cfg.reference_npz or "val"}
    if not cfg.reference_npz or extractor.kind == "classifier":
        val_features, accuracy = _val_features(extractor, image_set, image_size)
        metrics["num_val"] = len(val_features)
        if extractor.kind == "classifier":
            metrics["val_accuracy"] = accuracy
            log.info("classifier val accuracy %.4f on %d images", accuracy, len(val_features))
    if cfg.reference_npz:
        stats, images = load_reference(cfg.reference_npz)
        features = extractor(torch.from_numpy(images).permute(0, 3, 1, 2))[0] if images is not None else None
    else:
        features = val_features
        stats = feature_stats(features)
    if features is not None:
        stats["features"] = features.float().numpy()
    return stats, metrics
