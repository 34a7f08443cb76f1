"""The latent store: cached RAE latents as sharded safetensors (latents, labels, source rows, flip flags, the encoder
fingerprint) with a manifest, as `cache_latents` moves them in and the training stages read them."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from ..fileio import atomic_dir, verify_safetensors

log = logging.getLogger(__name__)


@dataclass
class LatentCache:
    """What `cache_latents` returns: the folder of its complete shard files, their count per split, the manifest."""

    folder: Path
    shards: dict[str, int]
    meta: dict


class LatentStore:
    """A directory `<split>/shard_NNNNN.safetensors` + `manifest.json` (fingerprint, shape, counts)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def manifest(self) -> dict:
        file = self.path / "manifest.json"
        if not file.is_file():
            raise FileNotFoundError(f"no latent cache at {self.path} (run the cache_latents stage)")
        return json.loads(file.read_text(encoding="utf-8"))

    def assemble(self, folder: Path, shards: dict[str, int], meta: dict) -> None:
        """Move the complete shard files `folder/<split>/shard_NNNNN.safetensors` (`shards[split]` of them) into the
        store at once, with the manifest; then remove `folder`."""
        counts: dict[str, list[int]] = {}
        with atomic_dir(self.path) as tmp:
            for split, n in shards.items():
                (tmp / split).mkdir()
                for k in range(n):
                    src = folder / split / f"shard_{k:05d}.safetensors"
                    with safe_open(str(src), framework="pt") as f:
                        counts.setdefault(split, []).append(f.get_slice("labels").get_shape()[0])
                    shutil.move(src, tmp / split / src.name)
            _write_manifest(tmp, meta, counts)
        shutil.rmtree(folder, ignore_errors=True)

    def shard_files(self, split: str) -> list[Path]:
        info = self.manifest["splits"].get(split)
        if info is None:
            raise KeyError(f"latent cache at {self.path} has no split {split!r}")
        return [self.path / split / f"shard_{i:05d}.safetensors" for i in range(len(info["shards"]))]

    def restore(self) -> str:
        return (f"restore the cache with `dvc checkout {self.path}` (DVC's cache keeps the committed copy) or rerun "
                "cache_latents (`dvc repro -f -s cache_latents`)")

    def check_shard(self, file: Path, fingerprint: str) -> Path:
        """A shard file after checking its checksum (every byte: once per shard and run) and its encoder."""
        verify_safetensors(file, self.restore())
        with safe_open(str(file), framework="pt") as f:
            if f.metadata().get("fingerprint") != fingerprint:
                raise ValueError(f"{file}: encoder fingerprint differs from the cache manifest; {self.restore()}")
        return file

    def checked_files(self, split: str, workers: int = 8) -> list[Path]:
        """The split's shard files, each checked (`check_shard`) in threads (hashing releases the GIL): what a
        training run reads row by row, memory-mapped, for many epochs."""
        fingerprint, files = self.manifest["fingerprint"], self.shard_files(split)
        with ThreadPoolExecutor(max(1, min(workers, len(files)))) as pool:
            return list(pool.map(lambda file: self.check_shard(file, fingerprint), files))

    def iter_shards(self, split: str) -> Iterator[dict[str, torch.Tensor]]:
        """Each shard whole, checked as it is opened (readers that stream the cache once)."""
        fingerprint = self.manifest["fingerprint"]
        for file in self.shard_files(split):
            with safe_open(str(self.check_shard(file, fingerprint)), framework="pt") as f:
                yield {k: f.get_tensor(k) for k in f.keys()}

    def views(self, split: str) -> torch.Tensor:
        """(images, V) rows of each image's latents in the split: [plain] or [plain, mirrored] (see `view_table`);
        reads the small row and flip columns only."""
        rows, flips = [], []
        for file in self.shard_files(split):
            with safe_open(str(file), framework="pt") as f:
                rows.append(f.get_tensor("rows"))
                flips.append(f.get_tensor("flip"))
        return view_table(torch.cat(rows), torch.cat(flips))

    def load(self, split: str, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """A whole split in memory (the embedded default's data sets are small)."""
        parts = list(self.iter_shards(split))
        out = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        out["latents"] = out["latents"].to(dtype)
        return out


def view_table(rows: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """(images, V) positions of each image's stored latents: column 0 plain, column 1 mirrored when the cache holds
    mirrors (V = 2), from the per-latent image `rows` and `flip` flags. Training reads one view per image and epoch."""
    images, views = int(rows.max()) + 1, int(flip.max()) + 1
    table = torch.full((images, views), -1, dtype=torch.long)
    table[rows.long(), flip.long()] = torch.arange(len(rows))
    if (table < 0).any() or len(rows) != images * views:
        raise ValueError(f"latent cache: {len(rows)} latents do not hold each of {images} images in {views} "
                         "view(s) exactly once; re-run cache_latents")
    return table


def _write_manifest(folder: Path, meta: dict, counts: dict[str, list[int]]) -> None:
    manifest = {**meta, "splits": {k: {"count": sum(v), "shards": v} for k, v in counts.items()}}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    log.info("latent cache: %s", {k: v["count"] for k, v in manifest["splits"].items()})
