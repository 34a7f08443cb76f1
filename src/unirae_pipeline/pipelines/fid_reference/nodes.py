"""fid_reference: train the evaluation classifier on real training images; reference statistics of real val images."""

from __future__ import annotations

import logging
from functools import partial

import numpy as np
import pandas as pd
import torch

from ...data.images import ImageSet, load_split_uint8
from ...evaluation.classifier import ClassifierConfig, ShapeClassifier, classifier_from_blob, predict
from ...evaluation.fd import feature_stats
from ...models.serialization import Blob, to_blob
from ...params import build
from ...training.data import TensorBatches
from ...training.fit import TrainerConfig, fit
from ...training.modules import TrainModule, classifier_objective
from ...training.optim import OptimConfig

log = logging.getLogger(__name__)


def train_classifier(image_set: ImageSet, image_size: int, fid: dict, trainer: dict,
                     seed: int) -> tuple[Blob, pd.DataFrame]:
    """The FD feature network of the embedded default, trained with blur/noise augmentation."""
    cfg = build(ClassifierConfig, fid["classifier"], "fid.classifier")
    optim = build(OptimConfig, fid["train"], "fid.train")
    images, labels = load_split_uint8(image_set, "train", image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ShapeClassifier(cfg, image_set.num_classes)
    module = TrainModule(model, optim, partial(classifier_objective, cfg=cfg))
    trainer_cfg = build(TrainerConfig, trainer, "trainer")
    curve = fit(module, TensorBatches((images, labels), optim.batch_size, seed), trainer_cfg, "classifier", seed)
    return to_blob(module.ema.module, config=cfg.to_dict(), num_classes=image_set.num_classes), curve


def reference_statistics(classifier: Blob, image_set: ImageSet, image_size: int) -> tuple[dict[str, np.ndarray], dict]:
    """mu/sigma of the real val images in the classifier's feature space, and its val accuracy."""
    images, labels = load_split_uint8(image_set, "val", image_size)
    features, preds = predict(classifier_from_blob(classifier), images)
    accuracy = float((preds == labels).float().mean())
    log.info("classifier val accuracy %.4f on %d images", accuracy, len(labels))
    return feature_stats(features), {"val_accuracy": accuracy, "num_val": len(labels)}
