"""prepare_data: generate the built-in image set, or index and check an ImageFolder tree."""

from __future__ import annotations

import logging

from ...data.images import DataConfig, GeneratedImages, ImageSet, scan_image_folder
from ...data.shapes import class_names, generate
from ...params import build

log = logging.getLogger(__name__)


def prepare_image_set(data: dict, seed: int) -> GeneratedImages | ImageSet:
    """Built-in shapes (deterministic from `seed`) or the ImageFolder at `data.root`."""
    cfg = build(DataConfig, data, "data")
    if cfg.source == "shapes":
        shapes = cfg.shapes_config()
        images = GeneratedImages(class_names(shapes), generate(shapes, seed))
        log.info("generated %s", {k: len(v[1]) for k, v in images.arrays.items()})
        return images
    image_set = scan_image_folder(cfg.root)
    log.info("indexed %d classes, %s images", image_set.num_classes, {k: len(v) for k, v in image_set.splits.items()})
    return image_set
