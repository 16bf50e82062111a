"""Biometry (AoP, HSD, HC) on constructed scenes whose answers are known in closed form, and on the
real HC18 and PSFHS annotations when ../shared/data is present."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.special import ellipe

from sonoseg.evaluation.biometry import (
    Biometry,
    Ellipse,
    biometry_errors,
    biometry_table,
    ellipse_perimeter,
    fit_ellipse,
    largest_component,
    measure,
    structure_labels,
)
from sonoseg.io.decode import read_array
from sonoseg.io.readers import fill_outline

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

# The scene, in physical units: the symphysis axis runs at 10° below +x and ends (inferior end P)
# above and right of a round head, so the far tangent passes over the head like the clinical picture.
AXIS_DEG = 10.0
INFERIOR = np.array([110.0, 60.0])
PS_SEMI_AXES = (24.0, 7.0)
HEAD_CENTRE = np.array([96.0, 175.0])
HEAD_RADIUS = 62.0


def draw_ellipse(
    mask: np.ndarray, centre, semi_axes, angle_deg: float, label: int, spacing: tuple[float, float] = (1.0, 1.0)
) -> None:
    """Fill an ellipse given in physical units (x right, y down) on a grid of ``spacing`` (row, col)
    pixels with ``cv2.ellipse`` (1/256 px precision). On the grid it is the image of the unit circle
    under A = diag(1/col, 1/row)·R(angle)·diag(a, b), an ellipse whose semi-axes are A's singular
    values and whose major axis is A's first left singular vector."""
    theta = math.radians(angle_deg)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    to_grid = np.diag([1 / spacing[1], 1 / spacing[0]])
    directions, semi, _ = np.linalg.svd(to_grid @ rotation @ np.diag(semi_axes))
    grid_angle = math.degrees(math.atan2(directions[1, 0], directions[0, 0]))
    grid_centre = to_grid @ np.asarray(centre, float)
    cv2.ellipse(mask, tuple(int(round(v * 256)) for v in grid_centre), tuple(int(round(v * 256)) for v in semi),
                grid_angle, 0, 360, label, -1, cv2.LINE_8, 8)  # fmt: skip


def scene(scale: float = 1.0, spacing: tuple[float, float] = (1.0, 1.0), shape=(256, 256)) -> np.ndarray:
    """Symphysis (1) and head (2); ``scale`` multiplies every physical length."""
    mask = np.zeros(shape, np.uint8)
    axis = np.array([math.cos(math.radians(AXIS_DEG)), math.sin(math.radians(AXIS_DEG))])
    ps_centre = INFERIOR - PS_SEMI_AXES[0] * axis
    draw_ellipse(mask, ps_centre * scale, np.multiply(PS_SEMI_AXES, scale), AXIS_DEG, 1, spacing)
    draw_ellipse(mask, HEAD_CENTRE * scale, (HEAD_RADIUS * scale,) * 2, 0.0, 2, spacing)
    return mask


def expected(scale: float = 1.0) -> tuple[float, float, float]:
    """AoP, HSD and HC of the scene in closed form."""
    p, c, r = INFERIOR * scale, HEAD_CENTRE * scale, HEAD_RADIUS * scale
    to_head = c - p
    distance = float(np.hypot(*to_head))
    # the tangents from P sit at ±asin(r/d) around the direction to the centre
    spread = math.degrees(math.asin(r / distance))
    towards_centre = math.degrees(math.atan2(to_head[1], to_head[0]))
    towards_superior = AXIS_DEG + 180.0
    aop = max(abs((towards_superior - (towards_centre + s) + 180) % 360 - 180) for s in (spread, -spread))
    # along the unit normal n toward the head: |p + t n - c| = r, nearest root
    normal = np.array([-math.sin(math.radians(AXIS_DEG)), math.cos(math.radians(AXIS_DEG))])
    along = float(normal @ to_head)
    hsd = along - math.sqrt(along**2 - (distance**2 - r**2))
    return aop, hsd, 2 * math.pi * r


def test_the_scene_geometry_is_clinical():
    aop, hsd, hc = expected()
    # hand check of the closed form: d = 115.85, asin(62/d) = 32.35°, direction to centre 96.94°
    assert aop == pytest.approx(180 - (96.94 - 32.35 - 10), abs=0.02)
    # n = (-sin 10°, cos 10°), n·(C - P) = 115.68, t = 115.68 - sqrt(115.68² - (d² - r²)) = 53.99
    assert hsd == pytest.approx(53.99, abs=0.01) and hc == pytest.approx(389.56, abs=0.01)


