"""Batch streams for Lightning: endless, seeded, rank-aware and resumable (`start` skips batches).

`TensorBatches` indexes tensors held in memory (whole-batch indexing, no per-sample collation); `CropBatches`
decodes image files in DataLoader workers with the reference stage-1 augmentation (resize, random crop).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def batch_indices(n: int, batch_size: int, seed: int, start: int) -> Iterator[tuple[torch.Tensor, int]]:
    """(this rank's rows, the stream position of its first row) from global batch `start` on. Every rank draws the
    same permutation per epoch (seed + epoch) and takes its own slice of each global batch; the last partial global
    batch of an epoch is dropped."""
    world, rank = _world()
    step = batch_size * world
    per_epoch = n // step
    if per_epoch < 1:
        raise ValueError(f"the global batch {step} exceeds the data set size {n}")
    epoch, first = divmod(start, per_epoch)
    while True:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
        for i in range(first, per_epoch):
            lo = i * step + rank * batch_size
            yield perm[lo: lo + batch_size], (epoch * per_epoch + i) * step + rank * batch_size
        epoch, first = epoch + 1, 0


class TensorBatches(torch.utils.data.IterableDataset):
    """Shuffled batches of aligned in-memory tensors."""

    def __init__(self, tensors: tuple[torch.Tensor, ...], batch_size: int, seed: int) -> None:
        super().__init__()
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError("all tensors must have the same length")
        if n < batch_size:
            raise ValueError(f"batch size {batch_size} exceeds the data set size {n}")
        self.tensors, self.batch_size, self.seed = tensors, batch_size, seed
        self.start = 0

    @property
    def num_samples(self) -> int:
        return len(self.tensors[0])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for idx, _ in batch_indices(self.num_samples, self.batch_size, self.seed, self.start):
            yield tuple(t[idx] for t in self.tensors)

    def loader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(self, batch_size=None, num_workers=0)


class CropBatches(torch.utils.data.Sampler):
    """Batch sampler of (row, draw) keys of a map-style image dataset (`data.images.RandomCrops`), with the
    permutation stream of `batch_indices`; the images are decoded in `num_workers` processes."""

    def __init__(self, crops: torch.utils.data.Dataset, batch_size: int, seed: int, num_workers: int = 0) -> None:
        if len(crops) < batch_size:
            raise ValueError(f"batch size {batch_size} exceeds the data set size {len(crops)}")
        self.crops, self.batch_size, self.seed, self.num_workers = crops, batch_size, seed, num_workers
        self.start = 0

    @property
    def num_samples(self) -> int:
        return len(self.crops)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:  # endless: no __len__, the trainer counts steps
        for idx, position in batch_indices(self.num_samples, self.batch_size, self.seed, self.start):
            yield [(int(r), position + j) for j, r in enumerate(idx)]  # one draw per sample of the stream

    def loader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(self.crops, batch_sampler=self, num_workers=self.num_workers,
                                           pin_memory=torch.cuda.is_available(),
                                           persistent_workers=self.num_workers > 0)
