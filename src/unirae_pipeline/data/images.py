"""Image sets on disk: an index of (file, label) per split over an ImageFolder tree, and a torch Dataset on it."""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .shapes import ShapesConfig

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
# file names are bytes on POSIX: the ones that are not UTF-8 travel through the index as Python decoded them
NAMES = {"encoding": "utf-8", "errors": "surrogateescape"}
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class DataConfig:
    """`source`: `shapes` (the built-in set, sized by `shapes`) or `imagefolder` (an ImageNet-style tree at `root`)."""

    source: str
    image_size: int
    root: str | None
    lineage: str  # what DVC hashes as this data (a dependency of prepare_data): `root`, or the built-in generator
    shapes: ShapesConfig | None

    def __post_init__(self) -> None:
        if self.source not in ("shapes", "imagefolder"):
            raise ValueError(f"data.source must be 'shapes' or 'imagefolder', got {self.source!r}")
        if self.image_size < 8:
            raise ValueError(f"data.image_size must be >= 8, got {self.image_size}")
        if self.source == "shapes" and self.shapes is None:
            raise ValueError("data.shapes must hold the built-in data set's sizes when data.source is 'shapes'")
        if self.source == "imagefolder" and not self.root:
            raise ValueError("data.root must name the ImageFolder tree when data.source is 'imagefolder'")
        if self.source == "imagefolder" and Path(self.lineage) != Path(self.root):
            raise ValueError(f"data.lineage {self.lineage!r} must be data.root {self.root!r} (conf/data sets it to "
                             "${.root}): DVC would track another tree than the one the pipeline reads")

    def check_environment(self) -> None:
        """The ImageFolder tree exists (checked when a stage that reads `data` starts)."""
        if self.source == "imagefolder" and not Path(self.root).is_dir():
            raise FileNotFoundError(f"data.root: ImageFolder path {self.root!r} does not exist or is not a directory")


@dataclass
class ImageSplit:
    files: list[str]  # relative to the image set's root, or absolute
    labels: np.ndarray
    stamps: list[str] | None = None  # "<size>:<mtime_ns>" of each file of an external tree: a file overwritten in
    # place changes the index, so the stages that read it rerun and re-encode it

    def __len__(self) -> int:
        return len(self.files)


@dataclass
class ImageSet:
    """Class names plus a train and a val index; `root` resolves relative file names."""

    root: Path
    class_names: list[str]
    splits: dict[str, ImageSplit]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def check_image(path: Path) -> str | None:
    """Why a file cannot be used (None if it can): it must be an image that decodes completely.

    Policy: unreadable, truncated or non-image files and decompression bombs are skipped; any mode (CMYK, grayscale,
    palette, RGBA: alpha dropped) is converted to RGB and any size is centre-cropped/resized at load time.
    """
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return "not an image file"
    try:
        with Image.open(path) as img:
            img.load()  # a full decode: verify() alone lets truncated JPEGs through
    except Image.DecompressionBombError:
        return "decompression bomb"
    except (OSError, SyntaxError, ValueError):
        return "corrupt or truncated"
    return None


