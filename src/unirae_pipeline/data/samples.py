"""Generated images on disk, never whole in memory: shards written as they are made (a rerun keeps the complete
ones), and the ADM evaluator's npz (`arr_0`: uint8 NHWC images, `arr_1`: labels) streamed from them and read
back memory-mapped."""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..fileio import atomic_file, file_sha256, npz_member, seal_npz

log = logging.getLogger(__name__)


@dataclass
class SampleSet:
    """uint8 (N, H, W, 3) images as consecutive memory-mapped parts (shards or an npz member) and their labels."""

    parts: list[np.ndarray]
    labels: np.ndarray
    image_shape: tuple[int, int, int]
    cache: Path | None = field(default=None)  # the shard folder, removed once the npz is written

    def __post_init__(self) -> None:
        if sum(len(p) for p in self.parts) != len(self.labels):
            raise ValueError(f"{sum(len(p) for p in self.parts)} images for {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def chunks(self, size: int) -> Iterator[np.ndarray]:
        """Consecutive image blocks of at most `size`, in order."""
        for part in self.parts:
            for lo in range(0, len(part), size):
                yield np.array(part[lo: lo + size])  # a writable in-memory copy of the block

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The images at `rows` (a few, e.g. for a grid)."""
        bounds = np.cumsum([0] + [len(p) for p in self.parts])
        which = np.searchsorted(bounds, rows, side="right") - 1
        return np.stack([self.parts[w][r - bounds[w]] for r, w in zip(rows, which)]) if len(rows) else \
            np.zeros((0, *self.image_shape), np.uint8)


def write_shard(path: Path, images: np.ndarray) -> np.ndarray:
    """One shard as .npy, atomically, its checksum beside it (`<shard>.sha256`, written first: the shard's
    existence says both are complete); returned memory-mapped."""
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, images)
        with atomic_file(checksum_file(path)) as side:
            side.write_text(file_sha256(tmp) + "\n", encoding="utf-8")
    return read_shard(path)


def checksum_file(shard: Path) -> Path:
    return shard.with_name(shard.name + ".sha256")


def intact_shard(path: Path) -> bool:
    """Whether a shard kept from an interrupted run still matches its checksum: a damaged one is sampled again."""
    side = checksum_file(path)
    if side.is_file() and side.read_text(encoding="utf-8").strip() == file_sha256(path):
        return True
    log.warning("%s: does not match its checksum (%s); it is sampled again", path, side)
    return False


def read_shard(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r")


def write_adm_npz(path: Path, samples: SampleSet) -> None:
    """`np.savez(path, arr_0=images, arr_1=labels)` written block by block (stored, zip64): the layout the ADM
    evaluator and torch-fidelity read, at any size, with the memory of one shard."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
              "shape": (len(samples), *samples.image_shape)}
    with atomic_file(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            with zf.open(npz_member("arr_0.npy"), "w", force_zip64=True) as f:
                np.lib.format.write_array_header_2_0(f, header)
                for block in samples.chunks(1024):
                    f.write(block.tobytes())
            with zf.open(npz_member("arr_1.npy"), "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(samples.labels, dtype=np.int64))
        seal_npz(tmp)


def read_adm_npz(path: Path) -> SampleSet:
    """An ADM-layout npz with `arr_0` memory-mapped inside the zip (members must be stored, as np.savez does)."""
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        if "arr_0.npy" not in names:
            raise KeyError(f"{path} has no arr_0 (the ADM sample layout); members: {sorted(names)}")
        info = zf.getinfo("arr_0.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"{path}: arr_0 is compressed (np.savez_compressed); save it with np.savez")
        labels = np.load(zf.open("arr_1.npy")) if "arr_1.npy" in names else np.full(0, -1)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)  # the member's local header: name and extra-field lengths at bytes 26..29
        name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f"{path}: arr_0 has .npy format version {version}; expected 1.0 or 2.0")
        shape, fortran, dtype = readers[version](f)
        offset = f.tell()
    if dtype != np.uint8 or fortran or len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"{path}: arr_0 must be uint8 NHWC images, got {dtype} {shape}")
    images = np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=shape) if shape[0] else \
        np.zeros(shape, np.uint8)
    if len(labels) != shape[0]:
        labels = np.full(shape[0], -1)  # an unlabelled export (e.g. from another codebase)
    return SampleSet([images], labels, tuple(shape[1:]))
