"""Resume checkpoints are checked before a run uses them: a damaged one is set aside, one holding code is refused."""

from __future__ import annotations

import logging
import pickle
import time
import zipfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def intact(path: Path, name: str) -> bool:
    """Whether a resume checkpoint reads back whole (torch's zip format, every member's CRC checked: a kill while
    it was written leaves it truncated) and holds tensors and plain values only (unpickled weights-only, whatever
    the installed Lightning and torch would do by default). A damaged one is set aside beside it, named in the log,
    and not used; one holding other objects is refused."""
    try:
        with zipfile.ZipFile(path) as archive:
            intact = archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        intact = False
    if intact:
        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # the pickle only: tensors stay on disk
        except pickle.UnpicklingError as err:
            raise ValueError(f"{path}: this resume checkpoint holds objects other than tensors and plain values, so it "
                             f"is not loaded ({str(err).splitlines()[0]}); delete it to train from step 0") from None
        return True
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    path.rename(aside)
    log.warning("%s: the resume checkpoint %s is damaged (a kill while it was written?); set aside as %s, training "
                "starts from step 0", name, path, aside.name)
    return False
