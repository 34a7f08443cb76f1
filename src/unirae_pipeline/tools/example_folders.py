"""Write a real image set shipped inside a Python package as an ImageFolder tree, to try `data=folder` on images
nobody here made (README: "Your own images"; the measurements there were made on these).

    python -m unirae_pipeline.tools.example_folders digits /tmp/digits   # scikit-learn: 1,797 handwritten digits
    python -m unirae_pipeline.tools.example_folders faces /tmp/faces     # scikit-image: 100 LFW faces, 100 non-faces

`digits` are 8x8 scans in 10 classes, not mirror symmetric (a mirrored 3 is no digit); `faces` are 25x25 natural
photos in 2 classes (faces and patches of other photos), mirror symmetric. Each class is split into train/ and val/
by a seeded permutation (`--val-fraction`). Needs the `examples` extra (scikit-learn, scikit-image); nothing is
downloaded: both sets are files inside those packages.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)


def digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """scikit-learn's copy of the UCI optical digits test set: (1797, 8, 8) uint8 images, labels, class names."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.rint(data.images * (255 / 16)).astype(np.uint8)  # 17 grey levels, 0..16
    return images, data.target, [str(k) for k in range(10)]


def faces() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """scikit-image's LFW subset: (200, 25, 25) uint8, the first 100 faces, the other 100 non-faces."""
    from skimage.data import lfw_subset

    images = np.rint(lfw_subset() * 255).astype(np.uint8)
    return images, np.repeat([0, 1], 100), ["face", "non_face"]


SETS = {"digits": digits, "faces": faces}


def write_folder(name: str, root: Path, val_fraction: float = 0.2, seed: int = 0) -> dict[str, int]:
    """The set `name` as root/{train,val}/<class>/<index>.png; returns the image count of each split."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty: choose a new folder")
    images, labels, classes = SETS[name]()
    rng = np.random.default_rng(seed)
    counts = {"train": 0, "val": 0}
    for k, cls in enumerate(classes):
        rows = rng.permutation(np.flatnonzero(labels == k))
        val = max(1, round(val_fraction * len(rows)))
        for split, part in (("val", rows[:val]), ("train", rows[val:])):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for row in part:
                Image.fromarray(images[row]).save(folder / f"{row}.png")
            counts[split] += len(part)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(SETS))
    parser.add_argument("root", type=Path, help="a new or empty folder")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    counts = write_folder(args.name, args.root, args.val_fraction, args.seed)
    log.info("%s: %d train and %d val images in %s (data.root)", args.name, counts["train"], counts["val"], args.root)


if __name__ == "__main__":
    main()
