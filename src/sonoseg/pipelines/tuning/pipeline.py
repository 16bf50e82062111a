"""Tuning pipeline wiring."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import select_tuned_params, tune_hyperparameters


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                tune_hyperparameters,
                inputs=["validated_manifest", "splits", "dataset_info", "params:training", "params:tuning",
                        "params:ingestion.store_dir"],  # fmt: skip
                outputs=["tuning_report", "tuning_reports", "tuning_figures"],
                name="tune_hyperparameters",
            ),
            # after the report is saved, so a study without a complete trial still leaves its report
            node(select_tuned_params, inputs="tuning_report", outputs="tuned_params", name="select_tuned_params"),
        ]
    )
