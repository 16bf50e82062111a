"""Training pipeline wiring."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import train_model


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                train_model,
                inputs=["validated_manifest", "splits", "dataset_info", "params:training", "params:ingestion.store_dir",
                        "tuned_params", "dvc_pipeline", "dvc_lock"],
                outputs=["training_summary", "learning_curve", "val_curve"],
                name="train_model",
            )
        ]
    )
