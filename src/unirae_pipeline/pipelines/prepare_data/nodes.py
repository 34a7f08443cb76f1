"""prepare_data: generate the built-in image set, or index and check an ImageFolder tree."""

from __future__ import annotations

import logging

from ...data.images import GeneratedImages, ImageSet, scan_image_folder
from ...data.shapes import class_names, generate
from ...data.source import DataConfig

log = logging.getLogger(__name__)


def prepare_image_set(cfg: DataConfig, seed: int) -> GeneratedImages | ImageSet:
    """Built-in shapes (deterministic from `seed`) or the ImageFolder at `data.root`."""
    if cfg.source == "shapes":
        images = GeneratedImages(class_names(cfg.shapes), generate(cfg.shapes, cfg.image_size, seed))
        log.info("generated %s", {k: len(v[1]) for k, v in images.arrays.items()})
        return images
    image_set = scan_image_folder(cfg.root)
    log.info("indexed %d classes, %s images", image_set.num_classes, {k: len(v) for k, v in image_set.splits.items()})
    return image_set
