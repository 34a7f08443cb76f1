"""In-memory batch streams for Lightning: whole-batch indexing instead of per-sample collation."""

from __future__ import annotations

from collections.abc import Iterator

import torch


class TensorBatches(torch.utils.data.IterableDataset):
    """Endless shuffled batches of aligned tensors; a new seeded permutation every epoch, last partial dropped."""

    def __init__(self, tensors: tuple[torch.Tensor, ...], batch_size: int, seed: int) -> None:
        super().__init__()
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError("all tensors must have the same length")
        if n < batch_size:
            raise ValueError(f"batch size {batch_size} exceeds the data set size {n}")
        self.tensors, self.batch_size, self.seed = tensors, batch_size, seed
        self.start = 0  # batches to skip: a resumed run continues the same stream

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        # Under DDP every rank draws the same global permutation and takes its own slice of each global batch.
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        world, rank = (torch.distributed.get_world_size(), torch.distributed.get_rank()) if distributed else (1, 0)
        n, step = len(self.tensors[0]), self.batch_size * world
        per_epoch = n // step
        if per_epoch < 1:
            raise ValueError(f"the global batch {step} exceeds the data set size {n}")
        epoch, first = divmod(self.start, per_epoch)
        while True:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + epoch))
            for i in range(first, per_epoch):
                lo = i * step + rank * self.batch_size
                idx = perm[lo: lo + self.batch_size]
                yield tuple(t[idx] for t in self.tensors)
            epoch, first = epoch + 1, 0


def loader(batches: TensorBatches) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(batches, batch_size=None, num_workers=0)