def test_measure_matches_the_closed_form():
    aop, hsd, hc = expected()
    result = measure(scene())
    assert result.unit == "px" and result.note == ""
    assert result.aop_deg == pytest.approx(aop, abs=0.5)
    assert result.hsd == pytest.approx(hsd, abs=1.0)
    assert result.hc == pytest.approx(hc, abs=1.0)


@pytest.mark.parametrize(
    "transform",
    [lambda m: np.rot90(m, 1), lambda m: np.rot90(m, 2), lambda m: np.rot90(m, 3), np.fliplr, np.flipud,
     lambda m: np.rot90(np.fliplr(m))],  # fmt: skip
    ids=["rot90", "rot180", "rot270", "mirror_lr", "mirror_ud", "transpose"],
)
def test_rotating_or_mirroring_the_scene_changes_nothing(transform):
    original = measure(scene())
    moved = measure(np.ascontiguousarray(transform(scene())))
    # the inferior end is the one nearer the head wherever the head is in the image
    assert moved.aop_deg == pytest.approx(original.aop_deg, abs=0.01)
    assert moved.hsd == pytest.approx(original.hsd, abs=0.01)
    assert moved.hc == pytest.approx(original.hc, abs=0.01)
    assert moved.aop_deg == pytest.approx(expected()[0], abs=0.5)


def test_anisotropic_pixels_give_the_physical_measures():
    spacing = (0.4, 0.25)  # (row_mm, col_mm): the scene at 0.25 mm per unit, rows 1.6× coarser
    mask = scene(scale=0.25, spacing=spacing, shape=(160, 256))
    aop, hsd, hc = expected(scale=0.25)
    result = measure(mask, spacing)
    assert result.unit == "mm" and result.note == ""
    assert result.aop_deg == pytest.approx(aop, abs=0.5)
    coarse_pixel = max(spacing)
    assert result.hsd == pytest.approx(hsd, abs=coarse_pixel)
    assert result.hc == pytest.approx(hc, abs=coarse_pixel)
    # measured on the pixel grid as if square, the squashed scene reads a different angle
    assert abs(measure(mask).aop_deg - aop) > 5


def test_fit_ellipse_recovers_an_anisotropic_ellipse_in_mm():
    spacing = (0.5, 0.2)
    mask = np.zeros((120, 300), np.uint8)
    draw_ellipse(mask, (30.0, 30.0), (20.0, 12.0), 30.0, 1, spacing)
    ellipse = fit_ellipse(mask, spacing)
    assert isinstance(ellipse, Ellipse)
    assert ellipse.centre == pytest.approx((30.0, 30.0), abs=0.1)
    assert ellipse.semi_major == pytest.approx(20.0, abs=0.25) and ellipse.semi_minor == pytest.approx(12.0, abs=0.25)
    assert ellipse.angle_deg == pytest.approx(30.0, abs=1.0)


def test_head_ellipse_circumference_against_the_exact_perimeter():
    mask = np.zeros((256, 256), np.uint8)
    draw_ellipse(mask, (128.3, 127.6), (90.0, 60.0), 35.0, 2)
    exact = 4 * 90.0 * ellipe(1 - (60.0 / 90.0) ** 2)  # the complete elliptic integral, not Ramanujan
    result = measure(mask)
    assert result.hc == pytest.approx(exact, abs=1.0)
    assert np.isnan(result.aop_deg) and np.isnan(result.hsd)
    assert result.note == "no pubic symphysis (label 1)"


def test_ellipse_perimeter_is_ramanujans_approximation():
    assert ellipse_perimeter(5.0, 5.0) == pytest.approx(2 * math.pi * 5.0, rel=1e-12)
    assert ellipse_perimeter(2.0, 1.0) == pytest.approx(4 * 2.0 * ellipe(0.75), rel=1e-9)
    assert ellipse_perimeter(1.0, 2.0) == ellipse_perimeter(2.0, 1.0)
    assert ellipse_perimeter(1.0, 0.0) == pytest.approx(math.pi * 14 / 11)  # h = 1: π(a+b)(1 + 3/11)
    assert ellipse_perimeter(0.0, 0.0) == 0.0


