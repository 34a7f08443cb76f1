"""The loader layer of pretrained weights, part one: the encoder's file (a timm or transformers file, or the encoder
part of a diffusers RAE folder), read into a state dict in timm's layout for `FrozenEncoder`, which never opens a
file (`loss_weights` reads stage 1's loss networks; one module per consumer, so that a stage depends on the readers
it runs). Nothing is downloaded: a missing file is an error naming its params key."""

from __future__ import annotations

from pathlib import Path

import torch

from ..models.encoder import EncoderConfig
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
