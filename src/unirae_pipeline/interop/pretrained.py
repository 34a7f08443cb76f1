"""The loader layer of pretrained weights: the files that params name, read into state dicts for the model
constructors, which never open a file. The encoder's (a timm or transformers file, or the encoder part of a
diffusers RAE folder, in timm's layout), LPIPS' VGG16 and heads, and the DINO discriminator's backbone. Nothing is
downloaded: a missing file is an error naming its params key."""

from __future__ import annotations

from pathlib import Path

import torch

from ..models.discriminator import DiscConfig
from ..models.encoder import EncoderConfig
from ..models.perceptual import LPIPSConfig
from ..models.serialization import read_state_dict
from .diffusers_folder import DiffusersRAE
from .hf_encoders import hf_to_timm, is_hf_layout

StateDict = dict[str, torch.Tensor]


def encoder_state(cfg: EncoderConfig) -> StateDict | None:
    """`encoder.weights` in timm's layout (transformers files converted), or None for `none` and `hub` (timm's own
    pretrained id). A diffusers RAE folder gives its encoder part, whose input size and normalization must be this
    encoder's: its decoder and statistics were made with them."""
    if cfg.weights in ("none", "hub"):
        return None
    if Path(cfg.weights).is_dir():
        rae = DiffusersRAE(cfg.weights, "encoder.weights")
        theirs = (rae.config["encoder_input_size"], rae.pixel_norm)
        if theirs != (cfg.input_size, cfg.pixel_norm):
            raise ValueError(f"encoder.weights {cfg.weights!r}: the diffusers RAE encodes at {theirs[0]} px with "
                             f"normalization {theirs[1]}; encoder {cfg.model!r} at encoder.input_size "
                             f"{cfg.input_size} normalizes with {cfg.pixel_norm}: choose the preset of its encoder")
        state = rae.part("encoder.")
    else:
        state = read_state_dict(cfg.weights, "encoder.weights")
    return hf_to_timm(state) if is_hf_layout(state) else dict(state)


def lpips_states(cfg: LPIPSConfig) -> tuple[StateDict, StateDict]:
    """torchvision's VGG16 and the LPIPS heads, as their files hold them."""
    return (read_state_dict(cfg.vgg_weights, "train_rae.lpips.vgg_weights"),
            read_state_dict(cfg.heads_weights, "train_rae.lpips.heads_weights"))


def disc_state(cfg: DiscConfig) -> StateDict | None:
    """The discriminator's DINO backbone, or None for `none` (a random backbone: tests of the machinery only)."""
    return None if cfg.weights == "none" else read_state_dict(cfg.weights, "train_rae.disc.weights")
