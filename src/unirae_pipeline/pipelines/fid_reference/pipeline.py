from kedro.pipeline import Node, Pipeline

from .nodes import reference_statistics, train_classifier


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(train_classifier, ["image_set", "params:data.image_size", "params:fid", "params:trainer", "params:seed"],
             ["classifier", "classifier_loss"], name="train_classifier"),
        Node(reference_statistics, ["classifier", "image_set", "params:data.image_size"],
             ["reference_stats", "classifier_metrics"], name="reference_statistics"),
    ])
