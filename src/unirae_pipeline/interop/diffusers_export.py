"""This pipeline's RAE as a diffusers `AutoencoderRAE` (the way back of `interop.diffusers`): the encoder's weights as
its file holds them (diffusers resizes the position table itself, so the original one is needed), the decoder trained
here and the latent statistics, normalized as `diffusion.latent_norm` says. diffusers' (z - mean) / (std + 1e-5) is
given our (z - mean) / sqrt(var + 1e-5). Weights land in diffusers' names by inverting this pipeline's own converters
(`invert`), so a round trip is exact. No stage depends on this module; `tools.export_diffusers` is its command."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from ..data.normalization import STATS_EPS, norm_stats
from ..models.decoder import decoder_from_file, decoder_positions
from ..models.encoder import EncoderConfig
from ..models.serialization import ModelFile
from .diffusers import DIFFUSERS_EPS, reference_name
from .encoder_weights import encoder_state
from .hf_encoders import hf_to_timm
from .official import official_decoder_state

log = logging.getLogger(__name__)
ENCODER_TYPES = {"dinov2": "dinov2", "siglip": "siglip2", "mae": "mae"}  # our family -> diffusers' encoder_type
GRID = 16  # diffusers scales its decoder's positions by 16 / grid; the reference (and we) do not


def invert(convert: Callable[[dict], dict], template: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
           param: str, zero: Callable[[dict], None] = lambda tags: None) -> dict[str, torch.Tensor]:
    """The state dict in `template`'s layout that `convert` turns into `target`. Every template element is tagged
    with its own index (float64: exact to 2^53), the tags converted, and each tagged position filled from `target`;
    elements that `zero` untags (DINOv2's CLS position row, folded into its token) stay 0."""
    tags, offset = {}, 1
    for key, value in template.items():
        tags[key] = torch.arange(offset, offset + value.numel(), dtype=torch.float64).view(value.shape)
        offset += value.numel()
    zero(tags)
    flat = torch.zeros(offset, dtype=torch.float64)
    for key, where in convert(tags).items():
        if key not in target:
            raise KeyError(f"{param}: has no {key!r}, which the diffusers model needs")
        if where.shape != target[key].shape:
            raise ValueError(f"{param}: {key!r} is {tuple(target[key].shape)}, the diffusers model's "
                             f"{tuple(where.shape)}")
        flat[where.flatten().long()] = target[key].flatten().double()
    flat[0] = 0
    return {key: flat[tags[key].flatten().long()].view(value.shape).to(value.dtype) for key, value in template.items()}


def source_encoder(cfg: EncoderConfig) -> dict[str, torch.Tensor]:
    """The encoder's weights in timm's layout with their original position table (not resized to the input size)."""
    state = encoder_state(cfg)  # read as the pipeline reads it, before the model resizes the table
    if state is None:
        raise ValueError(f"encoder.weights is {cfg.weights!r}: the export needs the weights as a local file or a "
                         "diffusers folder (their original position table)")
    return state


def export(cfg: EncoderConfig, decoder_file: ModelFile, stats: dict[str, torch.Tensor], latent_norm: str,
           out: Path) -> None:
    """Build the AutoencoderRAE, fill its weights and buffers, `save_pretrained` it to `out`."""
    from diffusers import AutoencoderRAE  # noqa: PLC0415 - the optional extra, needed only here

    family = cfg.family.name
    if family not in ENCODER_TYPES:
        raise ValueError(f"encoder.model {cfg.model!r}: diffusers' AutoencoderRAE has no {family} encoder "
                         f"(it has {sorted(ENCODER_TYPES.values())})")
    source = source_encoder(cfg)  # before anything is built: `hub` and `none` cannot be exported
    vit = cfg.meta_model()
    width, grid = vit.embed_dim, vit.patch_embed.grid_size[0]
    if vit.blocks[0].attn.num_heads * 64 != width:
        raise ValueError(f"encoder: diffusers builds heads of 64 channels; this one has {vit.blocks[0].attn.num_heads} "
                         f"heads of width {width}")
    decoder = decoder_from_file(decoder_file)
    if grid != GRID:
        raise ValueError(f"the latent grid is {grid}x{grid}: diffusers scales its decoder's sin-cos positions by "
                         f"{GRID}/{grid} where the reference and this decoder do not, so it would decode differently")
    if decoder.pixel_norm != cfg.pixel_norm or decoder.latent_dim != width or decoder.grid != grid:
        raise ValueError("the decoder was not made for this encoder (normalization, width or grid differ)")
    if not torch.equal(decoder.pos_embed, decoder_positions(decoder.cfg.hidden_size, grid)):
        raise ValueError("the decoder's position table was trained (train_rae.train_tables): diffusers computes its "
                         "own fixed table, so it would decode differently")
    mean, var = norm_stats(stats, latent_norm)
    std = (var.double() + STATS_EPS).sqrt() - DIFFUSERS_EPS  # diffusers divides by std + 1e-5
    d = decoder.cfg
    rae = AutoencoderRAE(encoder_type=ENCODER_TYPES[family], encoder_hidden_size=width,
                         encoder_patch_size=cfg.input_size // grid, encoder_num_hidden_layers=len(vit.blocks),
                         decoder_hidden_size=d.hidden_size, decoder_num_hidden_layers=d.depth,
                         decoder_num_attention_heads=d.num_heads, decoder_intermediate_size=d.mlp_dim,
                         patch_size=d.patch_size, encoder_input_size=cfg.input_size,
                         encoder_norm_mean=list(cfg.pixel_norm[0]), encoder_norm_std=list(cfg.pixel_norm[1]),
                         latents_mean=mean.float(), latents_std=std.float())
    template = rae.state_dict()
    encoder = {k.removeprefix("encoder."): v for k, v in template.items() if k.startswith("encoder.")}
    decoder_template = {k.removeprefix("decoder."): v for k, v in template.items() if k.startswith("decoder.")}

    def unfold_cls(tags: dict) -> None:  # DINOv2: timm folds the CLS position into the CLS token
        tags["embeddings.position_embeddings"][:, 0] = 0

    state = {f"encoder.{k}": v for k, v in invert(hf_to_timm, encoder, source, "encoder.weights",
                                                  unfold_cls if family == "dinov2" else lambda tags: None).items()}
    state.update({f"decoder.{k}": v for k, v in invert(
        lambda tags: official_decoder_state({reference_name(k): v for k, v in tags.items()}, d.depth),
        decoder_template, decoder.state_dict(), "--decoder").items()})
    state.update({k: v for k, v in template.items() if not k.startswith(("encoder.", "decoder."))})  # its buffers
    rae.load_state_dict(state, strict=True)
    rae.save_pretrained(out)
    log.info("exported %s (%s encoder %s at %d px, decoder %s, latent_norm %s) to %s", cfg.model, family,
             cfg.weights, cfg.input_size, asdict(d), latent_norm, out)
