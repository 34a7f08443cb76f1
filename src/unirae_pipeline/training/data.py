"""Batch streams for Lightning: endless, seeded, rank-aware and resumable (`start` skips batches).

`TensorBatches` indexes tensors held in memory (whole-batch indexing, no per-sample collation); `KeyedBatches`
reads a map-style dataset in DataLoader workers: random crops of image files (`data.crops.RandomCrops`) or rows of
memory-mapped latent shards (`data.latent_rows.LatentRows`), so that memory does not grow with the data set.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def batch_indices(n: int, batch_size: int, seed: int, start: int,
                  views: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, int]]:
    """(this rank's rows, the stream position of its first row) from global batch `start` on. An epoch visits each of
    the `n` items once: every rank draws the same permutation per epoch (seed + epoch) and takes its own slice of
    each global batch; the last partial global batch of an epoch is dropped. With `views` (n, V), item i is stored
    as the V rows views[i] (plain and mirrored latents) and each epoch reads one of them, drawn per item (the
    reference's random horizontal flip): an epoch is one pass over the images, not over their stored copies."""
    if views is not None and len(views) != n:
        raise ValueError(f"views cover {len(views)} items, expected {n}")
    world, rank = _world()
    step = batch_size * world
    per_epoch = n // step
    if per_epoch < 1:
        raise ValueError(f"the global batch {step} exceeds the data set size {n}")
    epoch, first = divmod(start, per_epoch)
    while True:
        generator = torch.Generator().manual_seed(seed + epoch)
        perm = torch.randperm(n, generator=generator)
        if views is not None:
            perm = views[perm, torch.randint(views.shape[1], (n,), generator=generator)]
        for i in range(first, per_epoch):
            lo = i * step + rank * batch_size
            yield perm[lo: lo + batch_size], (epoch * per_epoch + i) * step + rank * batch_size
        epoch, first = epoch + 1, 0


def check_batch_size(num_samples: int, batch_size: int, key: str) -> None:
    """The one check of a batch against the data it is drawn from (each epoch drops its last partial batch), at the
    place that knows both numbers; `key` names the batch size's params key. check_params makes the same comparison
    earlier where it can count the images by name."""
    if num_samples < batch_size:
        raise ValueError(f"{key} {batch_size} exceeds the data set size {num_samples}")


class TensorBatches(torch.utils.data.IterableDataset):
    """Shuffled batches of aligned in-memory tensors; `views` as in `batch_indices` (rows of the tensors); `key`
    names the batch size's params key in errors."""

    def __init__(self, tensors: tuple[torch.Tensor, ...], batch_size: int, seed: int,
                 views: torch.Tensor | None = None, *, key: str = "batch size") -> None:
        super().__init__()
        if any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError("all tensors must have the same length")
        self.tensors, self.batch_size, self.seed, self.views = tensors, batch_size, seed, views
        check_batch_size(self.num_samples, batch_size, key)
        self.start = 0

    @property
    def num_samples(self) -> int:
        """Items per epoch: images, however many stored views each has."""
        return len(self.tensors[0]) if self.views is None else len(self.views)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for idx, _ in batch_indices(self.num_samples, self.batch_size, self.seed, self.start, self.views):
            yield tuple(t[idx] for t in self.tensors)

    def loader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(self, batch_size=None, num_workers=0)


def _as_batch(batch):
    """The loader's collate step for datasets that build whole batches themselves (`__getitems__`)."""
    return batch


class KeyedBatches(torch.utils.data.Sampler):
    """Batch sampler of (row, draw) keys over a map-style dataset, with the permutation stream of `batch_indices`
    (drawn in the main process, so that it knows its DDP rank); `draw` numbers every sample of the stream, for
    per-sample randomness that does not depend on the number of workers. Items are read in `num_workers` processes;
    `views` as in `batch_indices` (rows of the dataset); `key` names the batch size's params key in errors."""

    def __init__(self, dataset: torch.utils.data.Dataset, batch_size: int, seed: int, num_workers: int = 0,
                 views: torch.Tensor | None = None, *, key: str = "batch size") -> None:
        self.dataset, self.batch_size, self.seed, self.num_workers = dataset, batch_size, seed, num_workers
        self.views = views
        check_batch_size(self.num_samples, batch_size, key)
        self.start = 0

    @property
    def num_samples(self) -> int:
        """Items per epoch: images, however many stored views each has."""
        return len(self.dataset) if self.views is None else len(self.views)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:  # endless: no __len__, the trainer counts steps
        for idx, position in batch_indices(self.num_samples, self.batch_size, self.seed, self.start, self.views):
            yield [(int(r), position + j) for j, r in enumerate(idx)]

    def loader(self) -> torch.utils.data.DataLoader:
        whole = hasattr(self.dataset, "__getitems__")  # builds a batch at once; else per-item + default collate
        return torch.utils.data.DataLoader(self.dataset, batch_sampler=self, num_workers=self.num_workers,
                                           collate_fn=_as_batch if whole else None,
                                           pin_memory=torch.cuda.is_available(),
                                           persistent_workers=self.num_workers > 0)
