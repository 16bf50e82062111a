"""Splitting pipeline wiring."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import split_samples


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                split_samples,
                inputs=["validated_manifest", "params:splitting", "params:ingestion.store_dir"],
                outputs=["splits", "split_report"],
                name="split_samples",
            )
        ]
    )
