"""Behaviour of the synthetic fetal-ultrasound generator (sonoseg.synthetic.generator)."""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest
from skimage.measure import regionprops

from sonoseg.synthetic import (
    DEVICE_PRESETS,
    LABEL_FETAL_HEAD,
    LABEL_PUBIC_SYMPHYSIS,
    DevicePreset,
    SyntheticConfig,
    SyntheticSample,
    generate,
    measure_throughput,
)
from sonoseg.synthetic.generator import _sector_geometry

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _sector(config: SyntheticConfig) -> np.ndarray:
    """The fan recomputed from its geometry (apex, radii, half angle), independently of the
    generator's cached remap grids."""
    geom = _sector_geometry(config.size, config.preset.sector_angle_deg)
    coords = np.arange(config.size, dtype=np.float64)
    dx = coords[None, :] - geom.apex_x
    dy = coords[:, None] - geom.apex_y
    r = np.hypot(dx, dy)
    theta = np.abs(np.arctan2(dx, dy))
    return (r >= geom.r_min) & (r <= geom.r_max) & (theta <= geom.half_angle)


def _erode(mask: np.ndarray, pixels: int) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.erode(mask.astype(np.uint8), kernel).astype(bool)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * np.logical_and(a, b).sum() / total


def _high_pass(image: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    img = image.astype(np.float32)
    return img - cv2.GaussianBlur(img, (0, 0), sigma)


def _high_frequency_fraction(image: np.ndarray, region: np.ndarray) -> float:
    """Share of the image variance (inside ``region``) above a 1.5 px Gaussian low-pass."""
    high = _high_pass(image)
    return float(high[region].var() / image[region].astype(np.float32).var())


# --------------------------------------------------------------------------------------------
# determinism and random access
# --------------------------------------------------------------------------------------------


def test_same_index_and_config_give_identical_bytes() -> None:
    config = SyntheticConfig(size=96, seed=11, difficulty=0.6)
    first, second = generate(3, config), generate(3, config)
    assert first.image.tobytes() == second.image.tobytes()
    assert first.mask.tobytes() == second.mask.tobytes()
    assert first.subject_id == second.subject_id


def test_different_index_or_seed_gives_a_different_image() -> None:
    config = SyntheticConfig(size=96, seed=11)
    base = generate(3, config).image
    assert not np.array_equal(base, generate(4, config).image)
    assert not np.array_equal(base, generate(3, dataclasses.replace(config, seed=12)).image)


def test_random_access_matches_sequential_generation() -> None:
    config = SyntheticConfig(size=64, seed=5, frames_per_subject=2)
    alone = generate(7, config)
    sequential = [generate(i, config) for i in range(8)]
    assert alone.image.tobytes() == sequential[7].image.tobytes()
    assert alone.mask.tobytes() == sequential[7].mask.tobytes()
    assert alone.subject_id == sequential[7].subject_id == "syn00003"


# --------------------------------------------------------------------------------------------
# shapes, dtypes, labels, sector
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "device"),
    [(32, "standard"), (64, "legacy_blurry"), (97, "sharp_highend"), (256, "standard")],
)
def test_shapes_dtypes_labels_and_zero_outside_the_sector(size: int, device: str) -> None:
    config = SyntheticConfig(size=size, device=device, seed=2)
    sector = _sector(config)
    for index in range(3):
        sample = generate(index, config)
        assert isinstance(sample, SyntheticSample)
        assert sample.image.shape == sample.mask.shape == (size, size)
        assert sample.image.dtype == np.uint8 and sample.mask.dtype == np.uint8
        assert set(np.unique(sample.mask)) == {0, LABEL_PUBIC_SYMPHYSIS, LABEL_FETAL_HEAD}
        assert sample.subject_id == f"syn{index:05d}"
        assert not sample.image[~sector].any()
        assert not sample.mask[~sector].any()
        # the fan itself is filled with echoes, and it is a fan: top corners are empty
        assert (sample.image[sector] > 0).mean() > 0.8
        assert not (sector[0, 0] or sector[0, -1] or sector[-1, 0] or sector[-1, -1])


