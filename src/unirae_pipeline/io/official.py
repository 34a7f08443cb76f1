"""Released RAE checkpoints, converted on load (point `dit`, `decoder`, `latent_stats` at them in conf/local): the
reference's files, and diffusers `AutoencoderRAE` folders."""

from __future__ import annotations

from typing import Any

from kedro.io import DatasetError

from ..interop.diffusers import load_diffusers_decoder, load_diffusers_stats
from ..interop.diffusers_folder import DiffusersRAE
from ..interop.official import load_official_decoder, load_official_dit, load_official_stats, read_checkpoint
from ..models.decoder import decoder_file
from ..models.dit import dit_file
from ..models.serialization import ModelFile
from .datasets import _PathDataset

OFFICIAL_FINGERPRINT = "official-rae"  # a released decoder, its statistics and DiT-DH share one encoder


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

    def load(self) -> ModelFile:
        state = read_checkpoint(self._require())
        if self._kind == "stats":
            return ModelFile("stats", load_official_stats(state), {"fingerprint": OFFICIAL_FINGERPRINT, "count": 0})
        if self._kind == "dit":
            model = load_official_dit(state, **self._params)
            shape = [model.in_channels, model.input_size, model.input_size]
            return dit_file(model, latent_shape=shape,
                                num_classes=model.num_classes, fingerprint=OFFICIAL_FINGERPRINT, seed=0)
        return decoder_file(load_official_decoder(state, **self._params), OFFICIAL_FINGERPRINT)


class DiffusersRAEDataset(_PathDataset):
    """The decoder or the latent statistics (`kind`) of a diffusers `AutoencoderRAE` folder (`save_pretrained`), in
    the pipeline's own format; point `encoder.weights` at the same folder for its encoder. Read-only."""

    def __init__(self, *, filepath: str, kind: str, metadata: dict | None = None) -> None:
        super().__init__(filepath=filepath, metadata=metadata)
        if kind not in ("decoder", "stats"):
            raise DatasetError(f"DiffusersRAEDataset kind must be decoder or stats, got {kind!r}")
        self._kind = kind

    def _write(self, data: Any) -> None:
        raise DatasetError(f"{self._filepath} is a diffusers checkpoint; the pipeline does not overwrite it")

    def load(self) -> ModelFile:
        rae = DiffusersRAE(self._require(), f"diffusers RAE {self._filepath}")
        if self._kind == "stats":
            return ModelFile("stats", load_diffusers_stats(rae), {"fingerprint": OFFICIAL_FINGERPRINT, "count": 0})
        return decoder_file(load_diffusers_decoder(rae), OFFICIAL_FINGERPRINT)
