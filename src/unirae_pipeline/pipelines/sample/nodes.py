"""sample: class-balanced ODE sampling with CFG, decoded by the trained decoder; plus the untrained baseline."""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image

from ...data.latents import denormalize
from ...diffusion import SamplerConfig, TransportConfig, guided_velocity, integrate, shift_factor, time_grid
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


@torch.no_grad()
def generate(model: torch.nn.Module, decoder: torch.nn.Module, stats: dict[str, torch.Tensor], labels: torch.Tensor,
             cfg: SampleConfig, shift: float, seed: int) -> np.ndarray:
    """Noise -> latents (ODE/SDE, CFG) -> raw latents -> images, uint8 NHWC; each batch seeded by its position,
    with its noise drawn on the CPU so that a seed gives the same samples on every device."""
    device = cfg.torch_device()
    sampler = build(SamplerConfig, cfg.sampler, "sample.sampler")
    model, decoder = model.eval().to(device), decoder.eval().to(device)
    mean, var = stats["mean"].to(device), stats["var"].to(device)
    net = lambda x, t, y: model(x, t, y).float()  # noqa: E731  guidance arithmetic in fp32 under autocast
    velocity = guided_velocity(net, model.num_classes, sampler.cfg_scale, sampler.cfg_t_min, sampler.cfg_t_max)
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


def sample(dit: Blob, decoder: Blob, latent_stats: Blob, params: dict, diffusion: dict,
           seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], Image.Image]:
    """Samples of the trained DiT (EMA) and of its untrained twin, same labels and noise; a grid, a row per class."""
    cfg = build(SampleConfig, params, "sample")
    sampler = build(SamplerConfig, cfg.sampler, "sample.sampler")
    transport = build(TransportConfig, diffusion, "diffusion")
    meta = blob_meta(dit)
    check_fingerprints(dit=meta["fingerprint"], decoder=blob_meta(decoder)["fingerprint"],
                       latent_stats=json.loads(latent_stats[1]["fingerprint"]))
    model, dec, stats = dit_from_blob(dit), decoder_from_blob(decoder), latent_stats[0]
    shift = shift_factor(tuple(meta["latent_shape"]), transport.shift_base)
    labels = balanced_labels(meta["num_classes"], cfg.num_per_class, seed)
    start = time.perf_counter()
    images = generate(model, dec, stats, labels, cfg, shift, seed)
    seconds = time.perf_counter() - start
    log.info("sampled %d images (%s, %d grid points, cfg %.2f, %s on %s) in %.1f s, %.1f img/s", len(labels),
             sampler.method, sampler.num_steps, sampler.cfg_scale, cfg.precision, cfg.torch_device(), seconds,
             len(labels) / seconds)
    if cfg.untrained_baseline:
        untrained = build_dit(DiTConfig(**meta["config"]), tuple(meta["latent_shape"]), meta["num_classes"],
                              meta["seed"])
        baseline = {"images": generate(untrained, dec, stats, labels, cfg, shift, seed), "labels": labels.numpy()}
    else:
        baseline = {"images": images[:0], "labels": labels.numpy()[:0]}
    order = torch.argsort(labels, stable=True).view(meta["num_classes"], -1)[:, : cfg.grid_per_class]
    grid = image_grid(images[order.flatten().numpy()], ncol=order.shape[1])  # one row per class
    return {"images": images, "labels": labels.numpy()}, baseline, grid
