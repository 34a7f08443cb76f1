"""Image sets on disk: an index of (file, label) per split over an ImageFolder tree, how it is scanned, written and
read (every stage that reads `image_set` runs this code through its dataset class)."""

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
from PIL import Image

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
# file names are bytes on POSIX: the ones that are not UTF-8 travel through the index as Python decoded them
NAMES = {"encoding": "utf-8", "errors": "surrogateescape"}
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


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


def is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def folder_files(folder: Path) -> tuple[list[Path], int, int]:
    """Every file under a (class) folder, sub-folders included (as torchvision's ImageFolder), hidden files and
    folders (`.ipynb_checkpoints`, `.DS_Store`) left out; with the counts of files found in sub-folders and of
    hidden entries left out."""
    found, nested, hidden = [], 0, 0
    for top, dirs, files in os.walk(folder, followlinks=True):
        hidden += sum(map(is_hidden, map(Path, dirs))) + sum(map(is_hidden, map(Path, files)))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        kept = [Path(top) / f for f in files if not f.startswith(".")]
        nested += len(kept) if Path(top) != folder else 0
        found += kept
    return sorted(found), nested, hidden


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
        if ignored := sorted(p.name for p in folders if is_hidden(p)):
            log.info("%s: hidden folders are not classes: %s", split_dir, ignored)
        classes = sorted(p.name for p in folders if not is_hidden(p))
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
