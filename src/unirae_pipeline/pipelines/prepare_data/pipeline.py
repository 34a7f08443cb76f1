from kedro.pipeline import Node, Pipeline

from .nodes import prepare_image_set


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([Node(prepare_image_set, ["params:data", "params:seed"], "image_set", name="prepare_image_set")])
