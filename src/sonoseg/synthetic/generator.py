"""Synthetic intrapartum transperineal ultrasound, written from scratch.

The generator imitates images like the PSFHS data set (labels: 0 background, 1 pubic symphysis,
2 fetal head). Every image is produced independently from its index, so a data set of any length
can be streamed, accessed at random and reproduced bit for bit:

* index ``i`` belongs to subject ``i // frames_per_subject`` and is frame
  ``i % frames_per_subject``;
* the anatomy of a subject (shapes, positions, echo texture, distractor arcs, skull drop-out) is
  drawn from ``numpy.random.default_rng([seed, subject])``;
* each frame adds a small pose jitter, its own time-gain-compensation error and fresh speckle drawn
  from ``numpy.random.default_rng([seed, subject, frame])``.

Image formation, in order (each step is one small function below):

1. tissue echogenicity (linear amplitude, 0 dB = soft tissue) and bone reflectivity are drawn in
   Cartesian coordinates together with the label mask (:func:`_draw_echogenicity`,
   :func:`_draw_mask`);
2. both maps are remapped to the polar (depth x beam-angle) grid of a fan-shaped sector with
   ``cv2.remap`` (grids cached per geometry, :func:`_scan_conversion_grids`);
3. acoustic shadowing behind bone: along each beam the transmission falls with the cumulative bone
   reflectivity above (:func:`_shadow_transmission`);
4. speckle: complex Gaussian scatterers scaled by the echogenicity, convolved with a depth
   dependent point-spread function (a blend of two or three Gaussian blurs,
   :func:`_convolve_psf`), then the envelope (:func:`_speckle_envelope`): Rayleigh amplitude,
   or Nakagami (Gamma intensity of shape ``m``) via a quantile transform
   (:func:`_nakagami_log_intensity`); a slow per-subject tissue variation multiplies the echo
   first (:func:`_tissue_texture`);
5. depth attenuation ``exp(-alpha * depth)`` with an imperfect time-gain compensation: a slightly
   wrong ``alpha`` and a smooth random gain ripple (:func:`_depth_gain_db`);
6. log compression to the device dynamic range and mapping to ``uint8``
   (:func:`_log_compress`);
7. scan conversion back to Cartesian coordinates; outside the sector image and mask are 0.

Geometry is calibrated on PSFHS at 256 x 256 (fetal head about 20.5 % of the pixels, major axis
143 +- 20 px, minor/major 0.82; pubic symphysis about 2.5 %, major axis 61 +- 9 px, ratio 0.55) and
scales with the image size.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import cv2
import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "DEVICE_PRESETS",
    "LABEL_BACKGROUND",
    "LABEL_FETAL_HEAD",
    "LABEL_PUBIC_SYMPHYSIS",
    "DevicePreset",
    "SyntheticConfig",
    "SyntheticSample",
    "generate",
    "measure_throughput",
]

LABEL_BACKGROUND = 0
LABEL_PUBIC_SYMPHYSIS = 1
LABEL_FETAL_HEAD = 2

# --------------------------------------------------------------------------------------------
# Calibration (PSFHS at 256 x 256). Lengths are full axis lengths in pixels at the reference size.
# --------------------------------------------------------------------------------------------
_REFERENCE_SIZE = 256
_FH_MAJOR_MEAN, _FH_MAJOR_SD = 143.0, 20.0
_FH_RATIO_MEAN, _FH_RATIO_SD = 0.82, 0.035
_PS_MAJOR_MEAN, _PS_MAJOR_SD = 61.0, 9.0
_PS_RATIO_MEAN, _PS_RATIO_SD = 0.55, 0.05
_TRUNCATE_SD = 2.3  # axis lengths are drawn from normals truncated at +- this many sd

# Sector geometry, as fractions of the image size.
_APEX_ABOVE = 0.06  # the apex lies this far above the top row
_NEAR_RADIUS = 0.13  # radius of the near (probe) arc, from the apex
_BOTTOM_MARGIN = 0.015  # the far arc ends this far above the bottom row on the centre line
_LATERAL_SPACING_PX = 2.0  # beam spacing at the far arc, pixels (scan lines get sparse at depth)
_AXIAL_SPACING_PX = 1.25  # depth-sample spacing, pixels

# Echogenicity levels in dB relative to soft tissue (amplitude 1).
_DB_HEAD_INTERIOR = -10.0
_DB_BLOB = (-8.0, -3.0)
_DB_MIDLINE = 3.0
_DB_PS_FILL = 9.0
_DB_PS_CORTEX = 15.0
_DB_RIM_SIDE = 9.0  # skull rim hit tangentially by the beam
_DB_RIM_NORMAL = 27.0  # skull rim hit perpendicularly by the beam
_DB_ARC = (10.0, 18.0)  # unlabelled distractor arcs
_SPECULAR_POWER = 3.0
_RIM_THICKNESS = 0.022  # of the image size
_PS_CORTEX_BONE = 0.5  # bone reflectivity of the pubic cortex (the skull rim is up to 1)
_SHADOW_NEPERS = 1.4  # amplitude loss behind one full-brightness skull rim at shadow_strength 1
_MAX_DISTRACTOR_ARCS = 12
_DROPOUT_ARCS = 3
_DROPOUT_DEPTH_DB = 16.0  # how much a skull drop-out dims the rim at its centre
_TISSUE_GREY = 0.40  # grey level (fraction of 255) of soft tissue at 0 dB gain

# Frame jitter bounds (uniform): translation (fraction of size), rotation (deg), scale (relative).
_JITTER_SHIFT = 0.006
_JITTER_ROT_DEG = 1.5
_JITTER_SCALE = 0.01
_SECTOR_MARGIN = 0.02  # placement keeps the structures this far inside the sector (fraction)
_STRUCTURE_GAP = 0.03  # placement keeps this gap between head and symphysis (fraction)
_HEAD_CANDIDATES = 24
_PS_CANDIDATES = 48
_FH_CENTRE_BOX = (0.42, 0.72, 0.45, 0.78)  # x0, x1, y0, y1 (fractions of the size)
_FH_ANGLE = (0.0, 30.0)  # mean, sd of the major-axis rotation, degrees
_PS_CENTRE_BOX = (0.1, 0.5, 0.08, 0.5)
_PS_ANGLE = (15.0, 25.0)
_ELLIPSE_CHECK_POINTS = 40
_RIM_SEGMENTS = 48
_TEXTURE_NEPERS = 0.25  # sd of the slow tissue-echogenicity variation (ln amplitude)


# --------------------------------------------------------------------------------------------
# Public configuration
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DevicePreset:
    """Acquisition characteristics of one (imaginary) ultrasound machine.

    Lengths are Gaussian standard deviations in pixels at the 256 x 256 reference size and are
    scaled with the output size.

    Args:
        name: preset name (the key in :data:`DEVICE_PRESETS`).
        sector_angle_deg: full opening angle of the fan, degrees.
        axial_psf: axial point-spread sigma (pixels at 256), constant with depth.
        lateral_psf: lateral point-spread sigma at the focus (pixels at 256).
        focal_depth: focus position as a fraction of the imaging depth (0 = probe, 1 = far arc).
        focal_range: depth (fraction of the imaging depth) over which the lateral width grows by
            sqrt(2) away from the focus; smaller means a more quickly diverging beam.
        speckle_model: ``"rayleigh"`` (fully developed speckle) or ``"nakagami"``.
        nakagami_m: shape ``m`` of the Gamma-distributed intensity when ``speckle_model`` is
            ``"nakagami"`` (``m < 1`` pre-Rayleigh, spiky; ``m > 1`` post-Rayleigh, smoother).
        dynamic_range_db: displayed dynamic range of the log compression, dB.
        attenuation_np: round-trip amplitude attenuation over the full imaging depth, nepers
            (``exp(-attenuation_np * depth)``, depth in [0, 1]).
        tgc_ripple_db: amplitude of the smooth random gain ripple of the time-gain compensation, dB.

    Raises:
        ValueError: when a value is out of range or the speckle model is unknown.
    """

    name: str
    sector_angle_deg: float
    axial_psf: float
    lateral_psf: float
    focal_depth: float = 0.55
    focal_range: float = 0.35
    speckle_model: str = "rayleigh"
    nakagami_m: float = 1.0
    dynamic_range_db: float = 60.0
    attenuation_np: float = 2.3
    tgc_ripple_db: float = 1.5

    def __post_init__(self) -> None:
        if not 30.0 <= self.sector_angle_deg <= 100.0:
            raise ValueError(f"sector_angle_deg must be in [30, 100], got {self.sector_angle_deg}")
        for name in ("axial_psf", "lateral_psf", "focal_range", "nakagami_m", "dynamic_range_db"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.focal_depth <= 1.0:
            raise ValueError(f"focal_depth must be in [0, 1], got {self.focal_depth}")
        if self.attenuation_np < 0 or self.tgc_ripple_db < 0:
            raise ValueError("attenuation_np and tgc_ripple_db must be >= 0")
        if self.speckle_model not in ("rayleigh", "nakagami"):
            raise ValueError(
                f"speckle_model must be 'rayleigh' or 'nakagami', got {self.speckle_model!r}"
            )


DEVICE_PRESETS: dict[str, DevicePreset] = {
    preset.name: preset
    for preset in (
        DevicePreset(
            name="standard",
            sector_angle_deg=80.0,
            axial_psf=0.9,
            lateral_psf=1.3,
            focal_depth=0.55,
            focal_range=0.35,
            speckle_model="rayleigh",
            dynamic_range_db=60.0,
            attenuation_np=2.3,
            tgc_ripple_db=1.5,
        ),
        DevicePreset(
            name="sharp_highend",
            sector_angle_deg=90.0,
            axial_psf=0.55,
            lateral_psf=0.75,
            focal_depth=0.5,
            focal_range=0.5,
            speckle_model="rayleigh",
            dynamic_range_db=66.0,
            attenuation_np=2.8,
            tgc_ripple_db=0.8,
        ),
        DevicePreset(
            name="legacy_blurry",
            sector_angle_deg=70.0,
            axial_psf=1.5,
            lateral_psf=2.4,
            focal_depth=0.45,
            focal_range=0.28,
            speckle_model="nakagami",
            nakagami_m=1.6,
            dynamic_range_db=54.0,
            attenuation_np=1.8,
            tgc_ripple_db=2.5,
        ),
        DevicePreset(
            name="portable_lowcost",
            sector_angle_deg=66.0,
            axial_psf=1.3,
            lateral_psf=2.0,
            focal_depth=0.4,
            focal_range=0.3,
            speckle_model="nakagami",
            nakagami_m=0.85,
            dynamic_range_db=52.0,
            attenuation_np=2.0,
            tgc_ripple_db=3.0,
        ),
    )
}


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that defines a synthetic data set; hashable, so it can key caches.

    Args:
        size: side of the square output in pixels (height = width = size), >= 32.
        seed: non-negative integer seed of the whole data set.
        device: key of :data:`DEVICE_PRESETS` (PSF, speckle model, dynamic range, sector width).
        difficulty: in [0, 1]; drives contrast loss, skull drop-out, shadow strength and the number
            of distractor arcs unless they are set explicitly.
        frames_per_subject: consecutive indices that share one subject's anatomy (>= 1).
        contrast: anatomical contrast in (0, 1]; 1 = full contrast, smaller values pull every
            anatomical echo level (in dB) towards soft tissue. None: ``1 - 0.5 * difficulty``.
        skull_dropout: in [0, 1], fraction of the skull circumference dimmed by random drop-out
            arcs. None: ``0.45 * difficulty``.
        shadow_strength: >= 0, strength of acoustic shadowing behind bone (0 = none, 1 = one skull
            wall hit perpendicularly removes about 75 % of the amplitude).
            None: ``0.3 + 0.6 * difficulty``.
        distractor_arcs: number of bright, unlabelled curved arcs, 0 to 12.
            None: ``round(8 * difficulty)``.
        tgc_error: relative error of the time-gain compensation, which uses
            ``alpha * (1 - tgc_error)`` instead of the true attenuation ``alpha``; 0 = perfect,
            1 = no compensation, negative = over-compensation; in [-1, 1]. None: drawn per frame,
            uniform in [-0.1, 0.25].

    Raises:
        ValueError: naming the argument when a value is invalid.
    """

    size: int = 256
    seed: int = 0
    device: str = "standard"
    difficulty: float = 0.3
    frames_per_subject: int = 1
    contrast: float | None = None
    skull_dropout: float | None = None
    shadow_strength: float | None = None
    distractor_arcs: int | None = None
    tgc_error: float | None = None

    def __post_init__(self) -> None:
        _check_int("size", self.size, minimum=32)
        _check_int("seed", self.seed, minimum=0)
        _check_int("frames_per_subject", self.frames_per_subject, minimum=1)
        if not isinstance(self.device, str) or self.device not in DEVICE_PRESETS:
            raise ValueError(
                f"device must be one of {sorted(DEVICE_PRESETS)}, got {self.device!r}"
            )
        _check_range("difficulty", self.difficulty, 0.0, 1.0)
        if self.contrast is not None:
            _check_range("contrast", self.contrast, 0.0, 1.0)
            if self.contrast <= 0:
                raise ValueError(f"contrast must be in (0, 1], got {self.contrast}")
        if self.skull_dropout is not None:
            _check_range("skull_dropout", self.skull_dropout, 0.0, 1.0)
        if self.shadow_strength is not None:
            _check_range("shadow_strength", self.shadow_strength, 0.0, 10.0)
        if self.distractor_arcs is not None:
            _check_int("distractor_arcs", self.distractor_arcs, minimum=0)
            if self.distractor_arcs > _MAX_DISTRACTOR_ARCS:
                raise ValueError(
                    f"distractor_arcs must be <= {_MAX_DISTRACTOR_ARCS}, got {self.distractor_arcs}"
                )
        if self.tgc_error is not None:
            _check_range("tgc_error", self.tgc_error, -1.0, 1.0)

    @property
    def preset(self) -> DevicePreset:
        """The :class:`DevicePreset` named by ``device``."""
        return DEVICE_PRESETS[self.device]

    @classmethod
    def from_dict(cls, params: Mapping[str, Any]) -> SyntheticConfig:
        """Build a config from a (Kedro parameters) mapping.

        Args:
            params: mapping of field names to values; missing fields keep their defaults.
                Integral floats (``256.0``) are accepted for integer fields.

        Returns:
            The validated config.

        Raises:
            ValueError: when ``params`` is not a mapping, has keys that are not fields (all of
                them are named), or a value is invalid.
        """
        if not isinstance(params, Mapping):
            raise ValueError(f"params must be a mapping, got {type(params).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in params if k not in known)
        if unknown:
            raise ValueError(
                f"unknown synthetic parameter(s): {unknown}; valid keys are {sorted(known)}"
            )
        values = dict(params)
        for key in ("size", "seed", "frames_per_subject", "distractor_arcs"):
            value = values.get(key)
            if isinstance(value, float) and value.is_integer():
                values[key] = int(value)
        return cls(**values)


@dataclass(frozen=True)
class SyntheticSample:
    """One generated image with its labels.

    Args:
        image: (size, size) uint8 B-mode image; 0 outside the sector.
        mask: (size, size) uint8 labels: 0 background, 1 pubic symphysis, 2 fetal head.
        subject_id: ``f"syn{subject:05d}"``; frames of one subject share it.
    """

    image: np.ndarray
    mask: np.ndarray
    subject_id: str


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_range(name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not low <= float(value) <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")


@dataclass(frozen=True)
class _Knobs:
    """Effective difficulty knobs after resolving the ``None`` overrides."""

    contrast: float
    skull_dropout: float
    shadow_strength: float
    distractor_arcs: int


def _resolve_knobs(config: SyntheticConfig) -> _Knobs:
    """Derive the knobs from ``difficulty``; explicit overrides win."""
    d = config.difficulty
    return _Knobs(
        contrast=1.0 - 0.5 * d if config.contrast is None else float(config.contrast),
        skull_dropout=0.45 * d if config.skull_dropout is None else float(config.skull_dropout),
        shadow_strength=(
            0.3 + 0.6 * d if config.shadow_strength is None else float(config.shadow_strength)
        ),
        distractor_arcs=(
            int(round(8 * d)) if config.distractor_arcs is None else int(config.distractor_arcs)
        ),
    )


# --------------------------------------------------------------------------------------------
# Sector geometry and scan conversion
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _SectorGeometry:
    """A fan: apex at (cx, apex_y), radii [r_min, r_max], angles [-half_angle, half_angle]
    measured from the downward vertical (positive to the right); sampled on an
    n_depth x n_beams polar grid."""

    size: int
    half_angle: float
    apex_x: float
    apex_y: float
    r_min: float
    r_max: float
    n_depth: int
    n_beams: int


@functools.lru_cache(maxsize=64)
def _sector_geometry(size: int, sector_angle_deg: float) -> _SectorGeometry:
    """The fan for an image size and opening angle (apex slightly above the top centre)."""
    half = math.radians(sector_angle_deg) / 2.0
    apex_y = -_APEX_ABOVE * size
    r_min = _NEAR_RADIUS * size
    r_max = (1.0 - _BOTTOM_MARGIN) * size - apex_y
    n_depth = max(32, round((r_max - r_min) / _AXIAL_SPACING_PX))
    n_beams = max(32, round(r_max * 2.0 * half / _LATERAL_SPACING_PX))
    return _SectorGeometry(
        size=size,
        half_angle=half,
        apex_x=(size - 1) / 2.0,
        apex_y=apex_y,
        r_min=r_min,
        r_max=r_max,
        n_depth=n_depth,
        n_beams=n_beams,
    )


@dataclass(frozen=True)
class _ScanGrids:
    """Cached remap grids (fixed point) between the Cartesian image and the polar grid."""

    to_polar: tuple[np.ndarray, np.ndarray]  # maps for a (n_depth, n_beams) destination
    to_cartesian: tuple[np.ndarray, np.ndarray]  # maps for a (size, size) destination
    sector: np.ndarray  # (size, size) uint8, 1 inside the fan
    depth: np.ndarray  # (n_depth,) float32, normalised depth in [0, 1] of each polar row


@functools.lru_cache(maxsize=16)
def _scan_conversion_grids(geom: _SectorGeometry) -> _ScanGrids:
    """Build (once per geometry) the cv2.remap grids and the sector mask.

    Args:
        geom: the sector geometry.

    Returns:
        The grids; their arrays are read-only because they are shared.
    """
    radius = np.linspace(geom.r_min, geom.r_max, geom.n_depth, dtype=np.float64)
    theta = np.linspace(-geom.half_angle, geom.half_angle, geom.n_beams, dtype=np.float64)
    map_x = (geom.apex_x + radius[:, None] * np.sin(theta)[None, :]).astype(np.float32)
    map_y = (geom.apex_y + radius[:, None] * np.cos(theta)[None, :]).astype(np.float32)
    to_polar = cv2.convertMaps(map_x, map_y, cv2.CV_16SC2)

    coords = np.arange(geom.size, dtype=np.float64)
    dx = coords[None, :] - geom.apex_x
    dy = coords[:, None] - geom.apex_y
    r = np.hypot(dx, dy)
    th = np.arctan2(dx, dy)
    row = (r - geom.r_min) / (geom.r_max - geom.r_min) * (geom.n_depth - 1)
    col = (th + geom.half_angle) / (2.0 * geom.half_angle) * (geom.n_beams - 1)
    to_cartesian = cv2.convertMaps(col.astype(np.float32), row.astype(np.float32), cv2.CV_16SC2)
    sector = ((r >= geom.r_min) & (r <= geom.r_max) & (np.abs(th) <= geom.half_angle)).astype(
        np.uint8
    )
    grids = _ScanGrids(
        to_polar=to_polar,
        to_cartesian=to_cartesian,
        sector=sector,
        depth=np.linspace(0.0, 1.0, geom.n_depth, dtype=np.float32),
    )
    for array in (*to_polar, *to_cartesian, sector, grids.depth):
        array.flags.writeable = False
    return grids


def _to_polar(image: np.ndarray, grids: _ScanGrids) -> np.ndarray:
    """Resample a Cartesian float32 map (one or more channels) onto the polar (depth x beam)
    grid."""
    return cv2.remap(
        image, grids.to_polar[0], grids.to_polar[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )


def _to_cartesian(polar: np.ndarray, grids: _ScanGrids) -> np.ndarray:
    """Scan-convert a polar uint8 image to Cartesian; pixels outside the sector become 0."""
    image = cv2.remap(
        polar,
        grids.to_cartesian[0],
        grids.to_cartesian[1],
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return cv2.multiply(image, grids.sector)


# --------------------------------------------------------------------------------------------
# Point-spread function
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _PsfPlan:
    """Depth-dependent PSF as a per-row blend of a few separable Gaussian blurs."""

    axial_sigma: float  # in depth samples
    axial_kernel: np.ndarray  # (k, 1) float32
    lateral_sigmas: tuple[float, ...]  # in beams, one per level
    lateral_kernels: tuple[np.ndarray, ...]  # (k, 1) float32 per level
    weights: np.ndarray  # (n_depth, n_levels) float32, rows sum to 1
    runs: tuple[tuple[tuple[int, int], ...], ...]  # per level: row ranges where its weight > 0
    norm: np.ndarray  # (n_depth,) float32: 1 / sqrt(field variance per unit scatterer power)
    power_sigmas: tuple[float, float]  # (lateral, axial) blur of echo^2 for the local mean power


def _kernel_size(sigma: float) -> int:
    return 2 * max(1, math.ceil(3.0 * sigma)) + 1


def _gaussian_kernel(sigma: float, ksize: int, length: int) -> np.ndarray:
    kernel = cv2.getGaussianKernel(ksize, sigma, cv2.CV_64F).ravel()
    pad = (length - ksize) // 2
    return np.pad(kernel, (pad, pad))


@functools.lru_cache(maxsize=32)
def _psf_plan(
    geom: _SectorGeometry,
    axial_psf: float,
    lateral_psf: float,
    focal_depth: float,
    focal_range: float,
    max_levels: int = 3,
) -> _PsfPlan:
    """Plan the depth-dependent PSF for one geometry and device.

    The physical lateral width follows a Gaussian beam, ``w(z) = w0 * sqrt(1 + ((z - f) / zr)^2)``,
    and is converted to beam units (``w / (r * dtheta)``). Up to three Gaussian blur levels span
    the needed range and each depth row blends its two neighbouring levels (linear in log sigma).
    Sigmas are kept within [0.3, 4] beams, so the few rows next to the probe, where the beams are
    densest, get a slightly narrower lateral PSF than the beam model asks for.

    Args:
        geom: sector geometry.
        axial_psf: axial sigma, pixels at the reference size.
        lateral_psf: lateral sigma at the focus, pixels at the reference size.
        focal_depth: focus as a fraction of the imaging depth.
        focal_range: Rayleigh range as a fraction of the imaging depth.
        max_levels: at most this many blur levels.

    Returns:
        The plan, including the per-row normalisation that keeps the mean speckle power equal to
        the echogenicity squared whatever the PSF.
    """
    scale = geom.size / _REFERENCE_SIZE
    dr = (geom.r_max - geom.r_min) / (geom.n_depth - 1)
    dtheta = 2.0 * geom.half_angle / (geom.n_beams - 1)
    z = np.linspace(0.0, 1.0, geom.n_depth)
    radius = geom.r_min + z * (geom.r_max - geom.r_min)
    width_px = lateral_psf * scale * np.sqrt(1.0 + ((z - focal_depth) / focal_range) ** 2)
    sigma_beams = width_px / (radius * dtheta)
    low = float(np.clip(sigma_beams.min(), 0.3, 4.0))
    high = float(np.clip(sigma_beams.max(), low, 4.0))
    n_levels = 1 if high / low < 1.15 else (2 if high / low < 2.5 else max_levels)
    sigmas = np.geomspace(low, high, n_levels) if n_levels > 1 else np.array([low])

    weights = np.zeros((geom.n_depth, n_levels), dtype=np.float64)
    if n_levels == 1:
        weights[:, 0] = 1.0
    else:
        log_sigma = np.log(np.clip(sigma_beams, low, high))
        pos = np.interp(log_sigma, np.log(sigmas), np.arange(n_levels))
        lower = np.minimum(np.floor(pos).astype(int), n_levels - 2)
        frac = pos - lower
        rows = np.arange(geom.n_depth)
        weights[rows, lower] = 1.0 - frac
        weights[rows, lower + 1] = frac

    axial_sigma = max(0.3, axial_psf * scale / dr)
    axial_ksize = _kernel_size(axial_sigma)
    ksizes = tuple(_kernel_size(s) for s in sigmas)
    length = max(ksizes)
    kernels = [_gaussian_kernel(float(s), k, length) for s, k in zip(sigmas, ksizes)]
    axial_kernel = cv2.getGaussianKernel(axial_ksize, axial_sigma, cv2.CV_64F).ravel()
    cross = np.array([[np.dot(ka, kb) for kb in kernels] for ka in kernels])
    axial_power = float(axial_kernel @ axial_kernel)
    variance = np.einsum("ia,ab,ib->i", weights, cross, weights) * axial_power
    norm = (1.0 / np.sqrt(variance)).astype(np.float32)

    runs = []
    for level in range(n_levels):
        active = np.concatenate([[False], weights[:, level] > 0, [False]])
        edges = np.flatnonzero(np.diff(active.astype(np.int8)))
        runs.append(tuple((int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])))
    mid = float(sigmas[len(sigmas) // 2])
    plan = _PsfPlan(
        axial_sigma=float(axial_sigma),
        axial_kernel=axial_kernel.astype(np.float32).reshape(-1, 1),
        lateral_sigmas=tuple(float(s) for s in sigmas),
        lateral_kernels=tuple(
            cv2.getGaussianKernel(k, float(s), cv2.CV_32F) for s, k in zip(sigmas, ksizes)
        ),
        weights=weights.astype(np.float32),
        runs=tuple(runs),
        norm=norm,
        power_sigmas=(max(1.0, mid / math.sqrt(2.0)), max(1.0, axial_sigma / math.sqrt(2.0))),
    )
    for array in (plan.weights, plan.norm, plan.axial_kernel, *plan.lateral_kernels):
        array.flags.writeable = False
    return plan


def _convolve_psf(plane: np.ndarray, plan: _PsfPlan) -> np.ndarray:
    """Convolve one (n_depth, n_beams) plane (real or imaginary part) with the depth-dependent PSF.

    Each blur level is a separable Gaussian (``cv2.sepFilter2D``; lateral along beams, axial
    along depth), computed only on the depth rows where its weight is non-zero (plus padding for
    the axial kernel) and blended with its per-row weight.

    Args:
        plane: float32 (n_depth, n_beams).
        plan: the PSF plan.

    Returns:
        The filtered plane, float32, same shape.
    """
    if len(plan.lateral_kernels) == 1:
        return cv2.sepFilter2D(
            plane, -1, plan.lateral_kernels[0], plan.axial_kernel, borderType=cv2.BORDER_REFLECT
        )
    n_depth = plane.shape[0]
    pad = len(plan.axial_kernel) // 2 + 1
    out = np.zeros(plane.shape, dtype=np.float32)
    for level, runs in enumerate(plan.runs):
        for start, stop in runs:
            lo, hi = max(0, start - pad), min(n_depth, stop + pad)
            blurred = cv2.sepFilter2D(
                plane[lo:hi],
                -1,
                plan.lateral_kernels[level],
                plan.axial_kernel,
                borderType=cv2.BORDER_REFLECT,
            )[start - lo : stop - lo]
            blurred *= plan.weights[start:stop, level][:, None]
            out[start:stop] += blurred
    return out


# --------------------------------------------------------------------------------------------
# Speckle, shadowing, gain and compression
# --------------------------------------------------------------------------------------------
def _speckle_envelope(echo: np.ndarray, plan: _PsfPlan, rng: np.random.Generator) -> np.ndarray:
    """Fully developed speckle: the envelope |PSF * (echo * complex Gaussian scatterers)|.

    Real and imaginary parts of the scatterers are independent N(0, echo^2 / 2), so the envelope
    is Rayleigh distributed where the echogenicity is locally constant; the PSF plan's row
    normalisation makes ``E[envelope^2] ~= echo^2`` whatever the PSF.

    Args:
        echo: (n_depth, n_beams) float32 echo amplitude on the polar grid.
        plan: the PSF plan.
        rng: source of the scatterers (consumes ``2 * n_depth * n_beams`` normals).

    Returns:
        (n_depth, n_beams) float32 envelope (amplitude).
    """
    scatterers = rng.standard_normal((2, *echo.shape), dtype=np.float32)
    amplitude = echo * (plan.norm[:, None] * np.float32(math.sqrt(0.5)))
    real = _convolve_psf(cv2.multiply(scatterers[0], amplitude), plan)
    imaginary = _convolve_psf(cv2.multiply(scatterers[1], amplitude), plan)
    return cv2.magnitude(real, imaginary)


_NAKAGAMI_LOG_RANGE = (-14.0, 4.0)  # ln of normalised intensity covered by the table
_NAKAGAMI_TABLE_POINTS = 721


@functools.lru_cache(maxsize=16)
def _nakagami_table(m: float) -> np.ndarray:
    """Quantile map from Exp(1) to Gamma(m, 1/m) in the log domain, on a uniform grid.

    ``table[i] = ln(gammaincinv(m, 1 - exp(-x)) / m)`` with ``ln x`` uniform on
    ``_NAKAGAMI_LOG_RANGE``; the map is smooth in log-log coordinates, so linear interpolation on
    this grid is accurate to far below one grey level.

    Args:
        m: Nakagami shape parameter (> 0).

    Returns:
        float32 table of ``_NAKAGAMI_TABLE_POINTS`` values (read-only).
    """
    from scipy.special import gammaincinv  # off the hot path: computed once per m

    log_x = np.linspace(*_NAKAGAMI_LOG_RANGE, _NAKAGAMI_TABLE_POINTS)
    quantile = gammaincinv(m, -np.expm1(-np.exp(log_x))) / m
    table = np.log(np.maximum(quantile, 1e-300)).astype(np.float32)
    table.flags.writeable = False
    return table


def _nakagami_log_intensity(
    log_intensity: np.ndarray, echo: np.ndarray, plan: _PsfPlan, m: float
) -> np.ndarray:
    """Turn Rayleigh speckle into Nakagami speckle (Gamma-distributed intensity of shape ``m``).

    The intensity is divided by its local expected power (``echo^2`` smoothed at the PSF scale),
    which makes it Exp(1); a quantile transform maps Exp(1) to Gamma(m, 1/m) (mean 1), and the
    local power is put back. The map is monotonic, so the PSF correlation of the speckle is kept.
    Everything happens on ln(intensity), which is what the log compression needs anyway.

    Args:
        log_intensity: ln of the Rayleigh speckle intensity, (n_depth, n_beams) float32.
        echo: the echo amplitude the speckle was drawn from, same shape.
        plan: PSF plan (gives the smoothing scale).
        m: Nakagami shape parameter (> 0).

    Returns:
        ln of the Nakagami speckle intensity, same shape, float32.
    """
    power = cv2.GaussianBlur(
        echo * echo,
        (0, 0),
        sigmaX=plan.power_sigmas[0],
        sigmaY=plan.power_sigmas[1],
        borderType=cv2.BORDER_REFLECT,
    )
    log_power = cv2.log(cv2.max(power, 1e-20))
    table = _nakagami_table(float(m))
    low, high = _NAKAGAMI_LOG_RANGE
    step = (high - low) / (len(table) - 1)
    position = log_intensity - log_power
    position -= np.float32(low)
    position *= np.float32(1.0 / step)
    np.clip(position, 0.0, len(table) - 1.001, out=position)
    index = position.astype(np.int32)
    position -= index  # fractional part
    lower = table[index]
    result = table[index + 1]
    result -= lower
    result *= position
    result += lower
    result += log_power
    return result


def _shadow_transmission(bone: np.ndarray, strength: float, rim_thickness_px: float) -> np.ndarray:
    """Amplitude transmission along each beam behind bone.

    Transmission at a depth is ``exp(-k * sum of bone reflectivity strictly above it)``, where
    ``k`` makes one full-brightness skull wall (``rim_thickness_px`` samples of reflectivity 1)
    cost ``_SHADOW_NEPERS * strength`` nepers.

    Args:
        bone: (n_depth, n_beams) float32 bone reflectivity in [0, 1] on the polar grid.
        strength: the ``shadow_strength`` knob (0 = no shadow).
        rim_thickness_px: thickness of the skull rim in depth samples.

    Returns:
        (n_depth, n_beams) float32 transmission in (0, 1].
    """
    if strength <= 0:
        return np.ones_like(bone)
    cumulative = np.cumsum(bone, axis=0, dtype=np.float32)
    cumulative -= bone  # exclusive: a reflector does not shadow itself
    k = -_SHADOW_NEPERS * strength / max(rim_thickness_px, 1.0)
    return cv2.exp(cumulative * np.float32(k))


def _depth_gain_db(
    depth: np.ndarray, attenuation_np: float, tgc_error: float, ripple: np.ndarray, ripple_db: float
) -> np.ndarray:
    """Net gain per depth row after attenuation and an imperfect time-gain compensation.

    The tissue attenuates the amplitude by ``exp(-alpha * depth)``; the compensation multiplies by
    ``exp(alpha * (1 - tgc_error) * depth)`` and a smooth random ripple (a sum of three slow
    sinusoids of ``ripple_db / 2`` each), so the net gain in dB is
    ``-8.686 * alpha * tgc_error * depth + ripple(depth)``.

    Args:
        depth: (n_depth,) normalised depth in [0, 1].
        attenuation_np: ``alpha``, nepers over the full depth.
        tgc_error: relative error of the compensation's ``alpha``.
        ripple: (3, 2) frequencies (cycles per depth) and phases (radians) of the ripple.
        ripple_db: amplitude scale of the ripple.

    Returns:
        (n_depth,) float32 gain in dB.
    """
    neper_to_db = 20.0 / math.log(10.0)
    gain = -neper_to_db * attenuation_np * tgc_error * depth.astype(np.float64)
    for frequency, phase in ripple:
        gain += 0.5 * ripple_db * np.sin(2.0 * math.pi * frequency * depth + phase)
    return gain.astype(np.float32)


def _log_compress(
    log_intensity: np.ndarray, gain_db: np.ndarray, dynamic_range_db: float
) -> np.ndarray:
    """Log-compress speckle to uint8.

    Soft tissue (mean intensity 1) at 0 dB gain maps to ``_TISSUE_GREY * 255``; one
    ``dynamic_range_db`` spans the full 0..255 range; values beyond are clipped.

    Args:
        log_intensity: (n_depth, n_beams) float32 natural log of the intensity (overwritten).
        gain_db: (n_depth,) per-row gain in dB (attenuation and compensation).
        dynamic_range_db: displayed dynamic range.

    Returns:
        (n_depth, n_beams) uint8.
    """
    grey_per_db = 255.0 / dynamic_range_db
    slope = np.float32(grey_per_db * 10.0 / math.log(10.0))
    offset = (_TISSUE_GREY * 255.0 + 0.5 + grey_per_db * gain_db).astype(np.float32)
    log_intensity *= slope
    log_intensity += offset[:, None]
    np.clip(log_intensity, 0.0, 255.0, out=log_intensity)
    return log_intensity.astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Anatomy
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Ellipse:
    """Ellipse with centre (cx, cy), semi-axes a >= b (pixels) and rotation (degrees, cv2 sense:
    the a-axis points along (cos angle, sin angle) with y downwards)."""

    cx: float
    cy: float
    a: float
    b: float
    angle_deg: float

    def jittered(self, dx: float, dy: float, rot_deg: float, scale: float) -> _Ellipse:
        return _Ellipse(self.cx + dx, self.cy + dy, self.a * scale, self.b * scale,
                        self.angle_deg + rot_deg)


@dataclass(frozen=True)
class _Subject:
    """Per-subject anatomy and texture (everything drawn from ``default_rng([seed, subject])``)."""

    head: _Ellipse
    symphysis: _Ellipse
    texture: np.ndarray  # (6, 6) standard normals: slow echogenicity variation
    layers: np.ndarray  # (3, 3): radius fraction, thickness fraction, dB of near-field layers
    midline: np.ndarray  # (3,): angle offset (deg), length fraction, dB offset
    blobs: np.ndarray  # (3, 5): u, v (head-local, fraction), radius fraction, ratio, dB
    arcs: np.ndarray  # (_MAX_DISTRACTOR_ARCS, 9) distractor-arc parameters
    dropout: np.ndarray  # (_DROPOUT_ARCS, 2): centre parameter (rad), share of the drop-out
    levels: np.ndarray  # (2,): dB jitter of head interior and symphysis


def _truncated_normal(rng: np.random.Generator, mean: float, sd: float, count: int) -> np.ndarray:
    """Normals clipped to ``mean +- _TRUNCATE_SD * sd`` (clipping, not redrawing, keeps the number
    of draws fixed; about 1 % of the values sit on each bound)."""
    values = rng.standard_normal(count)
    return mean + sd * np.clip(values, -_TRUNCATE_SD, _TRUNCATE_SD)


def _ellipse_points(
    cx: np.ndarray, cy: np.ndarray, a: np.ndarray, b: np.ndarray, angle_deg: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Boundary points of K ellipses (parameters broadcast to (K, 1)); returns x, y of (K, n)."""
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)[None, :]
    phi = np.radians(angle_deg)[:, None]
    u, v = a[:, None] * np.cos(t), b[:, None] * np.sin(t)
    x = cx[:, None] + u * np.cos(phi) - v * np.sin(phi)
    y = cy[:, None] + u * np.sin(phi) + v * np.cos(phi)
    return x, y


def _sector_violation(
    x: np.ndarray, y: np.ndarray, geom: _SectorGeometry, margin: float
) -> np.ndarray:
    """Largest distance (pixels) by which any point of each row lies outside the shrunken sector
    or image (<= 0 means all points are inside with ``margin`` to spare)."""
    dx, dy = x - geom.apex_x, y - geom.apex_y
    r = np.hypot(dx, dy)
    theta = np.abs(np.arctan2(dx, dy))
    edge = margin - r * np.sin(geom.half_angle - theta)
    limit = geom.size - 1 - margin
    worst = np.maximum.reduce(
        [geom.r_min + margin - r, r - (geom.r_max - margin), edge, margin - x, x - limit, y - limit]
    )
    return worst.max(axis=1)


def _inside_ellipse(x: np.ndarray, y: np.ndarray, e_cx, e_cy, e_a, e_b, e_angle) -> np.ndarray:
    """Normalised radius ((u/a)^2 + (v/b)^2) of points in an ellipse's frame (< 1 = inside)."""
    phi = np.radians(e_angle)
    dx, dy = x - e_cx, y - e_cy
    u = dx * np.cos(phi) + dy * np.sin(phi)
    v = -dx * np.sin(phi) + dy * np.cos(phi)
    return (u / e_a) ** 2 + (v / e_b) ** 2


def _candidates(
    rng: np.random.Generator,
    geom: _SectorGeometry,
    major: float,
    ratio: float,
    count: int,
    centre_box: tuple[float, float, float, float],
    angle: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Random placements of one ellipse and how far each sticks out of the sector.

    Args:
        rng: random source (always consumes ``3 * count`` draws).
        geom: sector geometry.
        major: full major-axis length, pixels.
        ratio: minor / major.
        count: number of candidates.
        centre_box: (x0, x1, y0, y1) of the uniform centre, fractions of the size.
        angle: (mean, sd) of the normal rotation, degrees.

    Returns:
        ``(params, outside)``: (count, 5) rows of (cx, cy, a, b, angle) and the (count,) largest
        distance in pixels by which a boundary point lies outside the sector shrunk by
        ``_SECTOR_MARGIN`` (<= 0: fits).
    """
    s = geom.size
    cx = rng.uniform(centre_box[0], centre_box[1], count) * s
    cy = rng.uniform(centre_box[2], centre_box[3], count) * s
    rotation = rng.normal(angle[0], angle[1], count)
    a = np.full(count, major / 2.0)
    b = a * ratio
    x, y = _ellipse_points(cx, cy, a, b, rotation, _ELLIPSE_CHECK_POINTS)
    outside = _sector_violation(x, y, geom, _SECTOR_MARGIN * s)
    return np.stack([cx, cy, a, b, rotation], axis=1), outside


def _pair_overlap(heads: np.ndarray, symphyses: np.ndarray, gap: float) -> np.ndarray:
    """Intrusion of every symphysis candidate (grown by ``gap``) into every head candidate.

    Args:
        heads: (H, 5) head parameters (cx, cy, a, b, angle).
        symphyses: (P, 5) symphysis parameters.
        gap: required clearance, pixels.

    Returns:
        (H, P) array; > 0 means the pair overlaps or comes closer than ``gap``. A symphysis
        boundary sampled with ``_ELLIPSE_CHECK_POINTS`` points suffices because the (much larger)
        head cannot lie inside the symphysis, and the symphysis centre is tested as well.
    """
    px, py = _ellipse_points(
        symphyses[:, 0], symphyses[:, 1], symphyses[:, 2] + gap, symphyses[:, 3] + gap,
        symphyses[:, 4], _ELLIPSE_CHECK_POINTS,
    )
    px = np.concatenate([px, symphyses[:, :1]], axis=1)[None]
    py = np.concatenate([py, symphyses[:, 1:2]], axis=1)[None]
    h = heads[:, :, None, None]
    radius = _inside_ellipse(px, py, h[:, 0], h[:, 1], h[:, 2], h[:, 3], h[:, 4])
    return 1.0 - radius.min(axis=2)


def _place_anatomy(rng: np.random.Generator, geom: _SectorGeometry) -> tuple[_Ellipse, _Ellipse]:
    """Draw sizes from the PSFHS calibration and place the fetal head (lower, central to right)
    and the pubic symphysis (upper left, elongated, tilted down towards the head).

    Candidate placements of both are drawn at random; the first head candidate (in draw order)
    for which some symphysis candidate fits, with both inside the sector (``_SECTOR_MARGIN``) and
    ``_STRUCTURE_GAP`` apart, wins together with the first such symphysis. If no pair satisfies
    everything, the pair that overlaps least, then sticks out least, is used (the mask is clipped
    to the sector later). The number of random draws is fixed.

    Returns:
        ``(head, symphysis)``.
    """
    scale = geom.size / _REFERENCE_SIZE
    fh_major = float(_truncated_normal(rng, _FH_MAJOR_MEAN, _FH_MAJOR_SD, 1)[0]) * scale
    fh_ratio = float(np.clip(rng.normal(_FH_RATIO_MEAN, _FH_RATIO_SD), 0.7, 0.95))
    ps_major = float(_truncated_normal(rng, _PS_MAJOR_MEAN, _PS_MAJOR_SD, 1)[0]) * scale
    ps_ratio = float(np.clip(rng.normal(_PS_RATIO_MEAN, _PS_RATIO_SD), 0.4, 0.72))
    heads, head_out = _candidates(rng, geom, fh_major, fh_ratio, _HEAD_CANDIDATES,
                                  _FH_CENTRE_BOX, _FH_ANGLE)
    symphyses, ps_out = _candidates(rng, geom, ps_major, ps_ratio, _PS_CANDIDATES,
                                    _PS_CENTRE_BOX, _PS_ANGLE)
    gap = _STRUCTURE_GAP * geom.size
    head_ok, ps_ok = np.flatnonzero(head_out <= 0), np.flatnonzero(ps_out <= 0)
    if ps_ok.size:
        for i in head_ok:  # usually the first fitting head already has room for a symphysis
            free = _pair_overlap(heads[i : i + 1], symphyses[ps_ok], gap)[0] <= 0
            if free.any():
                return _Ellipse(*heads[i]), _Ellipse(*symphyses[ps_ok[int(np.argmax(free))]])
    overlap = np.maximum(_pair_overlap(heads, symphyses, gap), 0.0)
    outside = np.maximum(head_out[:, None], ps_out[None, :])
    order = np.lexsort((outside.ravel(), overlap.ravel()))
    i, j = np.unravel_index(int(order[0]), overlap.shape)
    logger.debug("anatomy placement: no candidate pair fits; using the closest one")
    return _Ellipse(*heads[i]), _Ellipse(*symphyses[j])


def _draw_subject(rng: np.random.Generator, geom: _SectorGeometry) -> _Subject:
    """Draw one subject's anatomy. The number of draws never depends on knobs, so overriding a
    knob changes only what that knob controls."""
    head, symphysis = _place_anatomy(rng, geom)
    texture = rng.standard_normal((6, 6))
    layers = np.stack(
        [rng.uniform(0.01, 0.16, 3), rng.uniform(0.006, 0.02, 3), rng.uniform(-5.0, 5.0, 3)], axis=1
    )
    midline = np.array([rng.normal(0.0, 8.0), rng.uniform(0.5, 0.8), rng.uniform(-2.0, 2.0)])
    blobs = np.stack(
        [
            rng.uniform(-0.45, 0.45, 3),
            rng.uniform(-0.45, 0.45, 3),
            rng.uniform(0.08, 0.2, 3),
            rng.uniform(0.5, 1.0, 3),
            rng.uniform(*_DB_BLOB, 3),
        ],
        axis=1,
    )
    n = _MAX_DISTRACTOR_ARCS
    arcs = np.stack(
        [
            rng.uniform(0.1, 0.9, n),  # centre x (fraction)
            rng.uniform(0.15, 0.95, n),  # centre y
            rng.uniform(0.08, 0.3, n),  # semi-axis a (fraction)
            rng.uniform(0.5, 1.0, n),  # b / a
            rng.uniform(0.0, 180.0, n),  # rotation
            rng.uniform(0.0, 360.0, n),  # start angle
            rng.uniform(40.0, 110.0, n),  # extent
            rng.uniform(0.01, 0.022, n),  # thickness (fraction)
            rng.uniform(*_DB_ARC, n),  # level
        ],
        axis=1,
    )
    dropout = np.stack([rng.uniform(0.0, 2.0 * math.pi, _DROPOUT_ARCS),
                        rng.dirichlet(np.ones(_DROPOUT_ARCS))], axis=1)
    levels = rng.uniform(-1.5, 1.5, 2)
    return _Subject(head, symphysis, texture, layers, midline, blobs, arcs, dropout, levels)


def _jitter_pose(
    subject: _Subject, rng: np.random.Generator, size: int
) -> tuple[_Ellipse, _Ellipse]:
    """Small rigid jitter of head and symphysis for one frame (bounded, uniform)."""
    j = rng.uniform(-1.0, 1.0, 7)
    shift = _JITTER_SHIFT * size
    head = subject.head.jittered(j[0] * shift, j[1] * shift, j[2] * _JITTER_ROT_DEG,
                                 1.0 + j[3] * _JITTER_SCALE)
    symphysis = subject.symphysis.jittered(j[4] * shift, j[5] * shift, j[6] * _JITTER_ROT_DEG, 1.0)
    return head, symphysis


_SHIFT_BITS = 4
_SHIFT_SCALE = 1 << _SHIFT_BITS


def _fixed(value: float) -> int:
    return int(round(value * _SHIFT_SCALE))


def _cv_ellipse(
    image: np.ndarray,
    e: _Ellipse,
    value: float | tuple[float, float],
    thickness: int = -1,
    shrink: float = 0.0,
    start: float = 0.0,
    end: float = 360.0,
) -> None:
    """Draw (fill, or outline of ``thickness``) an ellipse with sub-pixel precision.

    ``value`` is a scalar or one value per channel; on a two-channel canvas a scalar writes 0 to
    the second channel."""
    cv2.ellipse(
        image,
        (_fixed(e.cx), _fixed(e.cy)),
        (_fixed(max(e.a - shrink, 0.5)), _fixed(max(e.b - shrink, 0.5))),
        e.angle_deg,
        start,
        end,
        value if isinstance(value, tuple) else float(value),
        thickness,
        cv2.LINE_8,
        _SHIFT_BITS,
    )


def _db(level_db: float) -> float:
    return 10.0 ** (level_db / 20.0)


def _specular_rim(
    head: _Ellipse, geom: _SectorGeometry, dropout: np.ndarray, skull_dropout: float, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brightness of the skull rim along its circumference.

    The rim is cut into ``n`` segments. A segment's reflectivity is
    ``floor + (1 - floor) * |cos(beam, normal)| ** _SPECULAR_POWER`` (a specular reflector is
    brightest where the beam hits it perpendicularly), times the drop-out dimming.

    Args:
        head: head ellipse (outer boundary = mask boundary).
        geom: sector geometry (gives the apex, hence the beam direction).
        dropout: (_DROPOUT_ARCS, 2) drop-out centres (ellipse parameter) and shares.
        skull_dropout: fraction of the circumference to dim.
        n: number of segments.

    Returns:
        Segment end points x, y (n + 1 each, closed) and reflectivity in [0, 1] per segment.
    """
    thickness = max(1.0, _RIM_THICKNESS * geom.size)
    a, b = head.a - thickness / 2.0, head.b - thickness / 2.0
    t = np.linspace(0.0, 2.0 * math.pi, n + 1)
    phi = math.radians(head.angle_deg)
    c, s = math.cos(phi), math.sin(phi)
    u, v = a * np.cos(t), b * np.sin(t)
    x = head.cx + u * c - v * s
    y = head.cy + u * s + v * c
    tm = t[:-1] + math.pi / n
    # outward normal of the ellipse at the segment centre, and beam direction from the apex
    nu, nv = np.cos(tm) / a, np.sin(tm) / b
    nx, ny = nu * c - nv * s, nu * s + nv * c
    px = head.cx + a * np.cos(tm) * c - b * np.sin(tm) * s
    py = head.cy + a * np.cos(tm) * s + b * np.sin(tm) * c
    bx, by = px - geom.apex_x, py - geom.apex_y
    cosine = np.abs(nx * bx + ny * by) / (np.hypot(nx, ny) * np.hypot(bx, by))
    floor = _db(_DB_RIM_SIDE - _DB_RIM_NORMAL)
    reflect = floor + (1.0 - floor) * cosine**_SPECULAR_POWER
    if skull_dropout > 0:
        dim = np.zeros_like(tm)
        for centre, share in dropout:
            half_width = math.pi * skull_dropout * share  # share of the dimmed circumference
            dist = np.abs((tm - centre + math.pi) % (2.0 * math.pi) - math.pi)
            window = np.clip(1.0 - (dist / max(half_width, 1e-6)) ** 4, 0.0, 1.0)
            dim = np.maximum(dim, window)
        reflect = reflect * (1.0 - (1.0 - _db(-_DROPOUT_DEPTH_DB)) * dim)
    return x, y, reflect


def _draw_echogenicity(
    subject: _Subject,
    head: _Ellipse,
    symphysis: _Ellipse,
    geom: _SectorGeometry,
    knobs: _Knobs,
) -> np.ndarray:
    """Draw the Cartesian echogenicity (linear amplitude; soft tissue = 1) and bone reflectivity.

    Both live in one two-channel canvas so that a single remap takes them to the polar grid:
    channel 0 is the echo amplitude, channel 1 the bone reflectivity in [0, 1] (skull rim and
    pubic cortex only; any other shape drawn later writes 0 there, and none overlaps them).

    Content: soft tissue (amplitude 1; its slow variation is applied on the polar grid by
    :func:`_tissue_texture`), near-field layers, distractor arcs (unlabelled), the
    echogenic pubic symphysis with a bright cortex, and the fetal head: dark interior, a midline
    echo, a few soft blobs and a specular skull rim.

    Args:
        subject: per-subject anatomy and texture.
        head: the (jittered) head ellipse of this frame.
        symphysis: the (jittered) symphysis ellipse of this frame.
        geom: sector geometry.
        knobs: effective difficulty knobs.

    Returns:
        (size, size, 2) float32 canvas: echo amplitude, bone reflectivity.
    """
    s = geom.size
    contrast = knobs.contrast
    echo = np.zeros((s, s, 2), dtype=np.float32)
    echo[:, :, 0] = 1.0

    # near-field layers: arcs concentric with the apex (rotation 90: angles from straight down)
    half = math.degrees(geom.half_angle) + 2.0
    for radius, thickness, level in subject.layers:
        r = geom.r_min + radius * s
        ring = _Ellipse(geom.apex_x, geom.apex_y, r, r, 90.0)
        _cv_ellipse(echo, ring, _db(level), max(1, round(thickness * s)), start=-half, end=half)

    arcs = subject.arcs[: knobs.distractor_arcs]
    for cx, cy, a, ratio, rot, start, extent, thickness, level in arcs:
        arc = _Ellipse(cx * s, cy * s, a * s, a * ratio * s, rot)
        _cv_ellipse(echo, arc, _db(level), max(1, round(thickness * s)), start=start,
                    end=start + extent)

    # pubic symphysis: echogenic body with a brighter cortex (the cortex also shadows)
    ps_db = _DB_PS_FILL + subject.levels[1]
    _cv_ellipse(echo, symphysis, _db(ps_db * contrast))
    cortex = max(1, round(0.008 * s))
    _cv_ellipse(echo, symphysis, (_db(_DB_PS_CORTEX * contrast), _PS_CORTEX_BONE), cortex,
                shrink=cortex / 2.0)

    # fetal head: interior, blobs, midline, then the specular rim on top
    _cv_ellipse(echo, head, _db((_DB_HEAD_INTERIOR + subject.levels[0]) * contrast))
    phi = math.radians(head.angle_deg)
    c, sn = math.cos(phi), math.sin(phi)
    for u, v, radius, ratio, level in subject.blobs:
        bx = head.cx + u * head.a * c - v * head.b * sn
        by = head.cy + u * head.a * sn + v * head.b * c
        blob = _Ellipse(bx, by, radius * head.a, radius * head.a * ratio, head.angle_deg + 40 * u)
        _cv_ellipse(echo, blob, _db(level * contrast))
    offset, length, level = subject.midline
    mphi = phi + math.radians(offset)
    half = length * head.a * 0.85
    p0 = (_fixed(head.cx - half * math.cos(mphi)), _fixed(head.cy - half * math.sin(mphi)))
    p1 = (_fixed(head.cx + half * math.cos(mphi)), _fixed(head.cy + half * math.sin(mphi)))
    cv2.line(echo, p0, p1, _db((_DB_MIDLINE + level) * contrast), max(1, round(0.008 * s)),
             cv2.LINE_8, _SHIFT_BITS)

    x, y, reflect = _specular_rim(head, geom, subject.dropout, knobs.skull_dropout, _RIM_SEGMENTS)
    thickness = max(1, round(_RIM_THICKNESS * s))
    rim_db = (_DB_RIM_NORMAL + 20.0 * np.log10(np.maximum(reflect, 1e-6))) * contrast
    rim_amp = np.power(10.0, rim_db / 20.0)
    xf, yf = np.round(x * _SHIFT_SCALE).astype(int), np.round(y * _SHIFT_SCALE).astype(int)
    for i in range(len(reflect)):
        p0, p1 = (int(xf[i]), int(yf[i])), (int(xf[i + 1]), int(yf[i + 1]))
        colour = (float(rim_amp[i]), float(reflect[i]))
        cv2.line(echo, p0, p1, colour, thickness, cv2.LINE_8, _SHIFT_BITS)
    return echo


def _tissue_texture(texture: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Slowly varying echogenicity (about +-2 dB) on the polar grid, from a coarse normal grid.

    Args:
        texture: coarse grid of standard normals (per subject).
        shape: (n_depth, n_beams) of the polar grid.

    Returns:
        Multiplicative amplitude factor, float32 of ``shape``.
    """
    coarse = (_TEXTURE_NEPERS * texture).astype(np.float32)
    return cv2.exp(cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR))


def _draw_mask(head: _Ellipse, symphysis: _Ellipse, grids: _ScanGrids) -> np.ndarray:
    """Label mask: filled ellipses clipped to the sector; the head wins where they would touch."""
    size = grids.sector.shape[0]
    mask = np.zeros((size, size), dtype=np.uint8)
    _cv_ellipse(mask, symphysis, LABEL_PUBIC_SYMPHYSIS)
    _cv_ellipse(mask, head, LABEL_FETAL_HEAD)
    return cv2.multiply(mask, grids.sector)


# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------
def generate(index: int, config: SyntheticConfig) -> SyntheticSample:
    """Generate one image and its mask, independently of every other index.

    Args:
        index: non-negative sample index; subject ``index // frames_per_subject``, frame
            ``index % frames_per_subject``.
        config: the data-set configuration.

    Returns:
        The sample (uint8 image and mask of shape (size, size), subject id).

    Raises:
        ValueError: when ``index`` is not a non-negative integer or ``config`` is not a
            :class:`SyntheticConfig`.
    """
    _check_int("index", index, minimum=0)
    if not isinstance(config, SyntheticConfig):
        raise ValueError(f"config must be a SyntheticConfig, got {type(config).__name__}")
    subject_index, frame = divmod(int(index), config.frames_per_subject)
    preset = config.preset
    knobs = _resolve_knobs(config)
    geom = _sector_geometry(config.size, preset.sector_angle_deg)
    grids = _scan_conversion_grids(geom)
    plan = _psf_plan(geom, preset.axial_psf, preset.lateral_psf, preset.focal_depth,
                     preset.focal_range)

    subject = _draw_subject(np.random.default_rng([config.seed, subject_index]), geom)
    frame_rng = np.random.default_rng([config.seed, subject_index, frame])
    head, symphysis = _jitter_pose(subject, frame_rng, config.size)
    drawn_tgc_error = float(frame_rng.uniform(-0.1, 0.25))
    ripple = np.stack([frame_rng.uniform(0.5, 2.5, 3), frame_rng.uniform(0, 2 * math.pi, 3)], 1)
    tgc_error = drawn_tgc_error if config.tgc_error is None else float(config.tgc_error)

    canvas = _draw_echogenicity(subject, head, symphysis, geom, knobs)
    mask = _draw_mask(head, symphysis, grids)

    echo, bone = cv2.split(_to_polar(canvas, grids))
    echo *= _tissue_texture(subject.texture, echo.shape)
    rim_samples = _RIM_THICKNESS * config.size * (geom.n_depth - 1) / (geom.r_max - geom.r_min)
    echo *= _shadow_transmission(bone, knobs.shadow_strength, rim_samples)
    envelope = _speckle_envelope(echo, plan, frame_rng)
    log_intensity = cv2.log(cv2.max(envelope, 1e-10))
    log_intensity *= np.float32(2.0)
    if preset.speckle_model == "nakagami":
        log_intensity = _nakagami_log_intensity(log_intensity, echo, plan, preset.nakagami_m)
    gain = _depth_gain_db(grids.depth, preset.attenuation_np, tgc_error, ripple,
                          preset.tgc_ripple_db)
    polar = _log_compress(log_intensity, gain, preset.dynamic_range_db)
    image = _to_cartesian(polar, grids)
    return SyntheticSample(image=image, mask=mask, subject_id=f"syn{subject_index:05d}")


def measure_throughput(config: SyntheticConfig, n_images: int) -> float:
    """Images per second of :func:`generate` in this process (indices ``0 .. n_images - 1``).

    Geometry caches are warmed with one untimed image first. Threading is whatever the caller
    set (for a single-core figure use ``OMP_NUM_THREADS=1`` and ``cv2.setNumThreads(1)``).

    Args:
        config: the configuration to time.
        n_images: how many images to generate (>= 1).

    Returns:
        Throughput in images per second (a positive float).

    Raises:
        ValueError: when ``n_images`` is not a positive integer.
    """
    _check_int("n_images", n_images, minimum=1)
    generate(0, config)
    start = time.perf_counter()
    for index in range(n_images):
        generate(index, config)
    elapsed = max(time.perf_counter() - start, 1e-9)
    rate = n_images / elapsed
    logger.info(
        "synthetic generator: %.1f images/s at %d px (%d images)", rate, config.size, n_images
    )
    return float(rate)
