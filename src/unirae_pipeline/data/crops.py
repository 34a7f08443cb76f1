"""Stage 1's training crops (train_rae alone reads them)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .images import ImageSet, to_rgb
from .loading import ImageDataset


class RandomCrops(torch.utils.data.Dataset):
    """(uint8 (3, S, S),) crops of one split: shorter side resized to `resize` (bicubic), then a random S x S window,
    no flip (the reference stage-1 augmentation). Item keys are (row, draw): the window depends only on
    (seed, draw), so crops do not depend on the number of workers and a resumed run draws the same ones."""

    def __init__(self, image_set: ImageSet, split: str, size: int, resize: int, seed: int) -> None:
        if resize < size:
            raise ValueError(f"the shorter side's resize {resize} (train_rae.resize_ratio x data.image_size) must be "
                             f">= the crop size data.image_size {size}")
        self.root, self.split, self.size, self.resize, self.seed = image_set.root, image_set.splits[split], size, \
            resize, seed

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor]:
        row, draw = key
        with Image.open(self.root / self.split.files[row]) as img:
            img = to_rgb(img)
            w, h = img.size
            scale = self.resize / min(w, h)
            img = img.resize((max(self.resize, int(w * scale)), max(self.resize, int(h * scale))), Image.BICUBIC)
            rng = np.random.default_rng((self.seed, draw))
            left = int(rng.integers(0, img.size[0] - self.size + 1))
            top = int(rng.integers(0, img.size[1] - self.size + 1))
            arr = np.asarray(img.crop((left, top, left + self.size, top + self.size)), dtype=np.uint8)
        return (torch.from_numpy(arr.copy()).permute(2, 0, 1),)  # a 1-tuple: batches are tuples everywhere


class CentreCrops(ImageDataset):
    """(uint8 (3, S, S),) keyed by (row, draw) as `RandomCrops`: the ADM centre crops the latent cache encodes, for a
    stage 1 without random crops (`train_rae.resize_ratio: null`; RAEv2 trains on pre-cropped images)."""

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor]:
        return (super().__getitem__(key[0])[0],)
