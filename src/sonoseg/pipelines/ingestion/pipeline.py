"""Ingestion pipeline wiring."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import ingest_source


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                ingest_source,
                inputs=["params:ingestion", "s3_settings"],
                outputs=["manifest", "rejected_files", "dataset_info"],
                name="ingest_source",
            )
        ]
    )
