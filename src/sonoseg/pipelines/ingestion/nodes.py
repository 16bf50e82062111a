"""Ingestion nodes: thin adapters over ``sonoseg.io``."""

from __future__ import annotations

from typing import Any

import pandas as pd

from sonoseg.io.sources import open_source
from sonoseg.io.store import SampleStore, ingest


def ingest_source(options: dict[str, Any], s3_settings: Any) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Stream the configured source into the sample store.

    Returns:
        The manifest, the files rejected while reading (file, reason), and the dataset description
        (source, classes, whether every sample must have a mask) that validation checks against.
    """
    reader, rejected_early = open_source(options, s3_settings.resolve)
    store = SampleStore(options["store_dir"])
    manifest, rejected = ingest(reader, store, progress=bool(options.get("progress", True)), extra_rejected=rejected_early)
    info = {
        "source": options["source"],
        "layout": reader.name,
        "root": str(reader.root),
        "classes": {str(k): v for k, v in sorted(reader.classes.items())},
        "require_masks": reader.require_masks,
        "n_samples": int(len(manifest)),
        "n_rejected_files": int(len(rejected)),
    }
    return manifest, rejected, info
