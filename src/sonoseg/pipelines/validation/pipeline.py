"""Validation pipeline wiring."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import validate_manifest


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                validate_manifest,
                inputs=["manifest", "rejected_files", "dataset_info", "params:validation", "params:ingestion.store_dir"],
                outputs=["validation_report", "quarantine", "validated_manifest", "validation_preview"],
                name="validate_manifest",
            )
        ]
    )
