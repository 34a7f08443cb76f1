"""Atomic, reproducible writes: every output appears complete or not at all (temp path in the same folder + rename),
with the permissions any other file of its folder would get (the umask's, not the temp file's owner-only mode), and
the same bytes for the same content, so that DVC never sees a change nobody made."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from safetensors.torch import save_file


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # zip members carry a date: a fixed one keeps npz files byte-identical


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp folder beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.chmod(tmp, 0o777 & ~UMASK)  # mkdtemp makes it owner-only
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temp file name beside `path`; renamed over `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    try:
        yield Path(name)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    os.chmod(name, 0o666 & ~UMASK)  # mkstemp makes it owner-only
    os.replace(name, path)


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """safetensors' `save_file`, atomically, with its metadata in sorted order (the library writes it in a hash order
    that changes from process to process, which would give identical tensors a new file hash) and a checksum of the
    whole file in it (`CHECKSUM`), which `verify_safetensors` checks."""
    if CHECKSUM in metadata:
        raise ValueError(f"{path}: the metadata key {CHECKSUM!r} is the file's checksum")
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata={**metadata, CHECKSUM: _BLANK})
        with open(tmp, "r+b") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
            header = {"__metadata__": dict(sorted(header.pop("__metadata__").items())), **header}
            text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
            if len(text) > size:  # the same entries in another order: never longer
                raise RuntimeError(f"{path}: the sorted safetensors header is longer than the original")
            text = text.ljust(size, b" ")  # the format pads its header with spaces
            f.seek(8)
            f.write(text)
            digest = _sha256(f, text)
            f.seek(8 + text.index(_field(_BLANK)))
            f.write(_field(digest))


CHECKSUM = "unirae.sha256"  # the safetensors metadata key of a file's checksum
_BLANK = "0" * 64  # the checksum's place while the file is hashed (the same length: the header keeps its size)
_CHUNK = 16 << 20


def _field(digest: str) -> bytes:
    return json.dumps({CHECKSUM: digest}, separators=(",", ":")).encode()[1:-1]


def _sha256(f, header: bytes) -> str:
    """SHA-256 of the header (its checksum blank) and the rest of the open file from its current position."""
    h = hashlib.sha256(header)
    while chunk := f.read(_CHUNK):
        h.update(chunk)  # hashlib releases the GIL: shards are verified in threads
    return h.hexdigest()


def verify_safetensors(path: str | Path, restore: str) -> None:
    """Refuse a safetensors file written here whose bytes no longer match its checksum (a flipped bit on disk, a
    truncated copy), naming the file and `restore`, how to get it back: no corrupt tensor reaches a result."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
        size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        text = f.read(size) if 0 < size <= path.stat().st_size - 8 else b""
        try:
            stored = json.loads(text)["__metadata__"][CHECKSUM]
        except (ValueError, KeyError, TypeError):
            stored = None
        if stored is None or _field(stored) not in text:
            raise CorruptFileError(f"{path}: no checksum could be read from its header (damaged, or written before "
                                   f"files carried one): {restore}")
        if _sha256(f, text.replace(_field(stored), _field(_BLANK), 1)) != stored:
            raise CorruptFileError(f"{path}: its content does not match its checksum (a flipped bit on disk or a "
                                   f"partial copy): {restore}")


class CorruptFileError(ValueError):
    """A file written by this pipeline whose bytes changed since."""


def npz_member(name: str) -> zipfile.ZipInfo:
    """A stored (uncompressed) member of an npz file, dated `ZIP_DATE`, as np.savez lays it out."""
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    return info


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """`np.savez(path, **arrays)`, atomically and byte-reproducibly (np.savez stamps each member with the time), sealed
    with its checksum (`seal_npz`)."""
    if NPZ_CHECKSUM in arrays:
        raise ValueError(f"{path}: the member {NPZ_CHECKSUM!r} is the file's checksum")
    with atomic_file(path) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key, value in arrays.items():
                with zf.open(npz_member(f"{key}.npy"), "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)
        seal_npz(tmp)


NPZ_CHECKSUM = "unirae.sha256"  # the npz member (np.load's key) holding the SHA-256 of every other member


def _npz_digest(zf: zipfile.ZipFile) -> str:
    h = hashlib.sha256()
    for info in zf.infolist():
        if info.filename != f"{NPZ_CHECKSUM}.npy":
            h.update(info.filename.encode() + b"\0")
            with zf.open(info) as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
    return h.hexdigest()


def seal_npz(path: str | Path) -> None:
    """Append the checksum member to a complete npz (readers of the ADM layout load `arr_0` and ignore it)."""
    with zipfile.ZipFile(path) as zf:
        digest = _npz_digest(zf)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open(npz_member(f"{NPZ_CHECKSUM}.npy"), "w") as f:
            np.lib.format.write_array(f, np.array(digest), allow_pickle=False)


def verify_npz(path: str | Path, restore: str) -> None:
    """Refuse an npz written here whose members no longer match its checksum (every byte read once; zip's own CRC
    of a member counts as a mismatch too)."""
    stored = same = None
    try:
        with zipfile.ZipFile(path) as zf:
            with zf.open(f"{NPZ_CHECKSUM}.npy") as f:
                stored = str(np.lib.format.read_array(f, allow_pickle=False))
            same = _npz_digest(zf) == stored
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile):
        pass  # a damaged directory or checksum member (stored None), or a member failing its CRC (same None)
    if stored is None:
        raise CorruptFileError(f"{path}: no checksum could be read from it (damaged, or written before files carried "
                               f"one): {restore}")
    if not same:
        raise CorruptFileError(f"{path}: its content does not match its checksum (a flipped bit on disk or a partial "
                               f"copy): {restore}")


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a whole file: the checksum of files without a metadata slot (.npy shards), kept beside them."""
    with open(path, "rb") as f:
        return _sha256(f, b"")


def png_info(image: Image.Image) -> PngInfo:
    """The image's string metadata (a grid's row labels) as PNG text chunks, in a fixed order: `save(pnginfo=...)`."""
    text = PngInfo()
    for key, value in sorted(image.info.items()):
        if isinstance(value, str):
            text.add_text(key, value)
    return text
