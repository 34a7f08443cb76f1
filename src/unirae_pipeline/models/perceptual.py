"""LPIPS-VGG16 (v0.1, the variant VQGAN and RAE's stage 1 train with): frozen, from local weights files only."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from .serialization import load_strict

# torchvision's vgg16().features split after relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3
_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))
_CHANNELS = (64, 128, 256, 512, 512)


@dataclass(frozen=True)
class LPIPSConfig:
    """`train_rae.lpips`: torchvision's ImageNet VGG16 file (vgg16-397923af.pth) and LPIPS' linear heads (the
    v0.1 `vgg.pth` shipped with the `lpips` package and used by taming-transformers)."""

    vgg_weights: str | None
    heads_weights: str | None


class LPIPS(nn.Module):
    """Distance between images in [-1, 1]: unit-normalized VGG activations, squared differences weighted per
    channel by the learned heads, averaged over space and summed over the five layers. Returns one value per image."""

    def __init__(self, vgg: dict[str, torch.Tensor] | None = None,
                 heads: dict[str, torch.Tensor] | None = None) -> None:
        """`vgg`, `heads`: the two files' state dicts (`interop.loss_weights.lpips_states`); none: random weights."""
        super().__init__()
        features = torchvision.models.vgg16(weights=None).features
        self.slices = nn.ModuleList(nn.Sequential(*features[a:b]) for a, b in _SLICES)
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        if (vgg is None) != (heads is None):
            raise ValueError("LPIPS takes both state dicts, VGG16's and the heads', or neither")
        if vgg is not None:
            self.load(vgg, heads)
        self.eval().requires_grad_(False)

    def load(self, vgg: dict[str, torch.Tensor], heads: dict[str, torch.Tensor]) -> None:
        load_strict(self.slices, {_in_slice(k): v for k, v in vgg.items() if not k.startswith("classifier.")},
                    "train_rae.lpips.vgg_weights")
        # LPIPS files name the 1x1 convs lin<i>.model.1 (after a dropout) or lin<i>.model.0 (without one)
        renamed = {f"{k.split('.')[0][3:]}.weight": v for k, v in heads.items() if k.startswith("lin")}
        load_strict(self.heads, renamed, "train_rae.lpips.heads_weights")

    def train(self, mode: bool = True) -> LPIPS:
        return super().train(False)  # frozen: eval mode always

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x, y]).sub(self.shift).div(self.scale)
        total = 0
        for block, head in zip(self.slices, self.heads):
            h = block(h)
            a, b = (h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)).chunk(2)
            total = total + head((a - b).pow(2)).mean((2, 3))
        return total.flatten()


def _in_slice(key: str) -> str:
    """'features.<layer>.<param>' of torchvision's VGG16 -> '<slice>.<layer within the slice>.<param>'."""
    parts = key.split(".")
    if len(parts) == 3 and parts[0] == "features" and parts[1].isdigit():
        for i, (a, b) in enumerate(_SLICES):
            if a <= int(parts[1]) < b:
                return f"{i}.{int(parts[1]) - a}.{parts[2]}"
    return key  # reported as an unknown key
