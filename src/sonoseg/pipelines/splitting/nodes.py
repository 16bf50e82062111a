"""Splitting nodes: thin adapters over ``sonoseg.splitting``."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from sonoseg.io.store import SampleStore
from sonoseg.splitting.leak_aware import (
    SplitConfig,
    assign_splits,
    cross_split_similarity,
    group_samples,
    image_signatures,
    split_report,
)

logger = logging.getLogger(__name__)


def split_samples(manifest: pd.DataFrame, options: dict[str, Any], store_dir: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Group correlated samples, assign splits, and check the boundaries for leaks.

    Returns:
        ``splits`` (sample_id, subject_id, group_id, split) and the split report.
    """
    config = SplitConfig(**options)
    store = SampleStore(store_dir)
    signatures = image_signatures((store.load(p) for p in manifest["image_path"]), config.signature_size)
    sample_ids = manifest["sample_id"].tolist()
    subject_ids = [s if isinstance(s, str) else None for s in manifest["subject_id"]]
    groups = group_samples(sample_ids, subject_ids, signatures, config.similarity_threshold, config.neighbour_threshold)
    table = manifest.assign(group_id=groups)
    class_columns = [c for c in manifest.columns if c.startswith("fraction_")]
    table["split"] = assign_splits(table, config, class_columns)
    leak = cross_split_similarity(signatures, table["split"].tolist(), sample_ids)
    report = split_report(table, class_columns, leak, config)
    logger.info("Split counts %s; %d groups; largest cross-split similarity %s", report["counts"],
                report["groups"]["count"], report["leak_check"]["largest"])  # fmt: skip
    return table[["sample_id", "subject_id", "group_id", "split"]], report
