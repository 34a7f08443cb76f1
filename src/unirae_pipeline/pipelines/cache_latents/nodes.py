"""cache_latents: run the frozen encoder once over every image (train: plain, and mirrored with `latents.hflip`;
val: plain).

The work is split into shards of `latents.shard_size` images, each written to <runtime.scratch>/latents/<hash of the
inputs>/ as soon as it is complete: a rerun after a kill encodes only the missing ones, and under torchrun or SLURM
each rank encodes every world-size-th shard (`ranks.sharded_job`). Rank zero then moves them into the catalog's store
at once.
"""

from __future__ import annotations

import hashlib
import logging
import time

import torch

from ...data.encoding import DTYPES, CacheConfig, encode_block, encode_uint8, intact_shard, save_shard
from ...data.images import ImageSet
from ...data.latents import LatentCache
from ...data.loading import ImageDataset
from ...interop.encoder_weights import encoder_state
from ...models.encoder import EncoderConfig, FrozenEncoder
from ...runtime import RuntimeConfig
from ...runtime.ranks import global_rank, local_device, sharded_job
from ...runtime.scratch import RunKey

log = logging.getLogger(__name__)

SPLITS = ("train", "val")


def _index_digest(image_set: ImageSet) -> str:
    h = hashlib.sha256(str(image_set.root).encode(errors="surrogateescape"))
    for split in sorted(image_set.splits):
        data = image_set.splits[split]
        h.update("\n".join(data.files).encode(errors="surrogateescape"))
        h.update(data.labels.tobytes())
        h.update("\n".join(data.stamps or []).encode())  # an image overwritten in place is encoded again
    return h.hexdigest()[:16]


def cache_latents(image_set: ImageSet, image_size: int, encoder: EncoderConfig, cfg: CacheConfig, seed: int,
                  run: RuntimeConfig) -> LatentCache:
    device = local_device()
    enc = FrozenEncoder(encoder, seed, encoder_state(encoder)).to(device)
    meta = {"fingerprint": enc.fingerprint(), "latent_shape": list(enc.latent_shape), "image_size": image_size,
            "class_names": image_set.class_names, "dtype": cfg.dtype, "hflip": cfg.hflip}
    log.info("encoder %s -> latents %s, fingerprint %s", enc.cfg.model, enc.latent_shape, meta["fingerprint"])
    key = RunKey({"encoder": encoder, "latents": cfg, "seed": seed, "data.image_size": image_size},
                 {"meta": meta, "index": _index_digest(image_set)})
    folder = key.folder(run.scratch_dir("latents"))
    plan = [(split, cfg.hflip and split == "train", k, lo) for split in SPLITS
            for k, lo in enumerate(range(0, len(image_set.splits[split]), cfg.shard_size))]
    encode = encode_uint8(enc, cfg.precision, device)
    paths = [folder / split / f"shard_{k:05d}.safetensors" for split, _, k, _ in plan]
    encoded, start = 0, time.perf_counter()

    def encode_shard(i: int) -> None:
        nonlocal encoded
        split, flips, k, lo = plan[i]
        rows = range(lo, min(lo + cfg.shard_size, len(image_set.splits[split])))
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(ImageDataset(image_set, split, image_size), rows), batch_size=cfg.batch_size,
            num_workers=run.num_workers, pin_memory=device.type == "cuda")
        save_shard(paths[i], encode_block(encode, loader, split, flips, DTYPES[cfg.dtype], device), meta["fingerprint"])
        encoded += len(rows)
        log.debug("rank %d: %s shard %d (%d images) cached", global_rank(), split, k, len(rows))

    kept, _ = sharded_job(paths, encode_shard, "latent shards", intact=intact_shard)
    seconds = time.perf_counter() - start
    log.info("rank %d: encoded %d images in %.1f s (%.0f img/s); %d complete shards kept from an earlier run",
             global_rank(), encoded, seconds, encoded / max(seconds, 1e-9), kept)
    shards = {split: sum(1 for s, *_ in plan if s == split) for split in SPLITS}
    return LatentCache(folder, shards, meta)
