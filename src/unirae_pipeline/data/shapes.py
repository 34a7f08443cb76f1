"""The built-in data set: small class-conditional images of procedural shapes, deterministic from a seed.

Each image is a single anti-aliased shape on a black background. The class is the shape (10 kinds, all
mirror-symmetric so that a horizontal flip keeps the class); the nuisance is the colour (one of 6 saturated
palette colours with +-15 % brightness), a small size jitter and a position jitter of +-`jitter` pixels.
The class signal is designed to dominate the nuisance so that a tiny model can learn it on 2 CPU cores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PALETTE = np.array([[1, 0.15, 0.15], [0.15, 1, 0.15], [0.2, 0.35, 1], [1, 1, 0.15], [0.15, 1, 1], [1, 0.2, 1]],
                   dtype=np.float32)


def _circle(u, v):
    return u ** 2 + v ** 2 <= 1


def _ring(u, v):
    r = np.sqrt(u ** 2 + v ** 2)
    return (r >= 0.55) & (r <= 1)


def _square(u, v):
    return np.maximum(abs(u), abs(v)) <= 0.85


def _frame(u, v):
    m = np.maximum(abs(u), abs(v))
    return (m >= 0.5) & (m <= 0.9)


def _triangle_up(u, v):  # v grows downwards (image rows)
    return (v <= 0.8) & (abs(u) <= (v + 0.95) / 1.75)


def _triangle_down(u, v):
    return _triangle_up(u, -v)


def _diamond(u, v):
    return abs(u) + abs(v) <= 1


def _plus(u, v):
    return ((abs(u) <= 0.3) & (abs(v) <= 1)) | ((abs(v) <= 0.3) & (abs(u) <= 1))


def _cross(u, v):
    return ((abs(u - v) <= 0.42) | (abs(u + v) <= 0.42)) & (np.maximum(abs(u), abs(v)) <= 0.9)


def _stripes(u, v):
    return (abs(u) <= 0.9) & ((abs(v) <= 0.2) | (abs(abs(v) - 0.65) <= 0.2))


RENDER_CHUNK = 1024  # images drawn at once (their supersampled masks are float32)
MAX_BYTES = 4 << 30  # the built-in set lives in memory (uint8): e.g. 1.4 M images of 32 px

SHAPES = {f.__name__[1:]: f for f in (_circle, _ring, _square, _frame, _triangle_up, _triangle_down, _diamond,
                                       _plus, _cross, _stripes)}


@dataclass(frozen=True)
class ShapesConfig:
    """The `data.shapes` params group: the built-in set's sizes (its image size is `data.image_size`)."""

    num_classes: int
    train_per_class: int
    val_per_class: int
    jitter: float
    supersample: int

    def __post_init__(self) -> None:
        if not 1 <= self.num_classes <= len(SHAPES):
            raise ValueError(f"data.shapes.num_classes must be in [1, {len(SHAPES)}], got {self.num_classes}")
        if self.train_per_class < 1 or self.val_per_class < 1 or self.supersample < 1:
            raise ValueError("data.shapes: the per-class counts and supersample must be >= 1")

    def check_size(self, image_size: int) -> None:
        """The set is made in memory, before anything is written: refuse it here rather than run out of memory."""
        count = self.num_classes * (self.train_per_class + self.val_per_class)
        if count * image_size ** 2 * 3 > MAX_BYTES:
            raise ValueError(f"data.shapes: num_classes x (train_per_class + val_per_class) = {count:,} images of "
                             f"{image_size} px exceed the {MAX_BYTES >> 30} GiB the built-in set may hold in memory "
                             "(use data=folder for a large set)")


def class_names(cfg: ShapesConfig) -> list[str]:
    return list(SHAPES)[: cfg.num_classes]


def render(cfg: ShapesConfig, size: int, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one image per label: uint8 array (N, size, size, 3)."""
    n, ss = len(labels), cfg.supersample
    radius = size * (0.34 + 0.04 * rng.uniform(-1, 1, n))
    center = size / 2 + rng.uniform(-cfg.jitter, cfg.jitter, (n, 2))
    colour = PALETTE[rng.integers(0, len(PALETTE), n)] * rng.uniform(0.85, 1.0, (n, 1))
    coords = (np.arange(size * ss, dtype=np.float32) + 0.5) / ss
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for start in range(0, n, RENDER_CHUNK):  # the supersampled masks of a chunk at a time: memory is the output's
        part = slice(start, start + RENDER_CHUNK)
        u = (coords[None, None, :] - center[part, 0, None, None]) / radius[part, None, None]
        v = (coords[None, :, None] - center[part, 1, None, None]) / radius[part, None, None]
        mask = np.zeros((len(u), size * ss, size * ss), dtype=np.float32)
        for k, shape in enumerate(list(SHAPES.values())[: cfg.num_classes]):
            sel = labels[part] == k
            mask[sel] = shape(u[sel], v[sel])
        coverage = mask.reshape(len(u), size, ss, size, ss).mean(axis=(2, 4))  # box-filter anti-aliasing
        out[part] = np.round(coverage[..., None] * colour[part, None, None, :] * 255).astype(np.uint8)
    return out


def generate(cfg: ShapesConfig, image_size: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train': (images, labels), 'val': (images, labels)} of `image_size`-pixel images, balanced, shuffled classes."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, per_class in (("train", cfg.train_per_class), ("val", cfg.val_per_class)):
        labels = rng.permutation(np.repeat(np.arange(cfg.num_classes), per_class))
        out[split] = (render(cfg, image_size, labels, rng), labels.astype(np.int64))
    return out