def to_rgb(img: Image.Image) -> Image.Image:
    """Any image as 8-bit RGB, read by its real range: 16-bit integers scaled by 255/65535 (Pillow's own convert
    clips them: 40000 would be white), 32-bit integers likewise when any value exceeds 255, floats from [0, 1] (from
    [0, 255] when larger: Pillow would truncate 0.5 to black); alpha dropped, every other mode converted by Pillow."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        values = np.asarray(img, dtype=np.float64)
        peak = float(values.max()) if values.size else 0.0
        scale = (255.0 if peak <= 1 else 1.0) if img.mode == "F" else 1.0 if img.mode == "I" and peak <= 255 \
            else 255 / 65535
        img = Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")


def folder_files(folder: Path) -> tuple[list[Path], int, int]:
    """Every file under a (class) folder, sub-folders included (as torchvision's ImageFolder), hidden files and
    folders (`.ipynb_checkpoints`, `.DS_Store`) left out; with the counts of files found in sub-folders and of
    hidden entries left out."""
    found, nested, hidden = [], 0, 0
    for top, dirs, files in os.walk(folder, followlinks=True):
        hidden += sum(map(_hidden, map(Path, dirs))) + sum(map(_hidden, map(Path, files)))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        kept = [Path(top) / f for f in files if not f.startswith(".")]
        nested += len(kept) if Path(top) != folder else 0
        found += kept
    return sorted(found), nested, hidden


def count_images(root: str | Path, split: str, limit: int) -> tuple[int, int]:
    """(class folders, image files up to `limit`) of `root/split`, by name alone and stopping at `limit`: cheap
    enough to check batch sizes before any stage runs (ImageNet stops inside its first class). Unreadable files are
    counted, so the indexing stage still checks the usable count."""
    if not (Path(root) / split).is_dir():
        raise FileNotFoundError(f"data.root: expected a '{split}' folder of class folders in {str(root)!r}")
    folders = sorted(p for p in (Path(root) / split).iterdir() if p.is_dir() and not _hidden(p))
    found = 0
    for folder in folders:  # one class folder at a time: ImageNet's first one holds more than any batch
        found += sum(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder_files(folder)[0])
        if found >= limit:
            break
    return len(folders), found


def _stamp(path: Path) -> str:
    info = path.stat()
    return f"{info.st_size}:{info.st_mtime_ns}"


def scan_image_folder(root: str | Path, param: str = "data.root", workers: int | None = None,
                      stamps: bool = True) -> ImageSet:
    """Index `root/{train,val}/<class>/*` (the ImageNet layout), decoding every file once (`workers` threads, default
    one per core: ImageNet's 1.33 M files are minutes, not an hour) and skipping the unusable ones with a logged
    count. Fails early, naming `param`, on a bad tree or an empty class."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{param}: ImageFolder path {str(root)!r} does not exist or is not a directory")
    splits, names = {}, None
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            raise FileNotFoundError(f"{param}: expected a '{split}' folder in {str(root)!r}")
        folders = [p for p in split_dir.iterdir() if p.is_dir()]
        if ignored := sorted(p.name for p in folders if _hidden(p)):
            log.info("%s: hidden folders are not classes: %s", split_dir, ignored)
        classes = sorted(p.name for p in folders if not _hidden(p))
        if not classes:
            raise ValueError(f"{param}: no class folders in {str(split_dir)!r}")
        if names is not None and classes != names:
            raise ValueError(f"{param}: train and val have different class folders")
        names = classes
        files, labels, stamped, skipped, nested, hidden = [], [], [], Counter(), 0, 0
        with ThreadPoolExecutor(max(1, workers or os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
            for label, name in enumerate(classes):
                candidates, in_subfolders, left_out = folder_files(split_dir / name)
                nested, hidden, found = nested + in_subfolders, hidden + left_out, []
                for path, problem in zip(candidates, pool.map(check_image, candidates)):
                    if problem is None:
                        found.append(str(path.relative_to(root)))
                        stamped += [_stamp(path)] if stamps else []
                    else:
                        skipped[problem] += 1
                        log.debug("skipping %s: %s", path, problem)
                if not found:
                    raise ValueError(f"{param}: class folder {str(split_dir / name)!r} holds no usable images")
                files += found
                labels += [label] * len(found)
        if skipped:
            log.warning("%s/%s: skipped %d files (%s)", root, split, sum(skipped.values()), dict(skipped))
        if nested or hidden:
            log.info("%s/%s: %d files in sub-folders of class folders indexed with their class; %d hidden files "
                     "or folders left out", root, split, nested, hidden)
        splits[split] = ImageSplit(files, np.asarray(labels, dtype=np.int64), stamped if stamps else None)
    return ImageSet(root, names, splits)


@dataclass
class GeneratedImages:
    """An in-memory image set (the built-in data) waiting to be written as an ImageFolder tree."""

    class_names: list[str]
    arrays: dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (uint8 (N, H, W, 3), int64 labels)


def write_image_folder(root: Path, images: GeneratedImages) -> None:
    """Write the arrays as `root/<split>/<class>/<n>.png`."""
    for split, (arrays, labels) in images.arrays.items():
        for name in images.class_names:
            (root / split / name).mkdir(parents=True)
        for i, (img, label) in enumerate(zip(arrays, labels)):
            Image.fromarray(img).save(root / split / images.class_names[label] / f"{i:06d}.png", compress_level=1)


def save_index(image_set: ImageSet, path: Path, root: str) -> None:
    """Index files: classes.json, <split>.csv (file,label[,stamp]) and root.txt (relative roots resolve against
    `path`)."""
    (path / "classes.json").write_text(json.dumps(image_set.class_names, indent=1), encoding="utf-8")
    (path / "root.txt").write_text(root, encoding="utf-8", errors="surrogateescape")
    for split, data in image_set.splits.items():
        with open(path / f"{split}.csv", "w", newline="", **NAMES) as f:
            writer = csv.writer(f)
            columns = [data.files, data.labels.tolist(), *([data.stamps] if data.stamps is not None else [])]
            writer.writerow(["file", "label", "stamp"][: len(columns)])
            writer.writerows(zip(*columns))


def load_index(path: Path) -> ImageSet:
    splits = {}
    for split in SPLITS:
        with open(path / f"{split}.csv", newline="", **NAMES) as f:
            header, *rows = list(csv.reader(f))
        splits[split] = ImageSplit([r[0] for r in rows], np.asarray([int(r[1]) for r in rows], dtype=np.int64),
                                   [r[2] for r in rows] if "stamp" in header else None)
    root = Path((path / "root.txt").read_text(**NAMES))
    names = json.loads((path / "classes.json").read_text(encoding="utf-8"))
    return ImageSet(root if root.is_absolute() else path / root, names, splits)


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


def load_split_uint8(image_set: ImageSet, split: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split in memory as uint8 (N, 3, S, S) plus labels; for the small sets of the embedded default."""
    ds = ImageDataset(image_set, split, size)
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    return images, torch.from_numpy(ds.split.labels)
