"""cache_latents: run the frozen encoder once over every image (train: plain + mirrored, val: plain)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch

from ...data.images import ImageDataset, ImageSet
from ...data.latents import DTYPES, CacheConfig, Shard, encode_shards
from ...io.datasets import LatentCache
from ...models import EncoderConfig, FrozenEncoder
from ...params import build

log = logging.getLogger(__name__)


def cache_latents(image_set: ImageSet, image_size: int, encoder: dict, latents: dict, seed: int) -> LatentCache:
    """A lazy shard stream: the catalog dataset encodes and writes shard by shard (memory independent of N)."""
    enc = FrozenEncoder(build(EncoderConfig, encoder, "encoder"), seed)
    cfg = build(CacheConfig, latents, "latents")
    meta = {"fingerprint": enc.fingerprint(), "latent_shape": list(enc.latent_shape), "image_size": image_size,
            "class_names": image_set.class_names, "dtype": cfg.dtype}
    log.info("encoder %s -> latents %s, fingerprint %s", enc.cfg.model, enc.latent_shape, meta["fingerprint"])

    def shards() -> Iterator[Shard]:
        for split, flips in (("train", True), ("val", False)):
            loader = torch.utils.data.DataLoader(ImageDataset(image_set, split, image_size), batch_size=cfg.batch_size,
                                                 num_workers=cfg.num_workers)
            yield from encode_shards(enc, loader, split, cfg.shard_size, flips, DTYPES[cfg.dtype])

    return LatentCache(shards(), meta)
