"""Images as uint8 tensors for the stages that encode or score them (cache_latents, fid_reference, train_rae's
evaluation, reconstruct): the ADM centre crop and a Dataset over one split of an image set."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .images import ImageSet, to_rgb


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """ADM center crop: box-halve while the short side is >= 2x size, bicubic resize, then crop the centre."""
    while min(img.size) >= 2 * size:
        img = img.resize(tuple(x // 2 for x in img.size), resample=Image.BOX)
    scale = size / min(img.size)
    img = img.resize(tuple(round(x * scale) for x in img.size), resample=Image.BICUBIC)
    left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
    return img.crop((left, top, left + size, top + size))



class ImageDataset(torch.utils.data.Dataset):
    """(image uint8 (3, S, S), label, row) for one split; images are RGB-converted and centre-cropped. uint8 all the
    way to the device: a quarter of float32's bytes through worker pipes, pinned memory and the host-device copy."""

    def __init__(self, image_set: ImageSet, split: str, size: int) -> None:
        self.root, self.split, self.size = image_set.root, image_set.splits[split], size

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        with Image.open(self.root / self.split.files[i]) as img:
            img = to_rgb(img)
            if img.size != (self.size, self.size):
                img = center_crop(img, self.size)
            arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
        return arr.permute(2, 0, 1), int(self.split.labels[i]), i


def load_split_uint8(image_set: ImageSet, split: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split in memory as uint8 (N, 3, S, S) plus labels; for the small sets of the embedded default."""
    ds = ImageDataset(image_set, split, size)
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    return images, torch.from_numpy(ds.split.labels)
