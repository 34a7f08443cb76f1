"""Training rows of a latent cache, read from its memory-mapped shards (train_dit)."""

from __future__ import annotations

import torch
from safetensors import safe_open

from .latents import LatentStore


class LatentRows(torch.utils.data.Dataset):
    """The rows of one split of a latent cache, read from the memory-mapped shard files: memory holds the labels and
    the batches in flight, never the cache. Keys are (row, draw) (see `training.data.KeyedBatches`); a batch is
    (raw latents in the cache's dtype, labels): normalizing is left to the training device."""

    def __init__(self, store: LatentStore, split: str) -> None:
        self.files, labels = store.checked_files(split), []  # every byte once per run, not per row and epoch
        for file in self.files:
            with safe_open(str(file), framework="pt") as f:
                labels.append(f.get_tensor("labels"))
        self.labels = torch.cat(labels)
        self.bounds = torch.tensor([0] + [len(x) for x in labels]).cumsum(0)
        self._slices: list | None = None  # opened lazily, in the process (DataLoader worker) that reads

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, keys: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        if self._slices is None:
            self._handles = [safe_open(str(file), framework="pt") for file in self.files]
            self._slices = [h.get_slice("latents") for h in self._handles]
        rows = torch.tensor([row for row, _ in keys])
        shards = torch.searchsorted(self.bounds, rows, right=True) - 1
        offsets = rows - self.bounds[shards]
        x = torch.cat([self._slices[s][o: o + 1] for s, o in zip(shards.tolist(), offsets.tolist())])
        return x, self.labels[rows]

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([key])
        return x[0], y[0]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_slices": None, "_handles": None}  # file handles do not cross processes
