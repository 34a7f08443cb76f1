"""Released RAE checkpoints, converted on load (point `dit`, `decoder`, `latent_stats` at them in conf/local)."""

from __future__ import annotations

import json
from typing import Any

from kedro.io import DatasetError

from ..models.official import load_official_decoder, load_official_dit, load_official_stats, read_checkpoint
from ..models.serialization import Blob, to_blob
from .datasets import _PathDataset

OFFICIAL_FINGERPRINT = "official-rae"  # the released decoder, statistics and DiT-DH share one encoder (DINOv2-B)


class OfficialModelDataset(_PathDataset):
    """A released RAE checkpoint (`kind`: dit, decoder or stats), converted on load into the pipeline's own format.

    Point the `dit`, `decoder` and `latent_stats` entries at the released files in `conf/local/catalog.yml`
    to sample with the official models; `params` are the official config's keyword arguments. Read-only.
    """

    def __init__(self, *, filepath: str, kind: str, params: dict | None = None, metadata: dict | None = None) -> None:
        super().__init__(filepath=filepath, metadata=metadata)
        if kind not in ("dit", "decoder", "stats"):
            raise DatasetError(f"OfficialModelDataset kind must be dit, decoder or stats, got {kind!r}")
        self._kind, self._params = kind, dict(params or {})

    def _write(self, data: Any) -> None:
        raise DatasetError(f"{self._filepath} is a released checkpoint; the pipeline does not overwrite it")

    def load(self) -> Blob:
        state = read_checkpoint(self._require())
        if self._kind == "stats":
            stats = load_official_stats(state)
            return stats, {"fingerprint": json.dumps(OFFICIAL_FINGERPRINT), "count": json.dumps(0)}
        if self._kind == "dit":
            model = load_official_dit(state, **self._params)
            shape = [model.in_channels, model.input_size, model.input_size]
            return to_blob(model, config=model.cfg.to_dict(), latent_shape=shape, num_classes=model.num_classes,
                           fingerprint=OFFICIAL_FINGERPRINT, seed=0)
        model = load_official_decoder(state, **self._params)
        return to_blob(model, config=model.cfg.to_dict(), latent_shape=[model.latent_dim, model.grid, model.grid],
                       fingerprint=OFFICIAL_FINGERPRINT)
