"""sample: class-balanced ODE/SDE sampling with guidance, decoded by the trained decoder; plus the untrained baseline.

Images are generated in shards of `sample.shard_size` under <runtime.scratch>/samples/<hash of the models and
params>/: a rerun after a kill keeps the complete shards (each batch's noise is seeded by its position, so the result
is the same), and the catalog writes them out as the ADM evaluator's npz.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ...config.sample import SampleConfig
from ...data.normalization import denormalize, norm_stats
from ...data.samples import SampleSet, intact_shard, read_shard, write_shard
from ...diffusion.sampler_config import SamplerConfig
from ...diffusion.sampling import (
    integrate,
    module_velocity,
    prepared,
    raev2_time_grid,
    raev2_velocity,
    time_grid,
    with_guidance,
)
from ...diffusion.transport import TransportConfig, VelocityFn, shift_factor
from ...evaluation.report import check_finite, labelled_grid, to_uint8_nhwc
from ...models.decoder import decoder_from_file
from ...models.dit import build_dit, dit_config, dit_from_file
from ...models.dit_raev2 import RAEv2DiT
from ...models.serialization import ModelFile, check_fingerprints, digest
from ...runtime import RuntimeConfig
from ...runtime.progress import Progress
from ...runtime.ranks import global_rank, sharded_job, world_size
from ...runtime.scratch import RunKey

log = logging.getLogger(__name__)


def balanced_labels(num_classes: int, per_class: int, seed: int) -> torch.Tensor:
    """Exactly `per_class` of each class, in a seeded random order (the reference's 'equal' labels)."""
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


def velocity_of(model: torch.nn.Module, guide: torch.nn.Module | None, sampler: SamplerConfig,
                runtime: RuntimeConfig) -> VelocityFn:
    """The guided velocity of `model` on the sampling device, compiled once per run with `runtime.compile`: RAEv2's
    DiT with its internal guidance and CFG, DiT-DH with CFG or AutoGuidance (`guide`)."""
    device = runtime.sampling_device()
    if isinstance(model, RAEv2DiT):
        return raev2_velocity(sampler, prepared(model, device, runtime.compile), model.num_classes)
    if sampler.ig_scale > 1:
        raise ValueError(f"sample.sampler.ig_scale {sampler.ig_scale} guides a RAEv2 DiT by its base head; this DiT "
                         "(DiT-DH) has none: set sample.sampler.ig_scale=1")
    return with_guidance(sampler, module_velocity(model, device, runtime.compile), model.num_classes,
                         module_velocity(guide, device, runtime.compile) if guide is not None else None)


@torch.no_grad()
def generate(velocity: VelocityFn, latent_shape: tuple[int, int, int], decoder: torch.nn.Module,
             stats: tuple[torch.Tensor, torch.Tensor], labels: torch.Tensor, cfg: SampleConfig, sampler: SamplerConfig,
             grid: torch.Tensor, seed: int, device: torch.device, first_batch: int = 0) -> np.ndarray:
    """Noise -> latents (ODE/SDE, guided) -> raw latents (`stats`: the training's (mean, var), `norm_stats`) ->
    images, uint8 NHWC as the reference exports them. Batch i of the whole run is seeded
    by seed + i (`first_batch` places these labels in the run), its noise drawn on the CPU so that a seed gives the
    same samples on every device and in any shard split."""
    decoder = decoder.eval().to(device)
    mean, var = (s.to(device) for s in stats)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.precision == "bf16" else nullcontext()
    out = []
    batches = labels.split(cfg.batch_size)
    steps = Progress(len(batches) * sampler.evaluations, "sampling", unit="eval")  # network evaluations (ODE steps)

    def counted(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        v = velocity(x, t, y)
        steps.update()
        return v

    for i, y in enumerate(batches):
        generator = torch.Generator().manual_seed(seed + first_batch + i)
        noise = torch.randn((len(y), *latent_shape), generator=generator).to(device)
        with autocast:
            z = integrate(counted, noise, y.to(device), grid, sampler, generator)
            images = decoder(denormalize(z.float(), mean, var))
        out.append(to_uint8_nhwc(check_finite(images.float(), f"sample: batch {first_batch + i}")))
    steps.close()
    return np.concatenate(out)


def generate_shards(folder: Path, labels: torch.Tensor, cfg: SampleConfig, image_shape: tuple[int, int, int],
                    make: Callable[[torch.Tensor, int], np.ndarray]) -> SampleSet | None:
    """Shards of `cfg.shard_size` images in `folder`; complete shards of an earlier, interrupted run are kept.
    Under torchrun or SLURM each rank makes every world-size-th shard (`ranks.sharded_job`); rank zero returns the
    whole set, the other ranks None (they write no output)."""
    folder.mkdir(parents=True, exist_ok=True)
    starts = range(0, len(labels), cfg.shard_size)
    paths = [folder / f"shard_{k:05d}.npy" for k in range(len(starts))]
    kept, made = sharded_job(paths, lambda k: write_shard(paths[k], make(
        labels[starts[k]: starts[k] + cfg.shard_size], starts[k] // cfg.batch_size)), "sample shards",
        intact=intact_shard)
    if kept:
        log.info("resumed %s: %d of this rank's %d shards were complete", folder, kept, kept + made)
    if global_rank() != 0:
        return None
    return SampleSet([read_shard(p) for p in paths], labels.numpy(), image_shape, cache=folder)


def autoguidance_guide(dit_snapshot: ModelFile | None, dit_guide: ModelFile) -> ModelFile:
    """The AutoGuidance guide: train_guide's separately trained (or a released) DiT-DH when `dit_guide` holds
    weights, else train_dit's EMA snapshot."""
    if not dit_guide.empty:
        return dit_guide
    if dit_snapshot is None:
        raise ValueError("sample.sampler.guidance is 'autoguidance' but there is no guide: train_guide trained none "
                         "(guide.source: snapshot) and train_dit's dit_snapshot does not exist; run train_dit, or "
                         "train a guide with guide=S (guide=tiny for the embedded default)")
    return dit_snapshot


def sample(dit: ModelFile, dit_snapshot: ModelFile | None, dit_guide: ModelFile, decoder: ModelFile,
           latent_stats: ModelFile, cfg: SampleConfig, transport: TransportConfig, seed: int,
           run: RuntimeConfig) -> tuple[SampleSet, SampleSet, Image.Image]:
    """Samples of the trained DiT (EMA) and of its untrained twin, same labels and noise; a grid, a row per class.

    The guide (`autoguidance_guide`) is used only with `sample.sampler.guidance: autoguidance`.
    """
    sampler, device, scratch = cfg.sampler, run.sampling_device(), run.scratch_dir("samples")
    meta = dit.meta
    autoguided = sampler.guidance == "autoguidance" and sampler.guidance_scale > 1
    guide_file = autoguidance_guide(dit_snapshot, dit_guide) if autoguided else None
    check_fingerprints(dit=meta["fingerprint"], decoder=decoder.meta["fingerprint"],
                       latent_stats=latent_stats.expect("stats").meta["fingerprint"],
                       **({"dit_guide": guide_file.meta["fingerprint"]} if guide_file else {}))
    model, dec = dit_from_file(dit), decoder_from_file(decoder)
    stats = norm_stats(latent_stats.tensors, transport.latent_norm)  # as train_dit normalized
    guide = dit_from_file(guide_file) if guide_file else None
    if guide_file:
        which = "train_dit's EMA snapshot" if guide_file is dit_snapshot else "dit_guide"
        log.info("AutoGuidance guide: %s, %s", which,
                 {k: v for k, v in guide_file.meta.items() if k in ("step", "source", "config")})
    shift = shift_factor(tuple(meta["latent_shape"]), transport.shift_base)
    labels = balanced_labels(meta["num_classes"], cfg.num_per_class, seed)
    image_shape = (dec.image_size, dec.image_size, 3)
    models = [dit, decoder, latent_stats, *([guide_file] if guide_file else [])]
    key = RunKey({"sample": cfg, "diffusion": transport, "seed": seed}, {"models": digest(*models)})
    start = time.perf_counter()
    times = (raev2_time_grid(sampler.num_steps - 1, shift) if isinstance(model, RAEv2DiT)
             else time_grid(sampler.num_steps, shift)).float()
    velocity, shape = velocity_of(model, guide, sampler, run), tuple(meta["latent_shape"])
    samples = generate_shards(key.folder(scratch), labels, cfg, image_shape, lambda y, first: generate(
        velocity, shape, dec, stats, y, cfg, sampler, times, seed, device, first))
    seconds = time.perf_counter() - start
    log.info("sampled %d images (%s, %d grid points, %s %.2f, %s%s on %s, %d rank(s)) in %.1f s, %.1f img/s",
             len(labels), sampler.method, sampler.num_steps, sampler.guidance, sampler.guidance_scale, cfg.precision,
             ", compiled" if run.compile else "", device, world_size(), seconds, len(labels) / seconds)
    if cfg.untrained_baseline:  # the floor: the untrained twin, unguided (its zero-init velocity is 0 anyway)
        untrained = build_dit(dit_config(dit), tuple(meta["latent_shape"]), meta["num_classes"], meta["seed"])
        unguided = replace(sampler, guidance="cfg", guidance_scale=1.0, ig_scale=1.0)
        floor = velocity_of(untrained, None, unguided, run)
        start = time.perf_counter()
        baseline = generate_shards(key.folder(scratch, suffix="-untrained"), labels, cfg, image_shape,
                                   lambda y, first: generate(floor, shape, dec, stats, y, cfg, unguided, times, seed,
                                                             device, first))
        log.info("sampled the untrained floor (the same labels and noise, unguided) in %.1f s",
                 time.perf_counter() - start)
    else:
        baseline = SampleSet([], labels.numpy()[:0], image_shape)
    if samples is None:  # another rank: its shards are on disk, and rank zero writes every output
        nothing = SampleSet([], labels.numpy()[:0], image_shape)
        return nothing, nothing, Image.new("RGB", (1, 1))
    order = torch.argsort(labels, stable=True).view(meta["num_classes"], -1)[:, : cfg.grid_per_class]
    names = meta.get("class_names") or [""] * meta["num_classes"]  # DiTs trained here carry their class names
    rows = [f"{k} {name}".strip() for k, name in enumerate(names)]  # label order: class folders sorted by name
    grid = labelled_grid(samples.take(order.flatten().numpy()), ncol=order.shape[1], rows=rows)
    return samples, baseline, grid
