"""Pictures for the reports: image grids."""

from __future__ import annotations

import numpy as np
import torch
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


def quantize(images: torch.Tensor) -> torch.Tensor:
    """float images ~[0, 1] -> uint8 exactly as the reference exports samples and reconstructions (`sample_ddp.py`,
    `stage1_sample_ddp.py`): clamp to [0, 1], times 255, truncated (not rounded: about half the pixels would differ
    by one level)."""
    return (images.clamp(0, 1) * 255).to(torch.uint8)


def to_uint8_nhwc(images: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) ~[0, 1] -> uint8 (N, H, W, 3) by `quantize`: the format of sample files and the ADM
    evaluator."""
    return quantize(images).permute(0, 2, 3, 1).cpu().numpy()
