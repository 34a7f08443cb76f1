"""Kedro datasets of the generic formats (safetensors, npz, JSON, CSV, PNG) and their common base; every save is
atomic (see `fileio`). The pipeline's own stores have a module each (`image_set`, `latent_store`, `samples`,
`official`), so that a stage's DVC code dependencies hold only the dataset code it runs."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kedro.io import AbstractDataset, DatasetError
from PIL import Image

from ..fileio import NPZ_CHECKSUM, atomic_file, png_info, verify_npz, write_npz, write_safetensors
from ..models.serialization import KINDS, ModelFile, read_model_file, restore
from ..runtime.ranks import global_rank, is_rank_zero

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


class ModelFileDataset(_PathDataset):
    """A `ModelFile` (model weights or latent statistics: `kind`) as one safetensors file, each metadata value as its
    JSON text. An `optional` file that does not exist loads as None (the node that needs it says why)."""

    def __init__(self, *, filepath: str, kind: str, optional: bool = False, metadata: dict | None = None) -> None:
        super().__init__(filepath=filepath, metadata=metadata)
        if kind not in KINDS:
            raise DatasetError(f"ModelFileDataset kind must be one of {KINDS}, got {kind!r}")
        self.kind, self.optional = kind, optional

    def _write(self, data: ModelFile) -> None:
        data = data.expect(self.kind).check_finite(str(self._filepath))
        write_safetensors(self._filepath, data.tensors, data.encode())

    def load(self) -> ModelFile | None:
        if self.optional and not self._filepath.exists():
            return None
        return read_model_file(self._require(), self.kind, str(self._filepath))


class NpzDataset(_PathDataset):
    """A dict of numpy arrays (samples as uint8 NHWC, reference statistics)."""

    def _write(self, data: dict[str, np.ndarray]) -> None:
        write_npz(self._filepath, data)

    def load(self) -> dict[str, np.ndarray]:
        verify_npz(self._require(), restore(self._filepath))
        with np.load(self._filepath, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files if k != NPZ_CHECKSUM}


class JSONDataset(_PathDataset):
    """Metrics as JSON (DVC metrics files)."""

    def _write(self, data: dict) -> None:
        with atomic_file(self._filepath) as tmp:
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    def load(self) -> dict:
        return json.loads(self._require().read_text(encoding="utf-8"))


class CSVDataset(_PathDataset):
    """A table (loss curves: DVC plots)."""

    def _write(self, data: pd.DataFrame) -> None:
        with atomic_file(self._filepath) as tmp:
            data.to_csv(tmp, index=False)

    def load(self) -> pd.DataFrame:
        return pd.read_csv(self._require())


class PNGDataset(_PathDataset):
    """One image (sample and reconstruction grids), with its string metadata as PNG text chunks."""

    def _write(self, data: Image.Image) -> None:
        with atomic_file(self._filepath) as tmp:
            data.save(tmp, format="PNG", pnginfo=png_info(data))

    def load(self) -> Image.Image:
        with Image.open(self._require()) as img:
            return img.copy()



__all__ = ["CSVDataset", "JSONDataset", "ModelFileDataset", "NpzDataset", "PNGDataset"]
