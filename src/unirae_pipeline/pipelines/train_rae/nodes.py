"""train_rae: train the ViT decoder (stage 1), from cached latents or online-encoded crops; PSNR, SSIM and
reconstruction FD on val."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ...data.crops import CentreCrops, RandomCrops
from ...data.images import ImageSet
from ...data.latents import LatentStore
from ...data.loading import ImageDataset, load_split_uint8
from ...evaluation.extractors import Extractor
from ...evaluation.report import labelled_grid
from ...evaluation.scoring import paired, reconstruct
from ...interop.encoder_weights import encoder_state
from ...models.decoder import DecoderConfig, ViTDecoder, decoder_file, decoder_from_file
from ...models.encoder import EncoderConfig, FrozenEncoder
from ...models.serialization import ModelFile, check_fingerprints
from ...runtime import RuntimeConfig
from ...runtime.ranks import local_device
from ...runtime.scratch import RunKey
from ...training.data import KeyedBatches, TensorBatches
from ...training.fit import TrainerConfig, fit, recipe_in_steps, tf32
from ...training.rae import RAEModule, RAETrainConfig

log = logging.getLogger(__name__)


def _targets(latents: LatentStore, image_set: ImageSet, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain (unmirrored) raw latents and the uint8 images they were encoded from: the reference's stage 1 never
    flips (the mirrored latents of the cache are stage 2's)."""
    cache = latents.load(split)
    plain = cache["flip"] == 0
    images, _ = load_split_uint8(image_set, split, latents.manifest["image_size"])
    return cache["latents"][plain], images[cache["rows"][plain]]


def train_rae(latents: LatentStore, image_set: ImageSet, encoder: EncoderConfig, cfg: DecoderConfig,
                  recipe: RAETrainConfig, trainer: TrainerConfig, seed: int,
                  run: RuntimeConfig) -> tuple[ModelFile, pd.DataFrame]:
    manifest = latents.manifest
    channels, grid, _ = manifest["latent_shape"]
    if grid * cfg.patch_size != manifest["image_size"]:
        raise ValueError(f"decoder.patch_size {cfg.patch_size} x latent grid {grid} != data.image_size "
                         f"{manifest['image_size']}")
    if recipe.gan_weight > 0 and trainer.precision == "16-mixed":
        raise ValueError("trainer.precision 16-mixed with train_rae.gan_weight > 0: stage 1 takes two optimizer "
                         "steps per batch and no fp16 loss scaling; use 32-true (the reference) or bf16-mixed")
    online = None
    if recipe.source == "images":  # random crops through the frozen encoder, streamed from disk
        online = FrozenEncoder(encoder, seed, encoder_state(encoder), recipe.encoder_rope_rescale)
        check_fingerprints(encoder=online.fingerprint(), latents=manifest["fingerprint"])
        size = manifest["image_size"]
        crops = (CentreCrops(image_set, "train", size) if recipe.resize_ratio is None else
                 RandomCrops(image_set, "train", size, int(recipe.resize_ratio * size), seed))
        optim = recipe_in_steps(recipe, len(crops), trainer, "train_rae")
        batches = KeyedBatches(crops, optim.batch_size, seed, run.num_workers, key="train_rae.batch_size")
    else:  # the cached centre-crop latents and their images, held in memory
        z, images = _targets(latents, image_set, "train")
        optim = recipe_in_steps(recipe, len(z), trainer, "train_rae")
        batches = TensorBatches((z, images), optim.batch_size, seed, key="train_rae.batch_size")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ViTDecoder(cfg, channels, grid, encoder.pixel_norm)
    module = RAEModule(model, optim, online, seed)
    key = RunKey(dict(decoder=cfg, train_rae=recipe, trainer=trainer, seed=seed), dict(latents=manifest))
    with tf32(recipe.tf32):
        curve = fit(module, batches, trainer, run, "train_rae", seed, key=key)
    return decoder_file(module.ema.module, manifest["fingerprint"]), curve


def evaluate_rae(decoder: ModelFile, latents: LatentStore, image_set: ImageSet, feature_extractor: ModelFile,
                     reference_stats: dict[str, np.ndarray], use_tf32: bool,
                     runtime: RuntimeConfig) -> tuple[dict, Image.Image]:
    """Reconstruct val (no noise) from its cached latents to uint8 as the reference saves them, and score those: PSNR
    and SSIM on [0, 1], FD to the val images' statistics (rFID with Inception, on ImageNet's 50k centre-cropped val
    images), the classifier's accuracy on the reconstructions, and a grid. Streams val shard by shard, the images
    decoded in `runtime.num_workers` processes: memory does not grow with N; the decoder and the feature network run
    on the GPU when there is one."""
    check_fingerprints(decoder=decoder.meta["fingerprint"], latents=latents.manifest["fingerprint"])
    device, extractor = local_device(), Extractor(feature_extractor)
    images = torch.utils.data.DataLoader(ImageDataset(image_set, "val", latents.manifest["image_size"]),
                                         batch_size=256, num_workers=runtime.num_workers)
    total = latents.manifest["splits"]["val"]["count"]
    shown = 16 if total >= 16 else min(total, 8)  # two pairs of rows of 8, or one pair for a small val set
    pick = set(torch.linspace(0, total - 1, shown).long().tolist())  # spread over val, which is ordered by class
    with tf32(use_tf32), torch.no_grad():  # as in training (the reference's stage-1 evaluation: TF32 off)
        result = reconstruct(decoder_from_file(decoder).to(device), extractor,
                             paired(latents.iter_shards("val"), images, 256), device, pick)
    metrics = result.metrics(extractor.kind, {"mu": reference_stats["val_mu"], "sigma": reference_stats["val_sigma"]})
    log.info("decoder on val (%d images): %s", result.count, metrics)
    real, fake = (torch.stack([result.shown[i][j] for i in sorted(result.shown)]) for j in (0, 1))
    ncol = min(8, len(real))
    rows = torch.cat([torch.cat([real[i:i + ncol], fake[i:i + ncol]]) for i in range(0, len(real), ncol)])
    labels = ["original", "decoded"] * (len(real) // ncol)
    grid = labelled_grid(rows.permute(0, 2, 3, 1).numpy(), ncol=ncol, rows=labels)
    return metrics, grid
