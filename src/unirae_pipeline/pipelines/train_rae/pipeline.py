from kedro.pipeline import Node, Pipeline

from .nodes import evaluate_rae, train_rae


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(train_rae, ["latents", "image_set", "params:encoder", "params:decoder", "params:train_rae",
                             "params:trainer", "params:seed",
                             "params:runtime"], ["decoder", "rae_loss"], name="train_rae"),
        Node(evaluate_rae, ["decoder", "latents", "image_set", "feature_extractor", "reference_stats",
                                "params:train_rae.tf32", "params:runtime"],
             ["rae_metrics", "reconstructions"], name="evaluate_rae"),
    ])
