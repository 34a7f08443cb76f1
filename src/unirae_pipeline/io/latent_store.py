"""The latent store (`latents`): the shards `cache_latents` encoded, moved in at once."""

from __future__ import annotations

from ..data.latents import LatentCache, LatentStore
from .datasets import _PathDataset


class LatentStoreDataset(_PathDataset):
    """Sharded safetensors latents (see `data.latents.LatentStore`): the encoded shards moved in at once."""

    def _write(self, data: LatentCache) -> None:
        LatentStore(self._filepath).assemble(data.folder, data.shards, data.meta)

    def load(self) -> LatentStore:
        self._require()
        return LatentStore(self._filepath)
