from kedro.pipeline import Node, Pipeline

from ...config.guide import RECIPE
from .nodes import train_guide


def create_pipeline(**kwargs) -> Pipeline:
    inputs = {"latents": "latents", "latent_stats": "latent_stats", "cfg": "params:guide",
              "transport": "params:diffusion", "trainer": "params:trainer", "seed": "params:seed",
              "run": "params:runtime", **{key: f"params:train_dit.{key}" for key in RECIPE}}
    return Pipeline([Node(train_guide, inputs, "dit_guide", name="train_guide")])
