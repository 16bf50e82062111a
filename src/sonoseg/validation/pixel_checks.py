"""Pixel-level checks, in plain code: what a manifest table cannot show."""

from __future__ import annotations

import numpy as np

from sonoseg.io.samples import SampleError
from sonoseg.io.store import SampleStore


def check_stored_sample(store: SampleStore, image_path: str, mask_path: str | None) -> list[str]:
    """Reasons why one stored sample is unusable; empty when it is fine.

    Checks that the image decodes as a 2-D array, its pixels are finite, it is not constant, and its
    mask (when there is one) decodes and has the image's size.
    """
    try:
        image = store.load(image_path)
    except SampleError as err:
        return [f"image not decodable: {err.reason}"]
    if image.ndim != 2 or image.size == 0:
        return [f"image is not a non-empty 2-D array (shape {image.shape})"]
    reasons = []
    if np.issubdtype(image.dtype, np.floating):
        nonfinite = int(image.size - np.count_nonzero(np.isfinite(image)))
        if nonfinite:
            reasons.append(f"image has {nonfinite} NaN/inf pixels")
    finite_values = image[np.isfinite(image)] if np.issubdtype(image.dtype, np.floating) else image
    if finite_values.size and finite_values.min() == finite_values.max():
        reasons.append(f"image is constant (every pixel = {finite_values.flat[0]})")
    if mask_path is not None:
        try:
            mask = store.load(mask_path)
        except SampleError as err:
            return [*reasons, f"mask not decodable: {err.reason}"]
        if mask.shape != image.shape:
            reasons.append(f"mask size {mask.shape[1]}x{mask.shape[0]} differs from image size {image.shape[1]}x{image.shape[0]}")
    return reasons
