"""The image index (`image_set`): generated PNGs or an external ImageFolder tree."""

from __future__ import annotations

from pathlib import Path

from ..data.images import GeneratedImages, ImageSet, load_index, save_index, scan_image_folder, write_image_folder
from ..fileio import atomic_dir
from .datasets import _PathDataset


class ImageSetDataset(_PathDataset):
    """An image index folder. Saving a `GeneratedImages` also writes its PNG tree under `images/`;
    saving an `ImageSet` (an external ImageFolder) writes only the index with its absolute root."""

    def _write(self, data: GeneratedImages | ImageSet) -> None:
        with atomic_dir(self._filepath) as tmp:
            if isinstance(data, GeneratedImages):
                write_image_folder(tmp / "images", data)
                save_index(scan_image_folder(tmp / "images", stamps=False), tmp, "images")  # content from params
            else:
                save_index(data, tmp, str(Path(data.root).resolve()))

    def load(self) -> ImageSet:
        return load_index(self._require())