def test_largest_component_keeps_the_biggest_8_connected_blob():
    mask = np.zeros((10, 10), np.uint8)
    mask[0, 0] = mask[1, 1] = mask[2, 2] = 1  # 3 pixels, diagonal: one 8-connected component
    mask[6:8, 6:8] = 1  # 4 pixels
    kept = largest_component(mask)
    assert kept.dtype == bool and kept.sum() == 4 and kept[6:8, 6:8].all()
    mask[3, 3] = 1  # the diagonal grows to 4 pixels: a tie goes to the first in raster order
    tied = largest_component(mask)
    assert tied[0, 0] and tied[3, 3] and tied.sum() == 4 and not tied[6, 6]
    assert not largest_component(np.zeros((4, 4))).any()


def test_a_spurious_blob_beside_the_head_does_not_change_hc():
    clean = scene()
    noisy = clean.copy()
    noisy[200:212, 200:212] = 2  # a false-positive head blob, away from the head
    noisy[5:9, 240:244] = 1  # and a symphysis speck
    assert measure(noisy) == measure(clean)


def test_missing_structures_are_nan_with_reasons_never_zero():
    head_only = np.where(scene() == 2, 2, 0).astype(np.uint8)
    result = measure(head_only)
    assert np.isnan(result.aop_deg) and np.isnan(result.hsd) and result.hc == pytest.approx(expected()[2], abs=1.0)
    assert result.note == "no pubic symphysis (label 1)"

    symphysis_only = measure(np.where(scene() == 1, 1, 0).astype(np.uint8))
    assert np.isnan([symphysis_only.aop_deg, symphysis_only.hsd, symphysis_only.hc]).all()
    assert symphysis_only.note == "no fetal head (label 2)"

    empty = measure(np.zeros((64, 64), np.uint8), spacing=(0.1, 0.1))
    assert np.isnan([empty.aop_deg, empty.hsd, empty.hc]).all() and empty.unit == "mm"
    assert empty.note == "no fetal head (label 2); no pubic symphysis (label 1)"


def test_a_dataset_without_a_symphysis_class_measures_only_hc():
    hc18_like = (scene() == 2).astype(np.uint8)  # HC18: the head is label 1
    result = measure(hc18_like, ps_label=None, fh_label=1)
    assert result.hc == pytest.approx(expected()[2], abs=1.0)
    assert np.isnan(result.aop_deg) and np.isnan(result.hsd) and result.note == "no pubic symphysis class"


def test_structures_too_small_to_fit_are_nan():
    mask = scene()
    mask[mask == 1] = 0
    mask[10:12, 10:12] = 1  # a 2 × 2 symphysis: 4 contour points
    result = measure(mask)
    assert np.isnan(result.aop_deg) and np.isnan(result.hsd) and np.isfinite(result.hc)
    assert result.note == "pubic symphysis too small to fit an ellipse (label 1)"
    line = np.zeros((64, 64), np.uint8)
    line[30, 5:40] = 2  # collinear contour points: no ellipse
    assert fit_ellipse(line == 2) is None
    assert measure(line).note.startswith("fetal head too small to fit an ellipse (label 2)")


def test_overlapping_structures_have_no_tangent():
    mask = np.zeros((256, 256), np.uint8)
    draw_ellipse(mask, (128.0, 128.0), (60.0, 60.0), 0.0, 2)
    draw_ellipse(mask, (100.0, 120.0), (20.0, 6.0), 0.0, 1)  # inside the head's outline
    result = measure(mask)
    assert np.isnan(result.aop_deg) and np.isnan(result.hsd) and np.isfinite(result.hc)
    assert result.note == "the inferior end of the pubic symphysis lies inside the fetal head ellipse"


def test_a_perpendicular_that_misses_the_head_gives_nan_hsd():
    mask = np.zeros((256, 256), np.uint8)
    draw_ellipse(mask, (40.0, 128.0), (24.0, 6.0), 0.0, 1)  # axis points straight at the head
    draw_ellipse(mask, (180.0, 128.0), (40.0, 40.0), 0.0, 2)
    result = measure(mask)
    assert np.isnan(result.hsd)
    assert result.note == "the perpendicular to the pubic symphysis axis misses the fetal head ellipse"
    # P = (64, 128), head 116 px away: the far tangent is 180° - asin(40/116) from the symphysis
    assert result.aop_deg == pytest.approx(180 - math.degrees(math.asin(40 / 116)), abs=0.5)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="2-D"):
        measure(np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="spacing"):
        measure(scene(), spacing=(0.0, 0.1))


def test_structure_labels_from_class_names():
    assert structure_labels({"0": "background", "1": "pubic_symphysis", "2": "fetal_head"}) == (1, 2)
    assert structure_labels({"0": "background", "1": "fetal_head"}) == (None, 1)
    assert structure_labels({"0": "BG", "7": "PS", "8": "FH"}) == (7, 8)
    assert structure_labels({"0": "background", "1": "anterior_lip", "2": "posterior_lips"}) == (None, None)
    with pytest.raises(ValueError, match="two"):
        structure_labels({"1": "head", "2": "fetal head"})


