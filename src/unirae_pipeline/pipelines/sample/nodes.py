"""sample: class-balanced ODE sampling with CFG, decoded by the trained decoder; plus the untrained baseline."""

from __future__ import annotations

import json
import logging
import time

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


def balanced_labels(num_classes: int, per_class: int, seed: int) -> torch.Tensor:
    """Exactly `per_class` of each class, in a seeded random order (the reference's 'equal' labels)."""
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


def model_shape(model: torch.nn.Module) -> tuple[int, int, int]:
    return model.in_channels, model.input_size, model.input_size


@torch.no_grad()
def generate(model: torch.nn.Module, decoder: torch.nn.Module, stats: dict[str, torch.Tensor], labels: torch.Tensor,
             sampler: SamplerConfig, shift: float, batch_size: int, seed: int) -> np.ndarray:
    """Noise -> latents (ODE, CFG) -> raw latents -> images, uint8 NHWC; each batch seeded by its position."""
    model.eval()
    velocity = guided_velocity(model, model.num_classes, sampler.cfg_scale, sampler.cfg_t_min, sampler.cfg_t_max)
    grid = time_grid(sampler.num_steps, shift).float()
    out = []
    for i, y in enumerate(labels.split(batch_size)):
        generator = torch.Generator().manual_seed(seed + i)
        noise = torch.randn((len(y), *model_shape(model)), generator=generator)
        z = integrate(velocity, noise, y, grid, sampler, generator)
        out.append(to_uint8_nhwc(decoder(denormalize(z, stats["mean"], stats["var"]))))
    return np.concatenate(out)


def sample(dit: Blob, decoder: Blob, latent_stats: Blob, params: dict, diffusion: dict,
           seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], Image.Image]:
    """Samples of the trained DiT (EMA) and of its untrained twin, same labels and noise; a grid, a row per class."""
    sampler = build(SamplerConfig, params["sampler"], "sample.sampler")
    transport = build(TransportConfig, diffusion, "diffusion")
    if params["num_per_class"] < 1 or params["batch_size"] < 1:
        raise ValueError("sample.num_per_class and sample.batch_size must be >= 1")
    meta = blob_meta(dit)
    check_fingerprints(dit=meta["fingerprint"], decoder=blob_meta(decoder)["fingerprint"],
                       latent_stats=json.loads(latent_stats[1]["fingerprint"]))
    model, dec, stats = dit_from_blob(dit), decoder_from_blob(decoder), latent_stats[0]
    untrained = build_dit(DiTConfig(**meta["config"]), tuple(meta["latent_shape"]), meta["num_classes"], meta["seed"])
    shift = shift_factor(tuple(meta["latent_shape"]), transport.shift_base)
    labels = balanced_labels(meta["num_classes"], params["num_per_class"], seed)
    start = time.perf_counter()
    images = generate(model, dec, stats, labels, sampler, shift, params["batch_size"], seed)
    log.info("sampled %d images (%s, %d grid points, cfg %.2f) in %.1f s", len(labels), sampler.method,
             sampler.num_steps, sampler.cfg_scale, time.perf_counter() - start)
    baseline = generate(untrained, dec, stats, labels, sampler, shift, params["batch_size"], seed)
    order = torch.argsort(labels, stable=True).view(meta["num_classes"], -1)[:, : params["grid_per_class"]]
    grid = image_grid(images[order.flatten().numpy()], ncol=order.shape[1])  # one row per class
    labels_np = labels.numpy()
    return {"images": images, "labels": labels_np}, {"images": baseline, "labels": labels_np}, grid
