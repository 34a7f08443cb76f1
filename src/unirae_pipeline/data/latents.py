"""Cached RAE latents: sharded safetensors with labels, source rows, flip flags and the encoder fingerprint."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from ..fileio import atomic_dir, write_safetensors

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Shard:
    split: str
    latents: torch.Tensor  # (n, C, h, w), raw encoder output
    labels: torch.Tensor   # (n,) int64
    rows: torch.Tensor     # (n,) int64 row in the image index
    flip: torch.Tensor     # (n,) uint8, 1 = horizontally flipped image


def encode_block(encode: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[tuple], split: str, flips: bool,
                 dtype: torch.dtype, device: torch.device | str = "cpu") -> Shard:
    """Encode (images, labels, rows) batches into one shard; with `flips`, each batch is followed by its mirror.
    Images cross to `device` once (non-blocking from pinned memory) and are mirrored there."""
    parts = []
    for images, labels, rows in batches:
        images = images.to(device, non_blocking=True)
        for imgs, flag in [(images, 0)] + ([(images.flip(-1), 1)] if flips else []):
            z = encode(imgs).to(dtype).cpu()
            parts.append(Shard(split, z, labels.long(), rows.long(), torch.full((len(z),), flag, dtype=torch.uint8)))
    return Shard(split, *(torch.cat([getattr(p, k) for p in parts]) for k in ("latents", "labels", "rows", "flip")))


def encode_uint8(encoder: Callable[[torch.Tensor], torch.Tensor], precision: str,
                 device: torch.device | str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The encoder on uint8 images (already on `device`), scaled to [0, 1] there, under bf16 autocast if asked."""
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def encode(images: torch.Tensor) -> torch.Tensor:
        with autocast:
            return encoder(images.float() / 255)

    return encode


def save_shard(path: Path, shard: Shard, fingerprint: str) -> None:
    """One shard file, written atomically: a file that exists is complete."""
    tensors = {"latents": shard.latents.contiguous(), "labels": shard.labels, "rows": shard.rows, "flip": shard.flip}
    write_safetensors(path, tensors, {"fingerprint": fingerprint})


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

    def iter_shards(self, split: str) -> Iterator[dict[str, torch.Tensor]]:
        fingerprint = self.manifest["fingerprint"]
        for file in self.shard_files(split):
            with safe_open(str(file), framework="pt") as f:
                if f.metadata().get("fingerprint") != fingerprint:
                    raise ValueError(f"{file}: encoder fingerprint differs from the cache manifest")
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


class LatentRows(torch.utils.data.Dataset):
    """The rows of one split of a latent cache, read from the memory-mapped shard files: memory holds the labels and
    the batches in flight, never the cache. Keys are (row, draw) (see `training.data.KeyedBatches`); a batch is
    (raw latents in the cache's dtype, labels): normalizing is left to the training device."""

    def __init__(self, store: LatentStore, split: str) -> None:
        fingerprint = store.manifest["fingerprint"]
        self.files, labels = store.shard_files(split), []
        for file in self.files:
            with safe_open(str(file), framework="pt") as f:
                if f.metadata().get("fingerprint") != fingerprint:
                    raise ValueError(f"{file}: encoder fingerprint differs from the cache manifest")
                labels.append(f.get_tensor("labels"))
        self.labels = torch.cat(labels)
        self.bounds = torch.tensor([0] + [len(x) for x in labels]).cumsum(0)
        self._slices: list | None = None  # opened lazily, in the process (DataLoader worker) that reads

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, keys: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        if self._slices is None:
            self._handles = [safe_open(str(file), framework="pt") for file in self.files]
            self._slices = [h.get_slice("latents") for h in self._handles]
        rows = torch.tensor([row for row, _ in keys])
        shards = torch.searchsorted(self.bounds, rows, right=True) - 1
        offsets = rows - self.bounds[shards]
        x = torch.cat([self._slices[s][o: o + 1] for s, o in zip(shards.tolist(), offsets.tolist())])
        return x, self.labels[rows]

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([key])
        return x[0], y[0]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_slices": None, "_handles": None}  # file handles do not cross processes


class RunningMoments:
    """Exact streaming mean/variance per element (Chan et al. parallel merge, float64 accumulators)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def update(self, batch: torch.Tensor) -> None:
        x = batch.double()
        n = x.shape[0]
        mean = x.mean(0)
        m2 = ((x - mean) ** 2).sum(0)
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta ** 2 * (self.count * n / total)
        self.count = total

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, population variance) as float32, like the reference's `stat.pt`."""
        if self.mean is None:
            raise ValueError("no samples seen")
        return self.mean.float(), (self.m2 / self.count).float()


# The reference's epsilon inside the square root: z_norm = (z - mean) / sqrt(var + 1e-5).
STATS_EPS = 1e-5


def normalize(z: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    return (z - mean) / torch.sqrt(var + STATS_EPS)


def denormalize(z: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    return z * torch.sqrt(var + STATS_EPS) + mean


def norm_stats(stats: dict[str, torch.Tensor], latent_norm: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, var) for `normalize`/`denormalize` under `diffusion.latent_norm`: `var` scales only (a zero mean, as
    the reference treats statistics without one), `mean_var` also centres; `TransportConfig` validates the value."""
    var = stats["var"]
    return (stats["mean"] if latent_norm == "mean_var" else torch.zeros_like(var)), var


@dataclass(frozen=True)
class CacheConfig:
    """How `cache_latents` runs: encoder batch, images per shard, storage dtype, encoder precision (fp32: TF32 on a
    GPU, as the reference; bf16: autocast, about twice the rate), and whether the train images are also cached
    mirrored (`hflip`, as the reference's random flip; off for data whose classes are not
    mirror-symmetric: handwriting, text, some medical or satellite images)."""

    batch_size: int
    shard_size: int
    dtype: str
    precision: str
    hflip: bool

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"latents.dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"latents.precision must be fp32 or bf16, got {self.precision!r}")
        if not isinstance(self.hflip, bool):
            raise ValueError(f"latents.hflip must be true or false, got {self.hflip!r}")
        if self.batch_size < 1 or self.shard_size < 1:
            raise ValueError("latents.batch_size and latents.shard_size must be >= 1")
