"""Writers of tiny datasets in each source layout (DESIGN.md §3), for reader and pipeline tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import SimpleITK as sitk


def ellipse_mask(size: int, seed: int, labels: tuple[int, ...] = (1, 2)) -> np.ndarray:
    """A mask with one filled ellipse per label, placed by ``seed``."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    for k, label in enumerate(labels):
        centre = (int(size * (0.3 + 0.4 * k)), int(size * rng.uniform(0.35, 0.65)))
        axes = (int(size * rng.uniform(0.08, 0.15)), int(size * rng.uniform(0.05, 0.1)))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, int(label), -1)
    return mask


def textured_image(size: int | tuple[int, int], seed: int, mask: np.ndarray | None = None) -> np.ndarray:
    """A uint8 image with speckle-like noise, brighter inside the mask; different for every seed."""
    rng = np.random.default_rng(seed)
    image = rng.rayleigh(40.0, (size, size) if isinstance(size, int) else size)
    if mask is not None:
        image += 60.0 * (mask > 0)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_mha(path: Path, array: np.ndarray, compress: bool = True, spacing: tuple[float, ...] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array)
    if spacing is not None:
        image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path), useCompression=compress)


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def write_psfhs(root: Path, n: int = 4, size: int = 32, first_id: int = 1) -> list[str]:
    """``image_mha`` (3 identical planes) + ``label_mha``; uncompressed and compressed files alternate,
    as the release and our shared copy differ."""
    stems = []
    for i in range(n):
        stem = f"{first_id + i:05d}"
        mask = ellipse_mask(size, i)
        plane = textured_image(size, i, mask)
        write_mha(root / "image_mha" / f"{stem}.mha", np.stack([plane] * 3), compress=i % 2 == 0)
        write_mha(root / "label_mha" / f"{stem}.mha", mask, compress=i % 2 == 1)
        stems.append(stem)
    return stems


def write_hc18(root: Path, subjects: dict[str, int], size: int = 48) -> dict[str, float]:
    """``training_set/NNN_HC.png`` (+ repeats ``NNN_2HC.png``) with ellipse-outline annotations and the
    pixel-size CSV. ``subjects`` maps NNN to its number of images; returns file name → pixel size."""
    sizes = {}
    rows = ["filename,pixel size(mm),head circumference (mm)"]
    for s, (subject, count) in enumerate(subjects.items()):
        for repeat in range(count):
            name = f"{subject}_{'' if repeat == 0 else repeat + 1}HC"
            outline = np.zeros((size, size), np.uint8)
            cv2.ellipse(outline, (size // 2, size // 2), (size // 3, size // 4), 10.0 * repeat, 0, 360, 255, 1)
            write_png(root / "training_set" / f"{name}.png", textured_image(size, 100 * s + repeat, outline))
            write_png(root / "training_set" / f"{name}_Annotation.png", outline)
            sizes[f"{name}.png"] = 0.1 + 0.01 * s
            rows.append(f"{name}.png,{sizes[f'{name}.png']},60.0")
    (root / "training_set_pixel_size_and_HC.csv").write_text("\n".join(rows) + "\n")
    return sizes


def write_fugc(root: Path, n_labelled: int = 3, n_unlabelled: int = 2, shape: tuple[int, int] = (34, 54)) -> None:
    """RGB frames (as FUGC's 336×544, scaled down) with 0/1/2 label PNGs, plus unlabelled frames."""
    h, w = shape
    for i in range(n_labelled + n_unlabelled):
        mask = ellipse_mask(max(h, w), i)[:h, :w]
        grey = textured_image((h, w), 50 + i, mask)
        rgb = np.stack([grey, grey, grey], axis=-1)
        if i < n_labelled:
            write_png(root / "train" / "labeled_data" / "images" / f"{i:04d}.png", rgb)
            write_png(root / "train" / "labeled_data" / "labels" / f"{i:04d}.png", mask)
        else:
            write_png(root / "train" / "unlabeled_data" / "images" / f"{i:04d}.png", rgb)


def write_iugc(root: Path, cases: dict[str, list[int]], n_frames: int = 6, size: int = 32) -> None:
    """``pos/<case>/<case>.avi`` (MJPG) with ``mask/<case>_<frame>_mask.png`` for the listed frames,
    storing 7 (PS) and 8 (FH) as IUGC does."""
    for c, (case, frames) in enumerate(cases.items()):
        folder = root / "pos" / case
        folder.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(folder / f"{case}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (size, size))
        assert writer.isOpened()
        for f in range(n_frames):
            grey = textured_image(size, 1000 * c + f)
            writer.write(np.stack([grey] * 3, axis=-1))
        writer.release()
        for frame in frames:
            mask = ellipse_mask(size, frame, labels=(7, 8))
            write_png(folder / "mask" / f"{case}_{frame}_mask.png", mask)


def write_folder(root: Path, n_with_masks: int = 3, n_without: int = 1, size: int = 32) -> None:
    """``images/`` (PNG and one .npy) with ``masks/`` for the first ``n_with_masks``."""
    for i in range(n_with_masks + n_without):
        mask = ellipse_mask(size, i, labels=(1,))
        image = textured_image(size, 200 + i, mask)
        if i == 0:
            (root / "images").mkdir(parents=True, exist_ok=True)
            np.save(root / "images" / f"case{i}.npy", image.astype(np.float32))
        else:
            write_png(root / "images" / f"case{i}.png", image)
        if i < n_with_masks:
            write_png(root / "masks" / f"case{i}.png", mask)
