from kedro.pipeline import Node, Pipeline

from .nodes import cache_latents


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([Node(cache_latents, ["image_set", "params:data.image_size", "params:encoder", "params:latents",
                                          "params:seed", "params:runtime"], "latents", name="cache_latents")])