@pytest.mark.parametrize(("device", "max_touching"), [("standard", 0), ("legacy_blurry", 8)])
def test_structures_are_apart_and_inside_the_sector(device: str, max_touching: int) -> None:
    """Placement keeps a gap between symphysis and head and keeps both off the sector border
    (the narrow legacy fan may clip a few frames)."""
    config = SyntheticConfig(size=128, seed=4, device=device, frames_per_subject=2)
    geom = _sector_geometry(config.size, config.preset.sector_angle_deg)
    sector = _sector(config)
    border = sector & ~_erode(sector, 1)
    touching = 0
    for index in range(40):
        mask = generate(index, config).mask
        for label in (LABEL_PUBIC_SYMPHYSIS, LABEL_FETAL_HEAD):
            region = (mask == label).astype(np.uint8)
            assert cv2.connectedComponents(region)[0] == 2  # one component plus background
        symphysis = (mask == LABEL_PUBIC_SYMPHYSIS).astype(np.uint8)
        distance = cv2.distanceTransform(1 - symphysis, cv2.DIST_L2, 5)
        assert distance[mask == LABEL_FETAL_HEAD].min() >= 2.0
        touching += bool((mask[border] > 0).any())
        # symphysis in the upper left, the head below it
        ys, xs = np.nonzero(symphysis)
        head_ys, _ = np.nonzero(mask == LABEL_FETAL_HEAD)
        assert ys.mean() < head_ys.mean()
        assert xs.mean() < geom.apex_x + 0.1 * config.size
    assert touching <= max_touching


# --------------------------------------------------------------------------------------------
# calibration against PSFHS statistics (256 x 256)
# --------------------------------------------------------------------------------------------


def test_calibration_statistics_match_psfhs() -> None:
    config = SyntheticConfig(size=256, seed=0)
    rows = []
    for index in range(150):
        mask = generate(index, config).mask
        row = []
        for label in (LABEL_FETAL_HEAD, LABEL_PUBIC_SYMPHYSIS):
            region = (mask == label).astype(np.uint8)
            (props,) = regionprops(region)
            row += [region.mean(), props.axis_major_length,
                    props.axis_minor_length / props.axis_major_length]
        rows.append(row)
    fh_frac, fh_major, fh_ratio, ps_frac, ps_major, ps_ratio = np.array(rows).T
    assert abs(fh_frac.mean() - 0.205) < 0.02
    assert abs(ps_frac.mean() - 0.025) < 0.006
    assert abs(fh_major.mean() - 143.0) < 8.0
    assert 12.0 < fh_major.std() < 28.0
    assert abs(fh_ratio.mean() - 0.82) < 0.04
    assert abs(ps_major.mean() - 61.0) < 5.0
    assert abs(ps_ratio.mean() - 0.55) < 0.05


def test_sizes_scale_with_the_image_size() -> None:
    config = SyntheticConfig(size=64, seed=0)
    majors = []
    for index in range(40):
        mask = generate(index, config).mask
        (props,) = regionprops((mask == LABEL_FETAL_HEAD).astype(np.uint8))
        majors.append(props.axis_major_length)
    assert abs(np.mean(majors) - 143.0 / 4) < 4.0


# --------------------------------------------------------------------------------------------
# physics sanity
# --------------------------------------------------------------------------------------------


def test_skull_rim_is_brighter_than_the_head_interior() -> None:
    config = SyntheticConfig(size=256, seed=1, difficulty=0.0)
    rim_means, interior_means = [], []
    for index in range(8):
        sample = generate(index, config)
        head = sample.mask == LABEL_FETAL_HEAD
        rim = head & ~_erode(head, 5)
        interior = _erode(head, 20)
        rim_means.append(sample.image[rim].mean())
        interior_means.append(sample.image[interior].mean())
    assert np.mean(rim_means) > np.mean(interior_means) + 40
    assert all(r > i for r, i in zip(rim_means, interior_means))


