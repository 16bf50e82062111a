"""Registry pipeline wiring: the evaluated model becomes a registered version; the gate picks the champion."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import register_model


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                register_model,
                inputs=["training_summary", "metrics", "dataset_info", "params:splitting.label_ratio", "params:registry"],
                outputs="promotion",
                name="register_model",
            )
        ]
    )
