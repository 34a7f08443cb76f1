from kedro.pipeline import Node, Pipeline

from .nodes import build_feature_extractor, reference_statistics


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(build_feature_extractor, ["image_set", "params:data.image_size", "params:fid", "params:trainer",
                                       "params:seed", "params:runtime"], ["feature_extractor", "classifier_loss"],
             name="build_feature_extractor"),
        Node(reference_statistics, ["feature_extractor", "image_set", "params:data.image_size", "params:fid",
                                    "params:runtime"],
             ["reference_stats", "classifier_metrics"], name="reference_statistics"),
    ])
