"""Encoding images into latent shards (the cache_latents stage alone): batches through the frozen encoder, mirrored
copies, one atomically written shard file per block, and the `latents` params group."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from ..fileio import CorruptFileError, verify_safetensors, write_safetensors

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Shard:
    split: str
    latents: torch.Tensor  # (n, C, h, w), raw encoder output
    labels: torch.Tensor   # (n,) int64
    rows: torch.Tensor     # (n,) int64 row in the image index
    flip: torch.Tensor     # (n,) uint8, 1 = horizontally flipped image


def encode_block(encode: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[tuple], split: str, flips: bool,
                 dtype: torch.dtype, device: torch.device | str = "cpu") -> Shard:
    """Encode (images, labels, rows) batches into one shard; with `flips`, each batch is followed by its mirror.
    Images cross to `device` once (non-blocking from pinned memory) and are mirrored there."""
    parts = []
    for images, labels, rows in batches:
        images = images.to(device, non_blocking=True)
        for imgs, flag in [(images, 0)] + ([(images.flip(-1), 1)] if flips else []):
            z = encode(imgs).to(dtype).cpu()
            parts.append(Shard(split, z, labels.long(), rows.long(), torch.full((len(z),), flag, dtype=torch.uint8)))
    return Shard(split, *(torch.cat([getattr(p, k) for p in parts]) for k in ("latents", "labels", "rows", "flip")))


def encode_uint8(encoder: Callable[[torch.Tensor], torch.Tensor], precision: str,
                 device: torch.device | str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The encoder on uint8 images (already on `device`), scaled to [0, 1] there, under bf16 autocast if asked."""
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def encode(images: torch.Tensor) -> torch.Tensor:
        with autocast:
            return encoder(images.float() / 255)

    return encode


def intact_shard(path: Path) -> bool:
    """Whether a shard kept from an interrupted run is whole (its checksum): a damaged one is encoded again."""
    try:
        verify_safetensors(path, "it is encoded again")
    except CorruptFileError as err:
        log.warning("%s", err)
        return False
    return True


def save_shard(path: Path, shard: Shard, fingerprint: str) -> None:
    """One shard file, written atomically: a file that exists is complete."""
    tensors = {"latents": shard.latents.contiguous(), "labels": shard.labels, "rows": shard.rows, "flip": shard.flip}
    write_safetensors(path, tensors, {"fingerprint": fingerprint})


@dataclass(frozen=True)
class CacheConfig:
    """How `cache_latents` runs: encoder batch, images per shard, storage dtype, encoder precision (fp32: TF32 on a
    GPU, as the reference; bf16: autocast, about twice the rate), and whether the train images are also cached
    mirrored (`hflip`, as the reference's random flip; off for data whose classes are not
    mirror-symmetric: handwriting, text, some medical or satellite images)."""

    batch_size: int
    shard_size: int
    dtype: str
    precision: Literal["fp32", "bf16"]
    hflip: bool

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"latents.dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.batch_size < 1 or self.shard_size < 1:
            raise ValueError("latents.batch_size and latents.shard_size must be >= 1")
