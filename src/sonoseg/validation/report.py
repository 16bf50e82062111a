"""Validation of an ingested dataset: GX expectations over the manifest plus pixel checks over the
stored arrays, merged into one report, one quarantine list and the accepted manifest."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sonoseg.io.samples import SampleError
from sonoseg.io.store import SampleStore
from sonoseg.validation.expectations import ManifestSpec, run_manifest_suite
from sonoseg.validation.pixel_checks import check_stored_sample

logger = logging.getLogger(__name__)

POLICIES = ("fail", "quarantine")
QUARANTINE_COLUMNS = ["file", "reason", "sample_id", "mask_file", "stage"]


class ValidationFailed(Exception):
    """Raised under the ``fail`` policy; its message names every offending file and why."""


@dataclass
class ValidationResult:
    report: dict
    quarantine: pd.DataFrame
    accepted: pd.DataFrame


def validate_dataset(
    manifest: pd.DataFrame,
    rejected_files: pd.DataFrame,
    spec: ManifestSpec,
    store: SampleStore,
    docs_dir: Path | None = None,
    progress: bool = True,
) -> ValidationResult:
    """Run both kinds of check. Files rejected at ingestion are quarantined too, so every input file
    is either accepted or listed with its reason."""
    from tqdm.auto import tqdm

    reasons: dict[str, list[tuple[str, str]]] = {}
    rows = manifest[["sample_id", "image_path", "mask_path"]].itertuples(index=False)
    for sample_id, image_path, mask_path in tqdm(rows, total=len(manifest), desc="pixel checks", disable=not progress):
        for reason in check_stored_sample(store, image_path, mask_path if isinstance(mask_path, str) else None):
            reasons.setdefault(sample_id, []).append(("pixels", reason))
    suite = run_manifest_suite(manifest, spec, docs_dir)
    for sample_id, reason in suite.row_failures:
        reasons.setdefault(sample_id, []).append(("expectations", reason))

    by_id = manifest.set_index("sample_id")
    quarantined = [
        {
            "file": by_id.at[sample_id, "source_image"],
            "reason": "; ".join(reason for _, reason in found),
            "sample_id": sample_id,
            "mask_file": by_id.at[sample_id, "source_mask"],
            "stage": "+".join(sorted({stage for stage, _ in found})),
        }
        for sample_id, found in reasons.items()
    ]
    quarantined += [
        {"file": row.file, "reason": row.reason, "sample_id": None, "mask_file": None, "stage": "ingestion"}
        for row in rejected_files.itertuples(index=False)
    ]
    quarantine = pd.DataFrame(quarantined, columns=QUARANTINE_COLUMNS)
    accepted = manifest[~manifest["sample_id"].isin(reasons)].reset_index(drop=True)
    report = {
        "success": not quarantined and not suite.table_failures,
        "n_manifest_rows": int(len(manifest)),
        "n_accepted": int(len(accepted)),
        "n_quarantined_samples": len(reasons),
        "n_rejected_files": int(len(rejected_files)),
        "table_failures": list(suite.table_failures),
        "expectations": suite.expectations,
        "data_docs": str(suite.data_docs_index) if suite.data_docs_index else None,
        "quarantine": quarantined,
    }
    logger.info(
        "Validation: %d of %d samples accepted, %d quarantined, %d files rejected at ingestion",
        len(accepted), len(manifest), len(reasons), len(rejected_files),
    )  # fmt: skip
    return ValidationResult(report, quarantine, accepted)


def enforce_policy(result: ValidationResult, policy: str) -> None:
    """Under ``fail``, stop with one paragraph naming each offending file and reason; under
    ``quarantine``, only warn (the bad samples are already excluded from the accepted manifest).
    A malformed manifest (a table-level failure) stops the run under either policy: no row of it
    can be trusted."""
    if policy not in POLICIES:
        raise ValueError(f"validation.policy is '{policy}': expected one of {', '.join(POLICIES)}")
    table_failures = result.report["table_failures"]
    if table_failures:
        raise ValidationFailed("The manifest is malformed: " + "; ".join(table_failures) + ". Re-run ingestion.")
    problems = [f"{row.file}: {row.reason}" for row in result.quarantine.itertuples(index=False)]
    if not problems:
        return
    if policy == "fail":
        raise ValidationFailed(
            f"Validation failed for {len(problems)} file(s) under policy 'fail': " + "; ".join(problems)
            + ". Fix or remove these files, or set validation.policy=quarantine to exclude them and continue."
        )
    logger.warning("Quarantined %d file(s); the list is in the quarantine table", len(problems))


def classes_from_info(dataset_info: Mapping) -> dict[int, str]:
    """The declared classes as written by ingestion (JSON keys are strings)."""
    return {int(k): v for k, v in dataset_info["classes"].items()}


def preview_figure(result: ValidationResult, manifest: pd.DataFrame, store: SampleStore, per_group: int = 8):
    """Mask overlays of accepted samples (evenly spread) and of quarantined ones, captioned with the
    reason: the quickest way to see whether masks sit on the anatomy and why samples were refused."""
    from sonoseg.evaluation.plots import overlay_montage

    def panel(row, caption: str):
        try:
            image = store.load(row.image_path)
            mask = store.load(row.mask_path) if isinstance(row.mask_path, str) else None
        except SampleError as err:
            return np.zeros((8, 8), np.float32), None, f"{caption}\n(not decodable: {err.reason[:40]})"
        return image, mask if mask is not None and mask.shape == image.shape else None, caption

    accepted = result.accepted
    picks = accepted.iloc[np.linspace(0, len(accepted) - 1, min(per_group, len(accepted))).astype(int)] if len(accepted) else accepted
    panels = [panel(row, f"{row.sample_id}") for row in picks.itertuples(index=False)]
    bad = result.quarantine.dropna(subset=["sample_id"]).head(per_group)
    rows_by_id = manifest.set_index("sample_id")
    for item in bad.itertuples(index=False):
        row = rows_by_id.loc[item.sample_id]
        panels.append(panel(row, f"QUARANTINED {item.sample_id}: {item.reason[:60]}"))
    return overlay_montage(panels, title=f"{len(accepted)} accepted, {len(bad)} quarantined shown")
