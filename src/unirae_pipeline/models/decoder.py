"""ViT pixel decoder of RAE (MAE-decoder style): raw encoder tokens -> image in [0, 1] (unclamped)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from typing import Literal

import torch
from timm.layers import Mlp
from timm.models.vision_transformer import Block
from torch import nn

from ..config.build import build
from .imagenet import IMAGENET_MEAN, IMAGENET_STD
from .layers import check_heads, fixed_table, sincos_pos_embed_2d
from .serialization import ModelFile

PixelNorm = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std) of the encoder's input normalization
IMAGENET_NORM: PixelNorm = (IMAGENET_MEAN, IMAGENET_STD)
IDENTITY_NORM: PixelNorm = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # a decoder whose output is the image (RAEv2)


@dataclass(frozen=True)
class DecoderConfig:
    """Decoder size (presets in `conf/decoder/`), its training-time noise augmentation, and whether its output undoes
    the encoder's input normalization (`denormalize`, RAE) or is the image itself (RAEv2)."""

    hidden_size: int
    depth: int
    num_heads: int
    mlp_dim: int
    patch_size: int
    noise_tau: float
    noise_dist: Literal["uniform", "half_normal"]
    denormalize: bool = True  # files written before the key existed denormalize

    def __post_init__(self) -> None:
        check_heads("decoder.hidden_size / decoder.num_heads", self.hidden_size, self.num_heads)
        if (self.hidden_size % 4) or self.depth < 1 or self.patch_size < 1 or self.mlp_dim < 1:
            raise ValueError(f"decoder: invalid sizes {asdict(self)} (hidden_size must be divisible by 4)")
        if self.noise_tau < 0:
            raise ValueError(f"decoder.noise_tau must be >= 0, got {self.noise_tau}")

    def to_dict(self) -> dict:
        """The config a file holds; `denormalize` only when false, so that RAE decoders' files keep their bytes."""
        return {k: v for k, v in asdict(self).items() if k != "denormalize" or not v}


class ViTDecoder(nn.Module):
    """Linear in, trainable CLS, sin-cos positions, pre-LN ViT, final LN, linear to p*p*3, unpatchify, and the
    encoder's input normalization undone (`pixel_norm`), as the reference decodes (with `denormalize: false` the
    output is the image, as RAEv2 decodes). The position table is a frozen
    parameter that `train_rae.train_tables` lets train (the reference's GPU trainer does), so files always carry it."""

    def __init__(self, cfg: DecoderConfig, latent_dim: int, grid: int, pixel_norm: PixelNorm = IMAGENET_NORM) -> None:
        super().__init__()
        self.cfg, self.latent_dim, self.grid = cfg, latent_dim, grid
        self.pixel_norm = tuple(tuple(map(float, v)) for v in (pixel_norm if cfg.denormalize else IDENTITY_NORM))
        d = cfg.hidden_size
        self.decoder_embed = nn.Linear(latent_dim, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = fixed_table(decoder_positions(d, grid))
        norm = partial(nn.LayerNorm, eps=1e-12)
        self.blocks = nn.Sequential(*(
            Block(d, cfg.num_heads, mlp_ratio=cfg.mlp_dim / d, qkv_bias=True, norm_layer=norm, mlp_layer=Mlp)
            for _ in range(cfg.depth)))
        self.norm = norm(d)
        self.decoder_pred = nn.Linear(d, cfg.patch_size ** 2 * 3)
        self.register_buffer("mean", torch.tensor(self.pixel_norm[0]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.pixel_norm[1]).view(1, 3, 1, 1), persistent=False)

    @property
    def image_size(self) -> int:
        return self.grid * self.cfg.patch_size

    def add_noise(self, tokens: torch.Tensor) -> torch.Tensor:
        """Noise augmentation of the raw latent tokens (B, N, C): sigma = tau*U(0,1) (reference code) or
        |N(0, tau^2)| (paper). Drawn in the token layout, as the reference's `RAE.noising`: a seed gives its noise."""
        b = tokens.shape[0]
        draw = torch.rand if self.cfg.noise_dist == "uniform" else torch.randn
        sigma = (self.cfg.noise_tau * draw(b, device=tokens.device)).abs().view(b, 1, 1)
        return tokens + sigma * torch.randn(tokens.shape, device=tokens.device, dtype=tokens.dtype)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: raw (un-normalized) encoder latent (B, C, h, w) -> image (B, 3, H, W), ~[0, 1]."""
        if z.shape[1:] != (self.latent_dim, self.grid, self.grid):
            raise ValueError(f"decoder expects latents of shape {(self.latent_dim, self.grid, self.grid)}, "
                             f"got {tuple(z.shape[1:])}")
        tokens = z.flatten(2).transpose(1, 2)                                     # (B, N, C)
        if self.training and self.cfg.noise_tau > 0:
            tokens = self.add_noise(tokens)
        x = self.decoder_embed(tokens)                                            # (B, N, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.decoder_pred(self.norm(self.blocks(x)))[:, 1:]                   # (B, N, p*p*3)
        p, g = self.cfg.patch_size, self.grid
        x = x.reshape(-1, g, g, p, p, 3).permute(0, 5, 1, 3, 2, 4).reshape(-1, 3, g * p, g * p)
        return x * self.std + self.mean


def decoder_positions(dim: int, grid: int) -> torch.Tensor:
    """The initial position table (1, 1 + grid^2, dim): a zero CLS row above the 2-D sin-cos rows."""
    return torch.cat([torch.zeros(1, dim), sincos_pos_embed_2d(dim, grid)])[None]


def decoder_file(model: ViTDecoder, fingerprint: str) -> ModelFile:
    """The decoder file. `pixel_norm` is written only when it is not ImageNet's: absent means ImageNet's, so that the
    files of DINOv2 and MAE decoders (and those written before it existed) keep their bytes."""
    extra = {} if model.pixel_norm == IMAGENET_NORM else {"pixel_norm": model.pixel_norm}
    return ModelFile.of("decoder", model, config=model.cfg.to_dict(),
                        latent_shape=[model.latent_dim, model.grid, model.grid], fingerprint=fingerprint, **extra)


def decoder_from_file(file: ModelFile) -> ViTDecoder:
    """The decoder a file holds, its config built as the `decoder` params group is."""
    meta = file.expect("decoder").meta
    channels, grid, _ = meta["latent_shape"]
    cfg = build(DecoderConfig, meta["config"], "decoder")
    return file.load_into(ViTDecoder(cfg, channels, grid, meta.get("pixel_norm", IMAGENET_NORM)))
