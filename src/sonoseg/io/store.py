"""The standardized sample store (DESIGN.md §2): one ``.npy`` file per image and per mask under a
store folder, at the original resolution, described by a manifest table with one row per sample.

``.npy`` keeps the dtype and can be memory-mapped, so downstream stages read lazily.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from sonoseg.io.readers import Reader
from sonoseg.io.samples import RawSample, Rejected, SampleError

logger = logging.getLogger(__name__)

BASE_COLUMNS = [
    "sample_id", "source", "subject_id", "has_mask", "image_path", "mask_path", "source_image", "source_mask",
    "height", "width", "mask_height", "mask_width", "dtype", "spacing_row_mm", "spacing_col_mm", "sha256",
    "intensity_min", "intensity_max", "intensity_mean", "intensity_std", "nonfinite_count", "labels", "fg_fraction",
]  # fmt: skip


def fraction_column(label: int) -> str:
    """The manifest column holding the pixel fraction of one foreground class."""
    return f"fraction_{label}"


def manifest_columns(classes: Mapping[int, str]) -> list[str]:
    """All manifest columns for a dataset with these classes."""
    return BASE_COLUMNS + [fraction_column(k) for k in sorted(classes) if k != 0]


def pixel_sha256(image: np.ndarray) -> str:
    """A hash of the pixels (dtype and shape included), independent of the file format they came in."""
    digest = hashlib.sha256(f"{image.dtype.str}{image.shape}".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def describe(sample: RawSample, classes: Mapping[int, str]) -> dict:
    """The manifest statistics of one sample: shape, intensity, label set and class fractions."""
    image, mask = sample.image, sample.mask
    finite = np.isfinite(image) if np.issubdtype(image.dtype, np.floating) else None
    values = image[finite] if finite is not None else image
    nonfinite = int(image.size - values.size)
    row = {
        "height": int(image.shape[0]),
        "width": int(image.shape[1]),
        "dtype": image.dtype.name,
        "sha256": pixel_sha256(image),
        "intensity_min": float(values.min()) if values.size else np.nan,
        "intensity_max": float(values.max()) if values.size else np.nan,
        "intensity_mean": float(values.mean(dtype=np.float64)) if values.size else np.nan,
        "intensity_std": float(values.std(dtype=np.float64)) if values.size else np.nan,
        "nonfinite_count": nonfinite,
        "has_mask": mask is not None,
        "mask_height": int(mask.shape[0]) if mask is not None else None,
        "mask_width": int(mask.shape[1]) if mask is not None else None,
        "spacing_row_mm": sample.spacing_mm[0] if sample.spacing_mm else np.nan,
        "spacing_col_mm": sample.spacing_mm[1] if sample.spacing_mm else np.nan,
    }
    if mask is None:
        row["labels"] = ""
        row["fg_fraction"] = np.nan
        row.update({fraction_column(k): np.nan for k in classes if k != 0})
    else:
        counts = np.bincount(mask.ravel(), minlength=256)
        row["labels"] = ",".join(str(v) for v in np.flatnonzero(counts))
        row["fg_fraction"] = float(counts[1:].sum() / mask.size)
        row.update({fraction_column(k): float(counts[k] / mask.size) for k in classes if k != 0})
    return row


def manifest_spacing(row: pd.Series) -> tuple[float, float] | None:
    """A manifest row's (row_mm, col_mm) pixel size, or None when the source gave none."""
    spacing = (row["spacing_row_mm"], row["spacing_col_mm"])
    return None if any(pd.isna(s) for s in spacing) else (float(spacing[0]), float(spacing[1]))


def samples_digest(manifest: pd.DataFrame) -> str:
    """A sha256 over the samples' ids and pixel hashes, in order: the data version a model saw, or the
    identity of a split (two evaluations are comparable only on the same test digest)."""
    digest = hashlib.sha256()
    for sample_id, sha in zip(manifest["sample_id"], manifest["sha256"]):
        digest.update(f"{sample_id}:{sha}\n".encode())
    return digest.hexdigest()


class SampleStore:
    """Per-sample ``.npy`` files under ``root/images`` and ``root/masks``; paths in the manifest are
    relative to ``root`` so the store can move as a whole (e.g. under DVC)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def write(self, sample: RawSample, source: str, classes: Mapping[int, str]) -> dict:
        """Store one sample atomically and return its manifest row."""
        image_path = f"images/{sample.sample_id}.npy"
        self._save(image_path, sample.image)
        mask_path = None
        if sample.mask is not None:
            mask_path = f"masks/{sample.sample_id}.npy"
            self._save(mask_path, sample.mask)
        return {
            "sample_id": sample.sample_id,
            "source": source,
            "subject_id": sample.subject_id,
            "image_path": image_path,
            "mask_path": mask_path,
            "source_image": sample.source_image,
            "source_mask": sample.source_mask,
            **describe(sample, classes),
        }

    def _save(self, relative: str, array: np.ndarray) -> None:
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        with partial.open("wb") as handle:
            np.save(handle, array, allow_pickle=False)
        os.replace(partial, target)

    def load(self, relative: str) -> np.ndarray:
        """One stored array, memory-mapped. Raises ``SampleError`` if it cannot be read."""
        path = self.root / relative
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise SampleError(str(path), f"stored array cannot be read ({err})") from err

    def prune(self, manifest: pd.DataFrame) -> int:
        """Delete stored arrays that the manifest no longer lists (left by an earlier ingestion)."""
        keep = {self.root / p for p in pd.concat([manifest["image_path"], manifest["mask_path"]]).dropna()}
        removed = 0
        for folder in (self.root / "images", self.root / "masks"):
            for path in folder.glob("*.npy*") if folder.is_dir() else ():
                if path not in keep:
                    path.unlink()
                    removed += 1
        return removed


def ingest(
    reader: Reader, store: SampleStore, progress: bool = True, extra_rejected: Iterable[Rejected] = ()
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stream every sample of ``reader`` into ``store``.

    Returns:
        The manifest (one row per decoded sample) and the rejected files (``file, reason``), which
        together account for every file the source holds.
    """
    from tqdm.auto import tqdm

    scan = reader.scan()
    for folder in ("images", "masks"):  # both exist even when a source has no masks: DVC tracks them
        (store.root / folder).mkdir(parents=True, exist_ok=True)
    rejected = list(extra_rejected) + list(scan.rejected)
    rows = []
    for ref in tqdm(scan.refs, desc=f"ingest {reader.name}", unit="sample", disable=not progress):
        try:
            sample = reader.load(ref)
        except SampleError as err:
            rejected.append(Rejected(err.file, err.reason))
            partners = {ref.image_file, ref.mask_file} - {err.file, None}
            rejected += [Rejected(f, f"its paired file {Path(err.file).name} was rejected: {err.reason}") for f in partners]
            continue
        rows.append(store.write(sample, reader.name, reader.classes))
    manifest = pd.DataFrame(rows, columns=manifest_columns(reader.classes))
    manifest = manifest.astype({"mask_height": "Int64", "mask_width": "Int64", "has_mask": bool})
    rejected_table = pd.DataFrame([(r.file, r.reason) for r in rejected], columns=["file", "reason"])
    removed = store.prune(manifest)
    logger.info(
        "Ingested %d samples from %s (%d with masks); %d files rejected; %d stale arrays removed from %s",
        len(manifest), reader.name, int(manifest["has_mask"].sum()), len(rejected_table), removed, store.root,
    )  # fmt: skip
    return manifest, rejected_table
