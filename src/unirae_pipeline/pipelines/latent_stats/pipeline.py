from kedro.pipeline import Node, Pipeline

from .nodes import latent_stats


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([Node(latent_stats, "latents", "latent_stats", name="latent_stats")])