def test_skull_rim_is_brightest_where_the_beam_hits_it_perpendicularly() -> None:
    """Specular reflection: top and bottom of the rim (normal along the beam) beat its sides."""
    config = SyntheticConfig(size=256, seed=3, difficulty=0.0, shadow_strength=0.0)
    along, across = [], []
    for index in range(8):
        sample = generate(index, config)
        head = sample.mask == LABEL_FETAL_HEAD
        rim = head & ~_erode(head, 5)
        ys, xs = np.nonzero(head)
        cy, cx = ys.mean(), xs.mean()
        ry, rx = np.nonzero(rim)
        angle = np.degrees(np.arctan2(ry - cy, rx - cx)) % 180.0
        top_bottom = (angle > 70) & (angle < 110)
        sides = (angle < 20) | (angle > 160)
        along.append(sample.image[ry[top_bottom], rx[top_bottom]].mean())
        across.append(sample.image[ry[sides], rx[sides]].mean())
    assert np.mean(along) > np.mean(across) + 15


def _below_head(mask: np.ndarray, sector: np.ndarray) -> np.ndarray:
    """Background pixels in the columns of the middle half of the head, below the head."""
    head = mask == LABEL_FETAL_HEAD
    ys, xs = np.nonzero(head)
    x0, x1 = np.percentile(xs, [25, 75]).astype(int)
    region = np.zeros_like(head)
    for x in range(x0, x1 + 1):
        bottom = ys[xs == x].max()
        region[bottom + 4 :, x] = True
    return region & sector & (mask == 0)


def test_shadow_strength_darkens_the_region_below_the_head() -> None:
    base = SyntheticConfig(size=256, seed=6, difficulty=0.3, tgc_error=0.0)
    sector = _sector(base)
    dark, bright = [], []
    for index in range(8):
        shadowed = generate(index, dataclasses.replace(base, shadow_strength=1.0))
        clear = generate(index, dataclasses.replace(base, shadow_strength=0.0))
        assert np.array_equal(shadowed.mask, clear.mask)  # everything else equal
        region = _below_head(clear.mask, sector)
        assert region.sum() > 50
        dark.append(shadowed.image[region].mean())
        bright.append(clear.image[region].mean())
    assert np.mean(dark) < np.mean(bright) - 15
    assert all(d < b for d, b in zip(dark, bright))


def _band_means(config: SyntheticConfig, count: int) -> tuple[float, float]:
    """Mean grey of background tissue in a shallow and a deep band of the sector."""
    sector = _sector(config)
    geom = _sector_geometry(config.size, config.preset.sector_angle_deg)
    coords = np.arange(config.size, dtype=np.float64)
    r = np.hypot(coords[None, :] - geom.apex_x, coords[:, None] - geom.apex_y)
    depth = (r - geom.r_min) / (geom.r_max - geom.r_min)
    shallow_band = sector & (depth > 0.1) & (depth < 0.3)
    deep_band = sector & (depth > 0.75) & (depth < 0.95)
    shallow, deep = [], []
    for index in range(count):
        sample = generate(index, config)
        background = sample.mask == 0
        shallow.append(sample.image[shallow_band & background].mean())
        deep.append(sample.image[deep_band & background].mean())
    return float(np.mean(shallow)), float(np.mean(deep))


def test_depth_attenuation_shows_when_time_gain_compensation_is_off() -> None:
    common = dict(size=128, seed=8, shadow_strength=0.0, distractor_arcs=0)
    shallow, deep = _band_means(SyntheticConfig(tgc_error=0.0, **common), 10)
    # well compensated: the deep band is not systematically brighter (nor much darker)
    assert deep < shallow + 8
    assert deep > shallow - 15
    shallow_off, deep_off = _band_means(SyntheticConfig(tgc_error=1.0, **common), 10)
    # no compensation: exp(-alpha * depth) shows; alpha = 2.3 Np is ~10 dB over half the depth
    assert deep_off < shallow_off - 30
    assert deep_off < deep - 30


