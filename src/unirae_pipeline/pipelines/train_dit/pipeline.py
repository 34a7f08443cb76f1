from kedro.pipeline import Node, Pipeline

from .nodes import train_dit


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([Node(train_dit, ["latents", "latent_stats", "params:dit", "params:train_dit", "params:diffusion",
                                      "params:trainer", "params:seed"], ["dit", "dit_loss"], name="train_dit")])
