"""fid_reference: the feature network of the Fréchet distance and the reference statistics of real images.

`fid.extractor: classifier` trains the embedded default's small CNN on the real training images; `inception` takes
torch-fidelity's Inception-v3 from `fid.inception_weights`, `dinov2` a DINOv2 ViT from `fid.dinov2_weights`.
The generation reference is `fid.reference_npz` (e.g. the ADM batch) or the statistics of the real val images,
streamed from disk; the rFID reference is always the latter.
"""

from __future__ import annotations

import logging
from functools import partial

import numpy as np
import pandas as pd
import torch

from ...config.fid import FIDConfig
from ...data.images import ImageSet
from ...data.loading import ImageDataset, load_split_uint8
from ...evaluation.classifier import ShapeClassifier, classifier_file, classifier_objective
from ...evaluation.extractors import Extractor
from ...evaluation.fd import feature_stats, load_reference
from ...evaluation.scoring import extract
from ...interop.fid_weights import dinov2_file, inception_file
from ...models.serialization import ModelFile
from ...runtime import RuntimeConfig
from ...runtime.scratch import RunKey
from ...training.data import TensorBatches
from ...training.fit import TrainerConfig, fit, recipe_in_steps
from ...training.modules import TrainModule

log = logging.getLogger(__name__)


def build_feature_extractor(image_set: ImageSet, image_size: int, cfg: FIDConfig, trainer: TrainerConfig, seed: int,
                            runtime: RuntimeConfig) -> tuple[ModelFile, pd.DataFrame]:
    """The extractor as a model file (the trained classifier, or checked Inception/DINOv2 weights) and a loss curve."""
    no_curve = pd.DataFrame(columns=["step", "loss", "lr"])
    if cfg.extractor == "inception":
        return inception_file(cfg.inception_weights), no_curve
    if cfg.extractor == "dinov2":
        return dinov2_file(cfg.dinov2_weights, cfg.dinov2_model), no_curve
    if image_set.num_classes < 2:
        raise ValueError(f"fid.extractor classifier needs at least 2 classes, and data.root holds "
                         f"{image_set.num_classes}: use fid.extractor inception or dinov2 for a one-class data set")
    clf = cfg.classifier
    images, labels = load_split_uint8(image_set, "train", image_size)
    optim = recipe_in_steps(cfg.train, len(labels), trainer, "fid.train")
    batches = TensorBatches((images, labels), optim.batch_size, seed, key="fid.train.batch_size")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ShapeClassifier(clf, image_set.num_classes)
    module = TrainModule(model, optim, partial(classifier_objective, cfg=clf))
    key = RunKey({"fid": cfg, "trainer": trainer, "seed": seed, "data.image_size": image_size},
                 {"classes": image_set.class_names, "counts": {k: len(v) for k, v in image_set.splits.items()}})
    curve = fit(module, batches, trainer, runtime, "classifier", seed, key=key)
    return classifier_file(module.ema.module), curve


def reference_statistics(feature_extractor: ModelFile, image_set: ImageSet, image_size: int, cfg: FIDConfig,
                         runtime: RuntimeConfig) -> tuple[dict[str, np.ndarray], dict]:
    """The generation reference (mu/sigma, plus features for precision/recall) and `val_mu`/`val_sigma`, the real
    val images' statistics that rFID compares reconstructions with (never the train-set ADM batch, whose use inflates
    rFID); for the classifier, its val accuracy."""
    extractor = Extractor(feature_extractor)
    loader = torch.utils.data.DataLoader(ImageDataset(image_set, "val", image_size), batch_size=256,
                                         num_workers=runtime.num_workers, pin_memory=torch.cuda.is_available())
    found = extract(extractor, ((images, labels) for images, labels, _ in loader))  # streamed from disk
    val_features = found.features
    metrics: dict = {"extractor": extractor.kind, "reference": cfg.reference_npz or "val", "num_val": len(val_features)}
    if extractor.kind == "classifier":
        metrics["val_accuracy"] = found.accuracy()
        log.info("classifier val accuracy %.4f on %d images", metrics["val_accuracy"], len(val_features))
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
