"""Generated samples (`samples`, `samples_untrained`) in the ADM evaluator's npz layout."""

from __future__ import annotations

import shutil

from ..data.samples import SampleSet, read_adm_npz, write_adm_npz
from ..fileio import verify_npz
from ..models.serialization import restore
from .datasets import _PathDataset


class SamplesDataset(_PathDataset):
    """Generated samples as the ADM evaluator's npz (arr_0 uint8 NHWC, arr_1 labels), written block by block from
    the sampler's shards (whose cache folder is then removed) and read back memory-mapped."""

    def _write(self, data: SampleSet) -> None:
        write_adm_npz(self._filepath, data)
        if data.cache is not None:
            shutil.rmtree(data.cache, ignore_errors=True)

    def load(self) -> SampleSet:
        verify_npz(self._require(), restore(self._filepath))
        return read_adm_npz(self._filepath)
