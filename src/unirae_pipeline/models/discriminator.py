"""RAE's stage-1 discriminator: a frozen DINO ViT (S/8 in the reference) read at several depths, each token map
scored by a small trainable head of spectrally normalized 1-D convolutions; one logit per token and head."""

from __future__ import annotations

from dataclasses import dataclass, field

import timm
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm

from .imagenet import IMAGENET_MEAN, IMAGENET_STD
from .serialization import load_strict


@dataclass(frozen=True)
class DiscConfig:
    """`train_rae.disc`. `weights`: the DINO checkpoint (`dino_vit_small_patch8_224.pth` of RAE's release or DINO's
    own `dino_deitsmall8_pretrain.pth`: the same keys as timm's ViT); `overrides`: timm sizes (tests only)."""

    model: str
    weights: str | None
    input_size: int
    key_depths: tuple[int, ...]
    kernel_size: int
    overrides: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_depths", tuple(self.key_depths))
        if self.input_size < 1 or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"train_rae.disc: input_size must be positive and kernel_size odd, got {self}")
        if not timm.is_model(self.model):
            raise ValueError(f"train_rae.disc.model {self.model!r} is not a timm model name")


class TokenNorm(nn.Module):
    """Per image and channel, standardize over the tokens (the reference's BatchNormLocal with a virtual batch of
    one), with a learned affine; computed in fp32."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        var, mean = torch.var_mean(h, dim=2, keepdim=True, correction=0)
        h = (h - mean) * torch.rsqrt(var + self.eps)
        return (h * self.weight[:, None] + self.bias[:, None]).to(x.dtype)


def _conv_block(channels: int, kernel_size: int) -> nn.Sequential:
    """Spectral norm as the reference applies it (`torch.nn.utils.spectral_norm`: one power iteration per training
    forward, v from u first, state `weight_orig/_u/_v`), so that its discriminator states load and step alike."""
    conv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2, padding_mode="circular")
    return nn.Sequential(spectral_norm(conv, eps=1e-12), TokenNorm(channels), nn.LeakyReLU(0.2))


class Residual(nn.Module):
    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.fn(x) + x) * 2 ** -0.5


class DinoDiscriminator(nn.Module):
    """Images in [-1, 1] -> (B, heads x tokens) logits. The backbone is frozen; only the heads train. Its MLPs use
    tanh-approximated GELU, as the reference's `FrozenDINONoDrop` runs the DINO weights."""

    def __init__(self, cfg: DiscConfig, seed: int = 0, backbone: dict[str, torch.Tensor] | None = None) -> None:
        """`backbone`: the DINO file's state dict (`interop.loss_weights.disc_state`); None with `weights: none`."""
        super().__init__()
        self.cfg = cfg
        if (backbone is None) != (cfg.weights == "none"):
            raise ValueError(f"train_rae.disc.weights {cfg.weights!r}: the discriminator takes the backbone's state "
                             "dict exactly when the weights are a file (interop.loss_weights.disc_state reads it)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            vit = timm.create_model(cfg.model, pretrained=False, num_classes=0, img_size=cfg.input_size,
                                    **{"act_layer": "gelu_tanh", **cfg.overrides})
            if backbone is not None:  # None: a random backbone, for tests of the machinery only
                load_strict(vit, {k: v for k, v in backbone.items() if not k.startswith("head.")},
                            f"train_rae.disc.weights {cfg.weights!r}")
            depth = len(vit.blocks)
            # The last block's tokens, then those after each key depth (the reference's five maps for S/8).
            self.taps = [depth - 1, *(d for d in cfg.key_depths if d < depth)]
            c = vit.embed_dim
            self.heads = nn.ModuleList(
                nn.Sequential(_conv_block(c, 1), Residual(_conv_block(c, cfg.kernel_size)),
                              spectral_norm(nn.Conv1d(c, 1, 1), eps=1e-12))
                for _ in self.taps)
        self.backbone = vit.eval().requires_grad_(False)
        # [-1, 1] -> ImageNet normalization in one affine map
        std, mean = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.register_buffer("x_scale", 0.5 / std, persistent=False)
        self.register_buffer("x_shift", (0.5 - mean) / std, persistent=False)

    def train(self, mode: bool = True) -> DinoDiscriminator:
        super().train(mode)
        self.backbone.eval()  # frozen, whatever the caller asks
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.cfg.input_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        maps = self.backbone.forward_intermediates(x * self.x_scale + self.x_shift, indices=sorted(set(self.taps)),
                                                   output_fmt="NLC", intermediates_only=True)
        by_depth = dict(zip(sorted(set(self.taps)), maps))
        return torch.cat([head(by_depth[d].transpose(1, 2)).flatten(1) for head, d in zip(self.heads, self.taps)], 1)
