"""Typed views of params.yaml: every group becomes a validated dataclass before any heavy work runs; the files a
stage needs are checked when it starts (`check_environment`)."""

from __future__ import annotations

from collections.abc import Iterable
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


def check_environment(params: dict, keys: Iterable[str]) -> None:
    """The files (weights, data, reference statistics) that the params `keys` need, for the groups that have such
    needs: run when a stage that reads them starts, so that a machine runs the stages whose files it has."""
    read = {key.split(".")[0] for key in keys}
    for name, cls in GROUPS.items():
        if name in read and hasattr(cls, "check_environment"):
            build(cls, params[name], name).check_environment()


def validate_params(params: dict) -> None:
    """Build every group once; the first invalid value raises, naming its key."""
    for name, cls in GROUPS.items():
        value: Any = params
        for part in name.split("."):
            if not isinstance(value, dict) or part not in value:
                raise ValueError(f"params.yaml has no {name!r} group")
            value = value[part]
        build(cls, value, name)

