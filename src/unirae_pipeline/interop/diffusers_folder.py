"""diffusers `AutoencoderRAE` checkpoints (a `save_pretrained` folder: config.json + safetensors), read without
diffusers: the folder is plain files. The encoder reads its part from here; `diffusers` converts the decoder and
statistics (kept apart so that the encoder's stages do not depend on the decoder's code)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..models.imagenet import IMAGENET_MEAN, IMAGENET_STD
from ..models.serialization import read_state_dict

CLASS_NAME = "AutoencoderRAE"


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
        mean = self.config.get("encoder_norm_mean") or IMAGENET_MEAN  # diffusers' defaults
        std = self.config.get("encoder_norm_std") or IMAGENET_STD
        return tuple(map(float, mean)), tuple(map(float, std))

    @property
    def grid(self) -> int:
        return self.config["encoder_input_size"] // self.config["encoder_patch_size"]

    def part(self, prefix: str) -> dict[str, torch.Tensor]:
        """The weights under `prefix` (`encoder.`, `decoder.`), without it."""
        return {k.removeprefix(prefix): v for k, v in self.state.items() if k.startswith(prefix)}

    def buffer(self, key: str, config_key: str, default: float) -> torch.Tensor:
        """A latent statistic: the saved buffer, else the config's value, else diffusers' no-op default."""
        if key in self.state:
            return self.state[key].float()
        value = self.config.get(config_key)
        return torch.tensor(default if value is None else value, dtype=torch.float32)
