"""Pixel-level checks on stored arrays."""

from __future__ import annotations

import numpy as np
import pytest

from sonoseg.io.store import SampleStore
from sonoseg.validation.pixel_checks import check_stored_sample


@pytest.fixture
def store(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    return SampleStore(tmp_path)


def put(store, name, array):
    np.save(store.root / name, array)
    return name


def test_a_good_sample_passes(store):
    image = put(store, "images/a.npy", np.arange(16, dtype=np.uint8).reshape(4, 4))
    mask = put(store, "masks/a.npy", np.zeros((4, 4), np.uint8))
    assert check_stored_sample(store, image, mask) == []


def test_nan_and_constant_and_mask_size_are_each_reported(store):
    nan_image = np.ones((4, 4), np.float32)
    nan_image[0, 0] = np.nan
    assert check_stored_sample(store, put(store, "images/n.npy", nan_image), None) == [
        "image has 1 NaN/inf pixels",
        "image is constant (every pixel = 1.0)",
    ]
    image = put(store, "images/b.npy", np.arange(16, dtype=np.uint8).reshape(4, 4))
    mask = put(store, "masks/b.npy", np.zeros((4, 5), np.uint8))
    assert check_stored_sample(store, image, mask) == ["mask size 5x4 differs from image size 4x4"]


def test_undecodable_arrays_are_reported_not_raised(store):
    (store.root / "images" / "bad.npy").write_bytes(b"junk")
    (reason,) = check_stored_sample(store, "images/bad.npy", None)
    assert reason.startswith("image not decodable: stored array cannot be read")
    image = put(store, "images/c.npy", np.arange(16, dtype=np.uint8).reshape(4, 4))
    (reason,) = check_stored_sample(store, image, "masks/missing.npy")
    assert reason.startswith("mask not decodable")
