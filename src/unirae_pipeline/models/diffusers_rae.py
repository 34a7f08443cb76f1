"""diffusers `AutoencoderRAE` checkpoints (a `save_pretrained` folder: config.json + safetensors) read as this
pipeline's encoder weights, decoder and latent statistics. Reading needs no diffusers: the folder is plain files.

diffusers normalizes latents as (z - mean) / (std + 1e-5) * scaling_factor where the reference (and this pipeline)
divides by sqrt(var + 1e-5); the statistics are converted so that both give the same latents.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..data.latents import STATS_EPS
from .decoder import ViTDecoder
from .official import load_official_decoder
from .serialization import read_state_dict

CLASS_NAME = "AutoencoderRAE"
# diffusers' attention names in the decoder -> the reference GeneralDecoder's (HF ViTMAE's), which `official` reads
_ATTENTION = {"attention.to_q.": "attention.attention.query.", "attention.to_k.": "attention.attention.key.",
              "attention.to_v.": "attention.attention.value.", "attention.to_out.0.": "attention.output.dense."}
DIFFUSERS_EPS = 1e-5  # added to the std by diffusers' (de)normalization


def is_diffusers_rae(path: str | Path) -> bool:
    config = Path(path) / "config.json"
    return config.is_file() and json.loads(config.read_text(encoding="utf-8")).get("_class_name") == CLASS_NAME


class DiffusersRAE:
    """One `AutoencoderRAE` folder: its config and weights, split into the parts this pipeline stores apart."""

    def __init__(self, path: str | Path, param: str) -> None:
        self.path, self.param = Path(path), param
        if not is_diffusers_rae(self.path):
            raise FileNotFoundError(f"{param}: {str(path)!r} is not a diffusers {CLASS_NAME} folder (config.json with "
                                    f"_class_name {CLASS_NAME}, from save_pretrained)")
        self.config: dict[str, Any] = json.loads((self.path / "config.json").read_text(encoding="utf-8"))
        files = sorted(self.path.glob("diffusion_pytorch_model*.safetensors"))
        if not files:
            raise FileNotFoundError(f"{param}: {self.path} holds no diffusion_pytorch_model*.safetensors")
        self.state = {k: v for f in files for k, v in read_state_dict(f, param).items()}

    @property
    def pixel_norm(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        mean = self.config.get("encoder_norm_mean") or [0.485, 0.456, 0.406]  # diffusers' defaults: ImageNet's
        std = self.config.get("encoder_norm_std") or [0.229, 0.224, 0.225]
        return tuple(map(float, mean)), tuple(map(float, std))

    def encoder_state(self) -> dict[str, torch.Tensor]:
        """The encoder's transformers weights (`encoder.*`), for `hf_encoders.hf_to_timm`."""
        return {k.removeprefix("encoder."): v for k, v in self.state.items() if k.startswith("encoder.")}

    def decoder(self) -> ViTDecoder:
        """The decoder (the reference's `GeneralDecoder` layout under `decoder.`), de-normalizing as the encoder's
        input normalization says."""
        c = self.config
        state = {_official(k.removeprefix("decoder.")): v for k, v in self.state.items() if k.startswith("decoder.")}
        grid = c["encoder_input_size"] // c["encoder_patch_size"]
        mean, std = self.pixel_norm
        return load_official_decoder(state, hidden_size=c["decoder_hidden_size"], depth=c["decoder_num_hidden_layers"],
                                     num_heads=c["decoder_num_attention_heads"], mlp_dim=c["decoder_intermediate_size"],
                                     patch_size=c["patch_size"], latent_dim=c["encoder_hidden_size"],
                                     num_patches=grid * grid, image_mean=mean, image_std=std)

    def stats(self) -> dict[str, torch.Tensor]:
        """{'mean', 'var'} of the full latent shape with which `data.latents.normalize` gives diffusers' latents."""
        c = self.config
        grid = c["encoder_input_size"] // c["encoder_patch_size"]
        shape = (c["encoder_hidden_size"], grid, grid)
        mean = self._buffer("_latents_mean", "latents_mean", 0.0)
        std = self._buffer("_latents_std", "latents_std", 1.0)
        scale = float(c.get("scaling_factor", 1.0))
        if scale <= 0:
            raise ValueError(f"{self.param}: scaling_factor must be > 0, got {scale}")
        divisor = (std + DIFFUSERS_EPS) / scale  # what diffusers divides (z - mean) by
        try:
            mean, divisor = torch.broadcast_to(mean, shape), torch.broadcast_to(divisor, shape)
        except RuntimeError:
            raise ValueError(f"{self.param}: latent statistics of shape {tuple(mean.shape)}/{tuple(std.shape)} do "
                             f"not broadcast to the latent shape {shape}") from None
        return {"mean": mean.double().clone().float(), "var": (divisor.double() ** 2 - STATS_EPS).float()}

    def _buffer(self, key: str, config_key: str, default: float) -> torch.Tensor:
        if key in self.state:
            return self.state[key].float()
        value = self.config.get(config_key)
        return torch.tensor(default if value is None else value, dtype=torch.float32)


def _official(key: str) -> str:
    for src, dst in _ATTENTION.items():
        key = key.replace(src, dst)
    return key
