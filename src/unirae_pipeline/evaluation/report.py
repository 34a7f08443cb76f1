"""Pictures for the reports: image grids, with their rows labelled on the picture and in its PNG metadata."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

LABELS_KEY = "unirae.rows"  # PNG text chunk: the row labels, top to bottom, as JSON
GUTTER = 2  # px between cells, at the grid's scale


def labelled_grid(images: np.ndarray, ncol: int, rows: list[str], min_width: int = 512) -> Image.Image:
    """uint8 (N, H, W, 3) -> a grid of `ncol` columns, one label per row drawn to its left (also kept in the image's
    `info[LABELS_KEY]`, which PNGDataset writes as a text chunk), cells upscaled (nearest) to at least `min_width` px
    in all and parted by white gutters."""
    n, h, w, _ = images.shape
    if len(rows) != -(-n // ncol):
        raise ValueError(f"{len(rows)} row labels for {-(-n // ncol)} rows")
    scale = max(1, -(-min_width // (ncol * w)))
    cell_h, cell_w = h * scale, w * scale
    font = ImageFont.load_default(size=max(10, min(16, cell_h // 3)))
    margin = 8 + max(int(font.getlength(label)) for label in rows)
    grid = Image.new("RGB", (margin + ncol * (cell_w + GUTTER), len(rows) * (cell_h + GUTTER)), "white")
    for i, img in enumerate(images):
        r, c = divmod(i, ncol)
        cell = Image.fromarray(img).resize((cell_w, cell_h), Image.NEAREST)
        grid.paste(cell, (margin + c * (cell_w + GUTTER), r * (cell_h + GUTTER)))
    draw = ImageDraw.Draw(grid)
    for r, label in enumerate(rows):
        draw.text((4, r * (cell_h + GUTTER) + cell_h // 2), label, fill="black", font=font, anchor="lm")
    grid.info[LABELS_KEY] = json.dumps(rows)
    return grid


def grid_labels(image: Image.Image) -> list[str]:
    """The row labels of a grid made by `labelled_grid` (from a loaded PNG too)."""
    return json.loads(image.info[LABELS_KEY])


def check_finite(images: torch.Tensor, what: str) -> torch.Tensor:
    """`images` after checking that every value is finite: quantizing turns NaN into black pixels, which would then be
    written and scored as a result (`what` names them and the stage)."""
    if bad := int((~torch.isfinite(images)).sum()):
        raise FloatingPointError(f"{what}: {bad:,} of {images.numel():,} decoded values are NaN or Inf; nothing was "
                                 "written from them (a diverged model, or settings that overflow)")
    return images


def quantize(images: torch.Tensor) -> torch.Tensor:
    """float images ~[0, 1] -> uint8 exactly as the reference exports samples and reconstructions (`sample_ddp.py`,
    `stage1_sample_ddp.py`): clamp to [0, 1], times 255, truncated (not rounded: about half the pixels would differ
    by one level)."""
    return (images.clamp(0, 1) * 255).to(torch.uint8)


def to_uint8_nhwc(images: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) ~[0, 1] -> uint8 (N, H, W, 3) by `quantize`: the format of sample files and the ADM
    evaluator."""
    return quantize(images).permute(0, 2, 3, 1).cpu().numpy()
