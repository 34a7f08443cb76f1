"""fid_reference: the feature network of the Fréchet distance and the reference statistics of real images.

`fid.extractor: classifier` trains the embedded default's small CNN on the real training images; `inception` takes
torch-fidelity's Inception-v3 from `fid.inception_weights`, `dinov2` a DINOv2 ViT from `fid.dinov2_weights`.
The generation reference is `fid.reference_npz` (e.g. the ADM batch) or the statistics of the real val images,
streamed from disk; the rFID reference is always the latter.
"""

from __future__ import annotations

import json
import logging
from functools import partial

import numpy as np
import pandas as pd
import torch

from ...data.images import ImageDataset, ImageSet, load_split_uint8
from ...evaluation.classifier import ClassifierConfig, ShapeClassifier, classifier_objective
from ...evaluation.extractors import Extractor, FIDConfig, read_dinov2_weights, read_inception_weights
from ...evaluation.fd import feature_stats, load_reference
from ...models.serialization import Blob, to_blob
from ...params import build
from ...runtime import RuntimeConfig
from ...scratch import RunKey
from ...training.data import TensorBatches
from ...training.fit import TrainerConfig, fit, steps_per_epoch
from ...training.modules import TrainModule
from ...training.optim import OptimConfig

log = logging.getLogger(__name__)


def build_feature_extractor(image_set: ImageSet, image_size: int, fid: dict, trainer: dict, seed: int,
                            runtime: dict) -> tuple[Blob, pd.DataFrame]:
    """The extractor as a model file (the trained classifier, or checked Inception/DINOv2 weights) and a loss curve."""
    cfg = build(FIDConfig, fid, "fid")
    no_curve = pd.DataFrame(columns=["step", "loss", "lr"])
    if cfg.extractor == "inception":
        return (read_inception_weights(cfg.inception_weights), {"kind": json.dumps("inception")}), no_curve
    if cfg.extractor == "dinov2":
        state = read_dinov2_weights(cfg.dinov2_weights, cfg.dinov2_model)
        return (state, {"kind": json.dumps("dinov2"), "model": json.dumps(cfg.dinov2_model)}), no_curve
    clf = build(ClassifierConfig, cfg.classifier, "fid.classifier")
    optim = build(OptimConfig, cfg.train, "fid.train")
    images, labels = load_split_uint8(image_set, "train", image_size)
    trainer_cfg = build(TrainerConfig, trainer, "trainer")
    optim = optim.in_steps(steps_per_epoch(len(labels), optim.batch_size, trainer_cfg))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ShapeClassifier(clf, image_set.num_classes)
    module = TrainModule(model, optim, partial(classifier_objective, cfg=clf))
    key = RunKey({"fid": fid, "trainer": trainer, "seed": seed, "data.image_size": image_size},
                 {"classes": image_set.class_names, "counts": {k: len(v) for k, v in image_set.splits.items()}})
    curve = fit(module, TensorBatches((images, labels), optim.batch_size, seed), trainer_cfg,
                build(RuntimeConfig, runtime, "runtime"), "classifier", seed, key=key)
    blob = to_blob(module.ema.module, kind="classifier", config=clf.to_dict(), num_classes=image_set.num_classes)
    return blob, curve


def _val_features(extractor: Extractor, image_set: ImageSet, image_size: int,
                  workers: int) -> tuple[torch.Tensor, float]:
    """Features of the real val images, streamed from disk (decoded in `workers` processes), and the classifier's
    accuracy on them (else 0)."""
    loader = torch.utils.data.DataLoader(ImageDataset(image_set, "val", image_size), batch_size=256,
                                         num_workers=workers, pin_memory=torch.cuda.is_available())
    features, correct = [], 0
    for images, labels, _ in loader:
        f, logits = extractor(images)
        features.append(f)
        if extractor.kind == "classifier":
            correct += int((logits.argmax(-1) == labels).sum())
    features = torch.cat(features)
    return features, correct / len(features)


def reference_statistics(feature_extractor: Blob, image_set: ImageSet, image_size: int, fid: dict,
                         runtime: dict) -> tuple[dict[str, np.ndarray], dict]:
    """The generation reference (mu/sigma, plus features for precision/recall) and `val_mu`/`val_sigma`, the real
    val images' statistics that rFID compares reconstructions with (never the train-set ADM batch, whose use inflates
    rFID); for the classifier, its val accuracy."""
    cfg = build(FIDConfig, fid, "fid")
    extractor = Extractor(feature_extractor)
    val_features, accuracy = _val_features(extractor, image_set, image_size,
                                           build(RuntimeConfig, runtime, "runtime").num_workers)
    metrics: dict = {"extractor": extractor.kind, "reference": cfg.reference_npz or "val", "num_val": len(val_features)}
    if extractor.kind == "classifier":
        metrics["val_accuracy"] = accuracy
        log.info("classifier val accuracy %.4f on %d images", accuracy, len(val_features))
    val = feature_stats(val_features)
    if cfg.reference_npz:
        stats, images = load_reference(cfg.reference_npz)
        if stats["mu"].shape != val["mu"].shape:
            raise ValueError(f"fid.reference_npz holds {stats['mu'].shape[0]}-d statistics, but fid.extractor "
                             f"{extractor.kind!r} gives {val['mu'].shape[0]}-d features (ADM batches are Inception's)")
        features = extractor(torch.from_numpy(images).permute(0, 3, 1, 2))[0] if images is not None else None
    else:
        stats, features = dict(val), val_features
    stats.update(val_mu=val["mu"], val_sigma=val["sigma"])
    if features is not None:
        stats["features"] = features.float().numpy()
    return stats, metrics
