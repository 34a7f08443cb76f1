from kedro.pipeline import Node, Pipeline

from .nodes import evaluate


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([Node(evaluate, ["samples", "samples_untrained", "feature_extractor", "reference_stats"],
                          ["metrics", "scores"],
                          name="evaluate")])
