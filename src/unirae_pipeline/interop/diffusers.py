"""The decoder and latent statistics of a diffusers `AutoencoderRAE` folder as this pipeline's: diffusers' decoder is
the reference's but for its attention names, and its latent normalization becomes statistics for ours."""

from __future__ import annotations

import torch

from ..data.normalization import STATS_EPS
from ..models.decoder import ViTDecoder
from .diffusers_folder import DiffusersRAE
from .official import load_official_decoder

# diffusers' attention names in its decoder -> the reference GeneralDecoder's (HF ViTMAE's)
_DIFFUSERS_ATTENTION = {"attention.to_q.": "attention.attention.query.", "attention.to_k.": "attention.attention.key.",
                        "attention.to_v.": "attention.attention.value.",
                        "attention.to_out.0.": "attention.output.dense."}
DIFFUSERS_EPS = 1e-5  # what diffusers adds to the std when it (de)normalizes latents


def reference_name(key: str) -> str:
    """A diffusers decoder key in the reference's (HF ViTMAE's) names."""
    for src, dst in _DIFFUSERS_ATTENTION.items():
        key = key.replace(src, dst)
    return key


def load_diffusers_decoder(rae: DiffusersRAE) -> ViTDecoder:
    """The decoder of a diffusers RAE (the reference's layout but for attention names), de-normalizing as its
    encoder normalizes. Its sin-cos positions are the reference's: diffusers scales them by 16 / grid, which changes
    nothing on the released 16x16 grids."""
    c = rae.config
    state = {reference_name(k): v for k, v in rae.part("decoder.").items()}
    mean, std = rae.pixel_norm
    return load_official_decoder(state, hidden_size=c["decoder_hidden_size"], depth=c["decoder_num_hidden_layers"],
                                 num_heads=c["decoder_num_attention_heads"], mlp_dim=c["decoder_intermediate_size"],
                                 patch_size=c["patch_size"], latent_dim=c["encoder_hidden_size"],
                                 num_patches=rae.grid ** 2, image_mean=mean, image_std=std)


def load_diffusers_stats(rae: DiffusersRAE) -> dict[str, torch.Tensor]:
    """{'mean', 'var'} of the full latent shape with which this pipeline's (z - mean) / sqrt(var + 1e-5) gives
    diffusers' latents, (z - mean) / (std + 1e-5) * scaling_factor (statistics broadcast as diffusers does)."""
    shape = (rae.config["encoder_hidden_size"], rae.grid, rae.grid)
    mean, std = rae.buffer("_latents_mean", "latents_mean", 0.0), rae.buffer("_latents_std", "latents_std", 1.0)
    scale = float(rae.config.get("scaling_factor", 1.0))
    if scale <= 0:
        raise ValueError(f"{rae.param}: scaling_factor must be > 0, got {scale}")
    try:
        mean, divisor = (torch.broadcast_to(t, shape).double() for t in (mean, (std + DIFFUSERS_EPS) / scale))
    except RuntimeError:
        raise ValueError(f"{rae.param}: latent statistics of shapes {tuple(mean.shape)} and {tuple(std.shape)} do not "
                         f"broadcast to the latent shape {shape}") from None
    return {"mean": mean.float().contiguous(), "var": (divisor ** 2 - STATS_EPS).float().contiguous()}
