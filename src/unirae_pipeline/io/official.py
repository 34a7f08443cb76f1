"""Released RAE and RAEv2 checkpoints, converted on load (point `dit`, `decoder`, `latent_stats` at them in
conf/local): the references' files, and diffusers `AutoencoderRAE` folders."""

from __future__ import annotations

from typing import Any

from kedro.io import DatasetError

from ..interop.diffusers import load_diffusers_decoder, load_diffusers_stats
from ..interop.diffusers_folder import DiffusersRAE
from ..interop.official import (
    load_official_decoder,
    load_official_dit,
    load_official_stats,
    load_raev2_decoder,
    load_raev2_dit,
    read_checkpoint,
)
from ..models.decoder import decoder_file
from ..models.dit import dit_file
from ..models.serialization import ModelFile
from .datasets import _PathDataset

OFFICIAL_FINGERPRINT = "official-rae"  # a released decoder, its statistics and DiT-DH share one encoder
RAEV2_FINGERPRINT = "official-raev2"   # RAEv2's release: DINOv3-L K = 7 latents, never mixed with RAE's
LOADERS = {"dit": load_official_dit, "decoder": load_official_decoder,
           "raev2_dit": load_raev2_dit, "raev2_decoder": load_raev2_decoder}
KINDS = (*LOADERS, "stats", "raev2_stats")


class OfficialModelDataset(_PathDataset):
    """A released checkpoint, converted on load into the pipeline's own format: RAE's (`kind`: dit, decoder or
    stats) or RAEv2's (raev2_dit, raev2_decoder, raev2_stats).

    Point the `dit`, `decoder` and `latent_stats` entries at the released files in `conf/local/catalog.yml`
    to sample with the official models; `params` are the official config's keyword arguments. Read-only.
    """

    def __init__(self, *, filepath: str, kind: str, params: dict | None = None, metadata: dict | None = None) -> None:
        super().__init__(filepath=filepath, metadata=metadata)
        if kind not in KINDS:
            raise DatasetError(f"OfficialModelDataset kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self._kind, self._params = kind, dict(params or {})

    def _write(self, data: Any) -> None:
        raise DatasetError(f"{self._filepath} is a released checkpoint; the pipeline does not overwrite it")

    def load(self) -> ModelFile:
        state = read_checkpoint(self._require())
        fingerprint = RAEV2_FINGERPRINT if self._kind.startswith("raev2_") else OFFICIAL_FINGERPRINT
        if self._kind.endswith("stats"):
            return ModelFile("stats", load_official_stats(state), {"fingerprint": fingerprint, "count": 0})
        model = LOADERS[self._kind](state, **self._params)
        if self._kind.endswith("dit"):
            shape = [model.in_channels, model.input_size, model.input_size]
            return dit_file(model, latent_shape=shape, num_classes=model.num_classes, fingerprint=fingerprint, seed=0)
        return decoder_file(model, fingerprint)


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
