"""sample: class-balanced ODE sampling with CFG, decoded by the trained decoder; plus the untrained baseline."""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
from PIL import Image

from ...data.latents import denormalize
from ...diffusion import SamplerConfig, TransportConfig, integrate, shift_factor, time_grid
from ...evaluation.report import image_grid, to_uint8_nhwc
from ...models import DiTConfig, build_dit, decoder_from_blob, dit_from_blob
from ...models.serialization import Blob, blob_meta, check_fingerprints
from ...params import build

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleConfig:
    """The `sample` params group: how many samples, where and in which precision; `sampler` is the integrator."""

    num_per_class: int
    batch_size: int
    grid_per_class: int
    device: Literal["auto", "cpu", "cuda"]
    precision: Literal["fp32", "bf16"]
    untrained_baseline: bool   # also sample an untrained twin of the DiT: the floor of the metrics (small models)
    sampler: dict

    def __post_init__(self) -> None:
        if min(self.num_per_class, self.batch_size, self.grid_per_class) < 1:
            raise ValueError("sample.num_per_class, sample.batch_size and sample.grid_per_class must be >= 1")
        if self.device not in ("auto", "cpu", "cuda") or self.precision not in ("fp32", "bf16"):
            raise ValueError(f"sample.device must be auto/cpu/cuda and sample.precision fp32/bf16, got "
                             f"{self.device!r}, {self.precision!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("sample.device is 'cuda' but no CUDA device is available")
        build(SamplerConfig, self.sampler, "sample.sampler")

    def torch_device(self) -> torch.device:
        return torch.device("cuda" if self.device == "auto" and torch.cuda.is_available() else
                            "cpu" if self.device == "auto" else self.device)


def balanced_labels(num_classes: int, per_class: int, seed: int) -> torch.Tensor:
    """Exactly `per_class` of each class, in a seeded random order (the reference's 'equal' labels)."""
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


def model_shape(model: torch.nn.Module) -> tuple[int, int, int]:
    return model.in_channels, model.input_size, model.input_size


def _fp32(model: torch.nn.Module, device: torch.device):
    """The model on `device`, its output cast to fp32 so that guidance arithmetic stays exact under autocast."""
    model = model.eval().to(device)
    return lambda x, t, y: model(x, t, y).float()


@torch.no_grad()
def generate(model: torch.nn.Module, decoder: torch.nn.Module, stats: dict[str, torch.Tensor], labels: torch.Tensor,
             cfg: SampleConfig, sampler: SamplerConfig, shift: float, seed: int,
             guide: torch.nn.Module | None = None) -> np.ndarray:
    """Noise -> latents (ODE/SDE, guided) -> raw latents -> images, uint8 NHWC; each batch seeded by its position,
    with its noise drawn on the CPU so that a seed gives the same samples on every device."""
    device = cfg.torch_device()
    decoder = decoder.eval().to(device)
    mean, var = stats["mean"].to(device), stats["var"].to(device)
    velocity = sampler.velocity(_fp32(model, device), model.num_classes,
                                _fp32(guide, device) if guide is not None else None)
    grid = time_grid(sampler.num_steps, shift).float()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.precision == "bf16" else nullcontext()
    out = []
    for i, y in enumerate(labels.split(cfg.batch_size)):
        generator = torch.Generator().manual_seed(seed + i)
        noise = torch.randn((len(y), *model_shape(model)), generator=generator).to(device)
        with autocast:
            z = integrate(velocity, noise, y.to(device), grid, sampler, generator)
            images = decoder(denormalize(z.float(), mean, var))
        out.append(to_uint8_nhwc(images.float()))
    return np.concatenate(out)


def sample(dit: Blob, dit_guide: Blob, decoder: Blob, latent_stats: Blob, params: dict, diffusion: dict,
           seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], Image.Image]:
    """Samples of the trained DiT (EMA) and of its untrained twin, same labels and noise; a grid, a row per class.

    `dit_guide` is used only with `sample.sampler.guidance: autoguidance`.
    """
    cfg = build(SampleConfig, params, "sample")
    sampler = build(SamplerConfig, cfg.sampler, "sample.sampler")
    transport = build(TransportConfig, diffusion, "diffusion")
    meta = blob_meta(dit)
    autoguided = sampler.guidance == "autoguidance"
    check_fingerprints(dit=meta["fingerprint"], decoder=blob_meta(decoder)["fingerprint"],
                       latent_stats=json.loads(latent_stats[1]["fingerprint"]),
                       **({"dit_guide": blob_meta(dit_guide)["fingerprint"]} if autoguided else {}))
    model, dec, stats = dit_from_blob(dit), decoder_from_blob(decoder), latent_stats[0]
    guide = dit_from_blob(dit_guide) if autoguided else None
    shift = shift_factor(tuple(meta["latent_shape"]), transport.shift_base)
    labels = balanced_labels(meta["num_classes"], cfg.num_per_class, seed)
    start = time.perf_counter()
    images = generate(model, dec, stats, labels, cfg, sampler, shift, seed, guide)
    seconds = time.perf_counter() - start
    log.info("sampled %d images (%s, %d grid points, %s %.2f, %s on %s) in %.1f s, %.1f img/s", len(labels),
             sampler.method, sampler.num_steps, sampler.guidance, sampler.guidance_scale, cfg.precision,
             cfg.torch_device(), seconds, len(labels) / seconds)
    if cfg.untrained_baseline:  # the floor: the untrained twin, unguided (its zero-init velocity is 0 anyway)
        untrained = build_dit(DiTConfig(**meta["config"]), tuple(meta["latent_shape"]), meta["num_classes"],
                              meta["seed"])
        unguided = replace(sampler, guidance="cfg", guidance_scale=1.0)
        baseline = {"images": generate(untrained, dec, stats, labels, cfg, unguided, shift, seed),
                    "labels": labels.numpy()}
    else:
        baseline = {"images": images[:0], "labels": labels.numpy()[:0]}
    order = torch.argsort(labels, stable=True).view(meta["num_classes"], -1)[:, : cfg.grid_per_class]
    grid = image_grid(images[order.flatten().numpy()], ncol=order.shape[1])  # one row per class
    return {"images": images, "labels": labels.numpy()}, baseline, grid