def test_biometry_errors_are_absolute_and_nan_aware():
    predicted = Biometry(aop_deg=120.0, hsd=20.0, hc=float("nan"), unit="mm", note="")
    truth = Biometry(aop_deg=125.5, hsd=18.0, hc=300.0, unit="mm", note="")
    errors = biometry_errors(predicted, truth)
    assert errors["aop_abs_err_deg"] == 5.5 and errors["hsd_abs_err"] == 2.0 and np.isnan(errors["hc_abs_err"])
    assert set(errors) == {"aop_abs_err_deg", "hsd_abs_err", "hc_abs_err"}
    with pytest.raises(ValueError, match="px"):
        biometry_errors(predicted, Biometry(1.0, 1.0, 1.0, "px", ""))


def test_biometry_table_has_one_row_per_case():
    table = biometry_table([("a", scene(), None), ("b", np.zeros((32, 32), np.uint8), (0.2, 0.2))], 1, 2)
    assert list(table.columns) == ["case_id", "aop_deg", "hsd", "hc", "unit", "note"]
    assert table["case_id"].tolist() == ["a", "b"] and table["unit"].tolist() == ["px", "mm"]
    assert table.loc[0, "aop_deg"] == pytest.approx(expected()[0], abs=0.5) and np.isnan(table.loc[1, "hc"])
    assert measure(scene()).as_dict() == table.drop(columns="case_id").iloc[0].to_dict()


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED_DATA / "hc18").is_dir(), reason="../shared/data/hc18 is absent")
def test_real_hc18_circumference_matches_the_official_csv():
    root = SHARED_DATA / "hc18"
    with open(root / "training_set_pixel_size_and_HC.csv", newline="") as handle:
        official = {row["filename"]: row for row in csv.DictReader(handle)}
    # NNN_HC, NNN_2HC, NNN_3HC...: every annotated image
    annotations = sorted((root / "training_set").glob("*HC_Annotation.png"))
    assert len(annotations) == len(official) == 344
    filled_errors, centre_line_errors = [], []
    for path in annotations:
        row = official[path.name.replace("_Annotation", "")]
        pixel_mm, truth_mm = float(row["pixel size(mm)"]), float(row["head circumference (mm)"])
        outline, _ = read_array(path)
        result = measure(fill_outline(outline, str(path)), (pixel_mm, pixel_mm), ps_label=None, fh_label=1)
        filled_errors.append(result.hc - truth_mm)
        # the outline is 2 px thick: its pixels' own fit is the drawn ellipse's centre line
        centre_line = fit_ellipse_to_points(np.column_stack(np.nonzero(outline)[::-1]))
        centre_line_errors.append(ellipse_perimeter(*centre_line) * pixel_mm - truth_mm)
    filled, centre = np.abs(filled_errors), np.abs(centre_line_errors)
    # measured: filled masks mean |Δ| 0.70 mm, max 1.60 mm, biased high by the outline's outer half;
    # the outline's centre line mean 0.008 mm, max 0.056 mm
    assert filled.mean() <= 1.0 and filled.max() <= 2.0
    assert np.mean(filled_errors) > 0.5
    assert centre.mean() <= 0.05


def fit_ellipse_to_points(points: np.ndarray) -> tuple[float, float]:
    """Semi-axes of OpenCV's least-squares ellipse through (x, y) points."""
    _, (width, height), _ = cv2.fitEllipse(points.astype(np.float32))
    return width / 2, height / 2


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED_DATA / "psfhs").is_dir(), reason="../shared/data/psfhs is absent")
def test_real_psfhs_labels_give_clinical_values_in_any_orientation():
    labels = sorted((SHARED_DATA / "psfhs" / "label_mha").glob("*.mha"))[::10]
    assert len(labels) >= 100
    for path in labels:
        mask = np.asarray(read_array(path)[0])
        result = measure(mask)
        assert result.note == "", path.name
        # measured on every 5th label: AoP 104°–177° (median 123°), HSD 10–60 px
        assert 90 < result.aop_deg < 180 and 0 < result.hsd < 100, path.name
        turned = measure(np.ascontiguousarray(np.rot90(np.fliplr(mask))))
        assert turned.aop_deg == pytest.approx(result.aop_deg, abs=0.01), path.name
