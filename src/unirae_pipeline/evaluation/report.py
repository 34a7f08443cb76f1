"""Pictures for the reports: image grids."""

from __future__ import annotations

import numpy as np
from PIL import Image


def image_grid(images: np.ndarray, ncol: int, min_width: int = 512) -> Image.Image:
    """uint8 (N, H, W, 3) -> one grid image, rows of `ncol`, upscaled (nearest) to at least `min_width` px."""
    n, h, w, _ = images.shape
    nrow = -(-n // ncol)
    canvas = np.zeros((nrow * h, ncol * w, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, ncol)
        canvas[r * h:(r + 1) * h, c * w:(c + 1) * w] = img
    grid = Image.fromarray(canvas)
    scale = max(1, -(-min_width // canvas.shape[1]))
    return grid.resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST) if scale > 1 else grid


def to_uint8_nhwc(images) -> np.ndarray:
    """float (N, 3, H, W) in [0, 1] (torch) -> uint8 (N, H, W, 3), the format of sample files and the ADM evaluator."""
    return (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