def test_frames_of_a_subject_share_anatomy_but_not_speckle() -> None:
    config = SyntheticConfig(size=128, seed=9, frames_per_subject=3)
    frames = [generate(i, config) for i in range(3)]
    other = generate(3, config)
    assert {f.subject_id for f in frames} == {"syn00000"}
    assert other.subject_id == "syn00001"
    sector = _sector(config)
    for frame in frames[1:]:
        for label in (LABEL_PUBIC_SYMPHYSIS, LABEL_FETAL_HEAD):
            assert _dice(frame.mask == label, frames[0].mask == label) > 0.8
        assert not np.array_equal(frame.mask, frames[0].mask)  # small pose jitter
        # fresh speckle: the fine texture of the shared background is uncorrelated, although
        # the slow tissue variation and shadows of the subject are the same
        shared = _erode(sector & (frame.mask == 0) & (frames[0].mask == 0), 3)
        a = _high_pass(frame.image)[shared]
        b = _high_pass(frames[0].image)[shared]
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.3
        assert np.abs(frame.image[shared].astype(float) - frames[0].image[shared]).mean() > 10
    assert _dice(other.mask == LABEL_FETAL_HEAD, frames[0].mask == LABEL_FETAL_HEAD) < 0.97


def test_skull_dropout_dims_the_rim() -> None:
    base = SyntheticConfig(size=128, seed=10, difficulty=0.0, shadow_strength=0.0)
    full, dropped = [], []
    for index in range(8):
        intact = generate(index, base)
        broken = generate(index, dataclasses.replace(base, skull_dropout=1.0))
        head = intact.mask == LABEL_FETAL_HEAD
        rim = head & ~_erode(head, 3)
        full.append(intact.image[rim].mean())
        dropped.append(broken.image[rim].mean())
    assert np.mean(dropped) < np.mean(full) - 20


# --------------------------------------------------------------------------------------------
# device presets and difficulty
# --------------------------------------------------------------------------------------------


def test_device_presets_are_frozen_and_at_least_three() -> None:
    assert {"standard", "sharp_highend", "legacy_blurry"} <= set(DEVICE_PRESETS)
    for name, preset in DEVICE_PRESETS.items():
        assert isinstance(preset, DevicePreset) and preset.name == name
        with pytest.raises(dataclasses.FrozenInstanceError):
            preset.dynamic_range_db = 1.0  # type: ignore[misc]


def test_device_presets_differ_measurably() -> None:
    fractions = {}
    sector_sizes = {}
    for device in ("sharp_highend", "standard", "legacy_blurry"):
        config = SyntheticConfig(size=256, seed=12, device=device)
        sector = _sector(config)
        sector_sizes[device] = sector.sum()
        region = _erode(sector, 6)
        values = []
        for index in range(4):
            sample = generate(index, config)
            values.append(_high_frequency_fraction(sample.image, region & (sample.mask == 0)))
        fractions[device] = np.mean(values)
    assert fractions["legacy_blurry"] < 0.6 * fractions["sharp_highend"]
    assert fractions["legacy_blurry"] < fractions["standard"] < fractions["sharp_highend"]
    assert sector_sizes["legacy_blurry"] < sector_sizes["standard"] < sector_sizes["sharp_highend"]


def _contrasts(config: SyntheticConfig, count: int) -> tuple[float, float]:
    """Mean |symphysis - background| and |head interior - background| grey differences."""
    ps, interior = [], []
    for index in range(count):
        sample = generate(index, config)
        head = sample.mask == LABEL_FETAL_HEAD
        background = sample.image[(sample.mask == 0) & _erode(_sector(config), 4)].mean()
        ps.append(abs(sample.image[sample.mask == LABEL_PUBIC_SYMPHYSIS].mean() - background))
        interior.append(abs(sample.image[_erode(head, 12)].mean() - background))
    return float(np.mean(ps)), float(np.mean(interior))


def test_difficulty_lowers_contrast() -> None:
    common = dict(size=128, seed=13, shadow_strength=0.0, distractor_arcs=0, skull_dropout=0.0)
    easy_ps, easy_interior = _contrasts(SyntheticConfig(difficulty=0.0, **common), 8)
    hard_ps, hard_interior = _contrasts(SyntheticConfig(difficulty=1.0, **common), 8)
    assert hard_ps < 0.75 * easy_ps
    assert hard_interior < 0.75 * easy_interior


