"""Evaluation pipeline wiring: predict the test split, score it, report it."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import predict_split, report_evaluation, score_predictions


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                predict_split,
                inputs=["validated_manifest", "splits", "training_summary", "params:evaluation", "params:ingestion.store_dir"],
                outputs="test_predictions",
                name="predict_split",
            ),
            node(
                score_predictions,
                inputs=["validated_manifest", "splits", "test_predictions", "dataset_info", "params:evaluation",
                        "params:ingestion.store_dir"],  # fmt: skip
                outputs=["metrics_per_case", "biometry_per_case", "metrics"],
                name="score_predictions",
            ),
            node(
                report_evaluation,
                inputs=["metrics_per_case", "biometry_per_case", "metrics", "validated_manifest", "test_predictions",
                        "training_summary", "dataset_info", "params:ingestion.store_dir"],  # fmt: skip
                outputs=["evaluation_overlays", "metric_distributions", "biometry_agreement"],
                name="report_evaluation",
            ),
        ]
    )
