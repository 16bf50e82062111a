"""The sample store: stats per sample, atomic writes, lazy reads, pruning, and nothing lost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.layouts import write_psfhs

from sonoseg.io.readers import PSFHS_CLASSES, PsfhsReader
from sonoseg.io.samples import RawSample, SampleError
from sonoseg.io.store import SampleStore, describe, ingest, manifest_spacing, pixel_sha256


def test_describe_hand_computed_fractions_and_labels():
    mask = np.zeros((4, 5), np.uint8)
    mask[0, :2] = 1  # 2 of 20 pixels
    mask[1:3, 1:3] = 2  # 4 of 20 pixels
    image = np.arange(20, dtype=np.uint8).reshape(4, 5)
    row = describe(RawSample("a", image, mask, "a.png", spacing_mm=(0.5, 0.25)), PSFHS_CLASSES)
    assert row["labels"] == "0,1,2"
    assert row["fraction_1"] == pytest.approx(0.1) and row["fraction_2"] == pytest.approx(0.2)
    assert row["fg_fraction"] == pytest.approx(0.3)
    assert (row["intensity_min"], row["intensity_max"]) == (0.0, 19.0)
    assert row["intensity_std"] == pytest.approx(np.arange(20).std())
    assert (row["spacing_row_mm"], row["spacing_col_mm"]) == (0.5, 0.25)
    assert row["nonfinite_count"] == 0 and row["has_mask"]


def test_describe_counts_nan_pixels_and_ignores_them_in_intensity():
    image = np.array([[1.0, np.nan], [np.inf, 3.0]], np.float32)
    row = describe(RawSample("a", image, None, "a.npy"), PSFHS_CLASSES)
    assert row["nonfinite_count"] == 2
    assert (row["intensity_min"], row["intensity_max"]) == (1.0, 3.0)
    assert row["labels"] == "" and np.isnan(row["fraction_2"])


def test_pixel_hash_depends_on_pixels_dtype_and_shape_only():
    a = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert pixel_sha256(a) == pixel_sha256(a.copy(order="F"))
    assert pixel_sha256(a) != pixel_sha256(a.reshape(3, 2))
    assert pixel_sha256(a) != pixel_sha256(a.astype(np.uint16))


def test_ingest_accounts_for_every_file_and_prunes_stale_arrays(tmp_path):
    raw = tmp_path / "raw"
    write_psfhs(raw, n=4, size=32)
    (raw / "image_mha" / "00003.mha").write_bytes(b"")  # zero-byte image: its label must not vanish
    store = SampleStore(tmp_path / "store")
    (tmp_path / "store" / "images").mkdir(parents=True)
    np.save(tmp_path / "store" / "images" / "stale.npy", np.zeros(2))

    manifest, rejected = ingest(PsfhsReader(raw), store, progress=False)

    assert manifest["sample_id"].tolist() == ["psfhs-00001", "psfhs-00002", "psfhs-00004"]
    reasons = dict(zip(rejected["file"].map(lambda f: Path(f).parent.name + "/" + Path(f).name), rejected["reason"]))
    assert reasons["image_mha/00003.mha"] == "empty file (0 bytes)"
    assert "00003.mha was rejected" in reasons["label_mha/00003.mha"]
    every_file = {str(p) for p in raw.rglob("*.mha")}
    accounted = set(manifest["source_image"]) | set(manifest["source_mask"]) | set(rejected["file"])
    assert accounted == every_file
    assert not (tmp_path / "store" / "images" / "stale.npy").exists()
    row = manifest.iloc[0]
    image = store.load(row["image_path"])
    assert isinstance(image, np.memmap) and image.shape == (32, 32)
    assert pixel_sha256(np.asarray(image)) == row["sha256"]


def test_store_load_of_a_corrupt_array_names_the_file(tmp_path):
    store = SampleStore(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "x.npy").write_bytes(b"garbage")
    with pytest.raises(SampleError, match="x.npy: stored array cannot be read"):
        store.load("images/x.npy")


def test_manifest_spacing_is_the_row_pair_or_none_when_either_is_missing():
    assert manifest_spacing(pd.Series({"spacing_row_mm": 0.2, "spacing_col_mm": 0.25})) == (0.2, 0.25)
    assert manifest_spacing(pd.Series({"spacing_row_mm": np.nan, "spacing_col_mm": 0.25})) is None
