from dataclasses import fields

from kedro.pipeline import Node, Pipeline

from ...training.optim import DiTTrainConfig
from .nodes import train_guide

# The guide is trained by the main run's recipe but for its own duration: it reads every train_dit key except those
# two, so that running the main DiT longer (or snapshotting elsewhere) does not retrain the guide.
RECIPE = [f.name for f in fields(DiTTrainConfig) if f.name not in ("duration", "guide_at")]


def create_pipeline(**kwargs) -> Pipeline:
    inputs = {"latents": "latents", "latent_stats": "latent_stats", "cfg": "params:guide",
              "transport": "params:diffusion", "trainer": "params:trainer", "seed": "params:seed",
              "run": "params:runtime",
              **{key: f"params:train_dit.{key}" for key in RECIPE}}
    return Pipeline([Node(train_guide, inputs, "dit_guide", name="train_guide")])
