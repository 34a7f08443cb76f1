"""Typed views of params.yaml: every group becomes a validated dataclass before any heavy work runs."""

from __future__ import annotations

from typing import Any

from .data.images import DataConfig
from .data.latents import CacheConfig
from .diffusion.transport import TransportConfig
from .evaluation.classifier import ClassifierConfig
from .evaluation.extractors import FIDConfig
from .models.decoder import DecoderConfig
from .models.discriminator import DiscConfig
from .models.dit import DiTConfig
from .models.encoder import EncoderConfig
from .models.perceptual import LPIPSConfig
from .params import build
from .pipelines.sample.nodes import SampleConfig
from .pipelines.train_guide.nodes import GuideConfig
from .runtime import RuntimeConfig
from .training.fit import TrainerConfig
from .training.optim import DiTTrainConfig, OptimConfig
from .training.stage1 import RAETrainConfig

# params.yaml group -> the dataclass that validates it
GROUPS: dict[str, type] = {
    "data": DataConfig, "latents": CacheConfig, "encoder": EncoderConfig, "decoder": DecoderConfig, "dit": DiTConfig,
    "trainer": TrainerConfig, "diffusion": TransportConfig, "sample": SampleConfig, "train_rae": RAETrainConfig,
    "train_dit": DiTTrainConfig, "guide": GuideConfig, "fid": FIDConfig, "fid.classifier": ClassifierConfig,
    "fid.train": OptimConfig, "train_rae.lpips": LPIPSConfig, "train_rae.disc": DiscConfig, "runtime": RuntimeConfig,
}


def validate_params(params: dict) -> None:
    """Build every group once; the first invalid value raises, naming its key."""
    for name, cls in GROUPS.items():
        value: Any = params
        for part in name.split("."):
            if not isinstance(value, dict) or part not in value:
                raise ValueError(f"params.yaml has no {name!r} group")
            value = value[part]
        build(cls, value, name)

