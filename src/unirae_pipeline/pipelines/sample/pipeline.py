from kedro.pipeline import Node, Pipeline

from .nodes import sample


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([Node(sample, ["dit", "decoder", "latent_stats", "params:sample", "params:diffusion", "params:seed"],
                          ["samples", "samples_untrained", "sample_grid"], name="sample")])
