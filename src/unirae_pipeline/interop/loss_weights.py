"""The loader layer of pretrained weights, part two: stage 1's loss networks, LPIPS' VGG16 and heads and the DINO
discriminator's backbone, read into state dicts for `LPIPS` and `DinoDiscriminator`, which never open a file. Nothing
is downloaded: a missing file is an error naming its params key."""

from __future__ import annotations

import torch

from ..models.discriminator import DiscConfig
from ..models.perceptual import LPIPSConfig
from ..models.serialization import read_state_dict

StateDict = dict[str, torch.Tensor]


def lpips_states(cfg: LPIPSConfig) -> tuple[StateDict, StateDict]:
    """torchvision's VGG16 and the LPIPS heads, as their files hold them."""
    return (read_state_dict(cfg.vgg_weights, "train_rae.lpips.vgg_weights"),
            read_state_dict(cfg.heads_weights, "train_rae.lpips.heads_weights"))


def disc_state(cfg: DiscConfig) -> StateDict | None:
    """The discriminator's DINO backbone, or None for `none` (a random backbone: tests of the machinery only)."""
    return None if cfg.weights == "none" else read_state_dict(cfg.weights, "train_rae.disc.weights")
