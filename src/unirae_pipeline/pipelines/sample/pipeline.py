from kedro.pipeline import Node, Pipeline

from .nodes import sample


def create_pipeline(**kwargs) -> Pipeline:
    inputs = ["dit", "dit_snapshot", "dit_guide", "decoder", "latent_stats", "params:sample", "params:diffusion",
              "params:seed", "params:runtime"]
    return Pipeline([Node(sample, inputs, ["samples", "samples_untrained", "sample_grid"], name="sample")])
