from kedro.pipeline import Node, Pipeline

from .nodes import train_dit


def create_pipeline(**kwargs) -> Pipeline:
    inputs = ["latents", "latent_stats", "params:dit", "params:train_dit", "params:diffusion", "params:trainer",
              "params:seed", "params:runtime"]
    return Pipeline([Node(train_dit, inputs, ["dit", "dit_snapshot", "dit_loss"], name="train_dit")])
