"""Validation nodes: thin adapters over ``sonoseg.validation``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from sonoseg.io.store import SampleStore
from sonoseg.validation.expectations import ManifestSpec
from sonoseg.validation.report import classes_from_info, enforce_policy, preview_figure, validate_dataset


def validate_manifest(
    manifest: pd.DataFrame,
    rejected_files: pd.DataFrame,
    dataset_info: dict[str, Any],
    options: dict[str, Any],
    store_dir: str,
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame, Any]:
    """Check every sample; return the report, the quarantine list, the accepted manifest and a
    figure of mask overlays (accepted and quarantined samples).
    Under ``validation.policy: fail`` any problem stops the run with a message naming each file."""
    expectation_params = dict(options.get("expectations") or {})
    expectation_params.setdefault("require_masks", dataset_info["require_masks"])
    spec = ManifestSpec.from_params(expectation_params, classes_from_info(dataset_info))
    docs_dir = Path(options["docs_dir"]) if options.get("docs_dir") else None
    store = SampleStore(store_dir)
    result = validate_dataset(manifest, rejected_files, spec, store, docs_dir, progress=bool(options.get("progress", True)))
    result.report["policy"] = options["policy"]
    enforce_policy(result, options["policy"])
    return result.report, result.quarantine, result.accepted, preview_figure(result, manifest, store)
