"""Kedro datasets for the pipeline's artefacts; every save is atomic (see `fileio`)."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kedro.io import AbstractDataset, DatasetError
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from ..data.images import GeneratedImages, ImageSet, load_index, save_index, scan_image_folder, write_image_folder
from ..data.latents import LatentStore
from ..data.samples import SampleSet, read_adm_npz, write_adm_npz
from ..fileio import atomic_dir, atomic_file
from ..models.official import load_official_decoder, load_official_dit, load_official_stats, read_checkpoint
from ..models.serialization import Blob, to_blob
from ..ranks import global_rank, is_rank_zero

log = logging.getLogger(__name__)


class _PathDataset(AbstractDataset):
    """Common part: one file or folder at `filepath`."""

    def __init__(self, *, filepath: str, metadata: dict | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "type": type(self).__name__}

    def _exists(self) -> bool:
        return self._filepath.exists()

    def save(self, data: Any) -> None:
        """Only the global rank zero writes: under DDP every rank runs the node, one writes its outputs."""
        if not is_rank_zero():
            log.info("rank %s: not saving %s (rank zero does)", global_rank(), self._filepath)
            return
        self._write(data)

    def _write(self, data: Any) -> None:
        raise DatasetError(f"{type(self).__name__} is read-only")

    def _require(self) -> Path:
        if not self._filepath.exists():
            raise DatasetError(f"{self._filepath} does not exist: run the stage that produces it first")
        return self._filepath


class ImageSetDataset(_PathDataset):
    """An image index folder. Saving a `GeneratedImages` also writes its PNG tree under `images/`;
    saving an `ImageSet` (an external ImageFolder) writes only the index with its absolute root."""

    def _write(self, data: GeneratedImages | ImageSet) -> None:
        with atomic_dir(self._filepath) as tmp:
            if isinstance(data, GeneratedImages):
                write_image_folder(tmp / "images", data)
                save_index(scan_image_folder(tmp / "images"), tmp, "images")
            else:
                save_index(data, tmp, str(Path(data.root).resolve()))

    def load(self) -> ImageSet:
        return load_index(self._require())


@dataclass
class LatentCache:
    """What `cache_latents` returns: the folder of its complete shard files, their count per split, the manifest."""

    folder: Path
    shards: dict[str, int]
    meta: dict


class LatentStoreDataset(_PathDataset):
    """Sharded safetensors latents (see `data.latents.LatentStore`): the encoded shards moved in at once."""

    def _write(self, data: LatentCache) -> None:
        LatentStore(self._filepath).assemble(data.folder, data.shards, data.meta)

    def load(self) -> LatentStore:
        self._require()
        return LatentStore(self._filepath)


class SafetensorsDataset(_PathDataset):
    """(tensors, str metadata) in one safetensors file: model weights and latent statistics. An `optional` file that
    does not exist loads as None (the node that needs it says why)."""

    def __init__(self, *, filepath: str, optional: bool = False, metadata: dict | None = None) -> None:
        super().__init__(filepath=filepath, metadata=metadata)
        self.optional = optional

    def _write(self, data: Blob) -> None:
        tensors, meta = data
        with atomic_file(self._filepath) as tmp:
            save_file(tensors, str(tmp), metadata=meta)

    def load(self) -> Blob | None:
        if self.optional and not self._filepath.exists():
            return None
        with safe_open(str(self._require()), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


class NpzDataset(_PathDataset):
    """A dict of numpy arrays (samples as uint8 NHWC, reference statistics)."""

    def _write(self, data: dict[str, np.ndarray]) -> None:
        with atomic_file(self._filepath) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **data)

    def load(self) -> dict[str, np.ndarray]:
        with np.load(self._require(), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}


class SamplesDataset(_PathDataset):
    """Generated samples as the ADM evaluator's npz (arr_0 uint8 NHWC, arr_1 labels), written block by block from
    the sampler's shards (whose cache folder is then removed) and read back memory-mapped."""

    def _write(self, data: SampleSet) -> None:
        write_adm_npz(self._filepath, data)
        if data.cache is not None:
            shutil.rmtree(data.cache, ignore_errors=True)

    def load(self) -> SampleSet:
        return read_adm_npz(self._require())


class JSONDataset(_PathDataset):
    """Metrics as JSON (DVC metrics files)."""

    def _write(self, data: dict) -> None:
        with atomic_file(self._filepath) as tmp:
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    def load(self) -> dict:
        return json.loads(self._require().read_text())


class CSVDataset(_PathDataset):
    """A table (loss curves: DVC plots)."""

    def _write(self, data: pd.DataFrame) -> None:
        with atomic_file(self._filepath) as tmp:
            data.to_csv(tmp, index=False)

    def load(self) -> pd.DataFrame:
        return pd.read_csv(self._require())


class PNGDataset(_PathDataset):
    """One image (sample and reconstruction grids)."""

    def _write(self, data: Image.Image) -> None:
        with atomic_file(self._filepath) as tmp:
            data.save(tmp, format="PNG")

    def load(self) -> Image.Image:
        with Image.open(self._require()) as img:
            return img.copy()



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


__all__ = ["CSVDataset", "ImageSetDataset", "JSONDataset", "LatentCache", "LatentStoreDataset", "NpzDataset",
           "OfficialModelDataset", "PNGDataset", "SafetensorsDataset", "SamplesDataset"]
