"""The `data` params group (which images) and the count by file name that checks it against the batch sizes before any
stage runs: read by check_params and prepare_data alone."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .images import IMAGE_EXTENSIONS, folder_files, is_hidden
from .shapes import ShapesConfig


@dataclass(frozen=True)
class DataConfig:
    """`source`: `shapes` (the built-in set, sized by `shapes`) or `imagefolder` (an ImageNet-style tree at `root`)."""

    source: Literal["shapes", "imagefolder"]
    image_size: int
    root: str | None
    lineage: str  # what DVC hashes as this data (a dependency of prepare_data): `root`, or the built-in generator
    shapes: ShapesConfig | None

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ValueError(f"data.image_size must be >= 8, got {self.image_size}")
        if self.source == "shapes" and self.shapes is None:
            raise ValueError("data.shapes must hold the built-in data set's sizes when data.source is 'shapes'")
        if self.source == "imagefolder" and (not self.root or self.root == "???"):  # ???: Hydra's "not set"
            raise ValueError("data.root must name the ImageFolder tree when data.source is 'imagefolder': add "
                             "-S data.root=/path/to/images")
        if self.source == "imagefolder" and Path(self.lineage) != Path(self.root):
            raise ValueError(f"data.lineage {self.lineage!r} must be data.root {self.root!r} (conf/data sets it to "
                             "${.root}): DVC would track another tree than the one the pipeline reads")

    def check_environment(self) -> None:
        """The ImageFolder tree exists and can be read (checked by check_params and when a stage that reads `data`
        starts)."""
        if self.source != "imagefolder":
            return
        if not Path(self.root).is_dir():
            raise FileNotFoundError(f"data.root: ImageFolder path {self.root!r} does not exist or is not a directory")
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise PermissionError(f"data.root: ImageFolder path {self.root!r} cannot be read by this user")


def check_file_names(root: str) -> None:
    """Every name under `root` is UTF-8: DVC, which hashes the tree as prepare_data's dependency, fails inside its own
    hashing on any other (this pipeline's index would cope). By name alone: seconds for ImageNet's 1.3 M files."""
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:  # os.walk keeps undecodable bytes as lone surrogates
                shown = os.fsencode(os.path.join(folder, name))
                raise ValueError(f"data.root: the name {shown!r} is not UTF-8, which DVC cannot hash: rename it (e.g. "
                                 f"`convmv -f latin1 -t utf-8 -r --notest {root}`)") from None


def count_images(root: str | Path, split: str, limit: int) -> tuple[int, int]:
    """(class folders, image files up to `limit`) of `root/split`, by name alone and stopping at `limit`: cheap
    enough to check batch sizes before any stage runs (ImageNet stops inside its first class). Unreadable files are
    counted, so the indexing stage still checks the usable count."""
    if not (Path(root) / split).is_dir():
        raise FileNotFoundError(f"data.root: expected a '{split}' folder of class folders in {str(root)!r}")
    folders = sorted(p for p in (Path(root) / split).iterdir() if p.is_dir() and not is_hidden(p))
    found = 0
    for folder in folders:  # one class folder at a time: ImageNet's first one holds more than any batch
        found += sum(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder_files(folder)[0])
        if found >= limit:
            break
    return len(folders), found