def _bright_background_fraction(config: SyntheticConfig, threshold: float, count: int) -> float:
    sector = _erode(_sector(config), 3)
    fractions = []
    for index in range(count):
        sample = generate(index, config)
        values = sample.image[sector & (sample.mask == 0)]
        fractions.append((values > threshold).mean())
    return float(np.mean(fractions))


def test_difficulty_adds_distractor_arcs() -> None:
    """Arcs are bright and unlabelled: they raise the share of very bright background pixels.
    Contrast, drop-out and shadows are pinned so that only the arc count follows difficulty."""
    common = dict(size=256, seed=14, shadow_strength=0.0, contrast=1.0, skull_dropout=0.0)
    easy = SyntheticConfig(difficulty=0.0, **common)
    sector = _erode(_sector(easy), 3)
    samples = [generate(i, easy) for i in range(6)]
    pooled = np.concatenate([s.image[sector & (s.mask == 0)] for s in samples])
    threshold = float(np.percentile(pooled, 99.0))
    easy_fraction = _bright_background_fraction(easy, threshold, 6)
    middle = _bright_background_fraction(SyntheticConfig(difficulty=0.5, **common), threshold, 6)
    hard = _bright_background_fraction(SyntheticConfig(difficulty=1.0, **common), threshold, 6)
    explicit = _bright_background_fraction(
        SyntheticConfig(difficulty=0.0, distractor_arcs=12, **common), threshold, 6
    )
    assert easy_fraction < middle < hard
    assert hard > 2.0 * easy_fraction
    assert explicit > 2.0 * easy_fraction


# --------------------------------------------------------------------------------------------
# configuration and validation
# --------------------------------------------------------------------------------------------


def test_from_dict_builds_the_same_config() -> None:
    params = {"size": 64.0, "seed": 3, "device": "legacy_blurry", "difficulty": 0.7,
              "frames_per_subject": 2, "shadow_strength": 0.5}
    config = SyntheticConfig.from_dict(params)
    assert config == SyntheticConfig(size=64, seed=3, device="legacy_blurry", difficulty=0.7,
                                     frames_per_subject=2, shadow_strength=0.5)
    assert SyntheticConfig.from_dict({}) == SyntheticConfig()


def test_from_dict_rejects_unknown_keys_naming_them() -> None:
    with pytest.raises(ValueError, match="sizee.*speckel|speckel.*sizee"):
        SyntheticConfig.from_dict({"sizee": 64, "speckel": 1, "seed": 0})


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"size": 31}, "size"),
        ({"size": 64.5}, "size"),
        ({"size": True}, "size"),
        ({"seed": -1}, "seed"),
        ({"difficulty": 1.5}, "difficulty"),
        ({"difficulty": -0.1}, "difficulty"),
        ({"frames_per_subject": 0}, "frames_per_subject"),
        ({"contrast": 0.0}, "contrast"),
        ({"skull_dropout": 2.0}, "skull_dropout"),
        ({"shadow_strength": -1.0}, "shadow_strength"),
        ({"distractor_arcs": 13}, "distractor_arcs"),
        ({"tgc_error": 3.0}, "tgc_error"),
        ({"device": None}, "device"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        SyntheticConfig(**kwargs)


def test_unknown_device_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="device") as info:
        SyntheticConfig(device="hologram")
    for name in DEVICE_PRESETS:
        assert name in str(info.value)


def test_generate_and_throughput_validate_their_arguments() -> None:
    config = SyntheticConfig(size=64)
    with pytest.raises(ValueError, match="index"):
        generate(-1, config)
    with pytest.raises(ValueError, match="index"):
        generate(1.5, config)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="config"):
        generate(0, {"size": 64})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_images"):
        measure_throughput(config, 0)


def test_measure_throughput_returns_a_positive_rate() -> None:
    rate = measure_throughput(SyntheticConfig(size=64), 5)
    assert isinstance(rate, float)
    assert rate > 0 and math.isfinite(rate)
