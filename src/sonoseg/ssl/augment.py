"""Batch augmentations on tensors, on whatever device the tensors are on.

Images are ``(N, C, H, W)`` floats in ``[0, 1]`` (``training.data.normalise_image``); masks are
``(N, H, W)`` integer labels. Every random number comes from the optional ``torch.Generator``
(drawn on its device, then moved), so a seeded generator gives the same augmentation on CPU and GPU.
Per-sample parameters are drawn as one tensor and applied batch-wise: there are no Python loops over
samples or pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from sonoseg.ssl.noise import _normal, _uniform

__all__ = ["cutmix_box", "mixup", "sample_beta", "strong_augment", "weak_augment"]


def _check_images(images: Tensor) -> None:
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"images must be a floating (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}")


def weak_augment(
    images: Tensor,
    masks: Tensor | None = None,
    generator: torch.Generator | None = None,
    *,
    hflip_prob: float = 0.5,
    vflip_prob: float = 0.0,
    rotation_deg: float = 15.0,
    scale_range: tuple[float, float] = (0.9, 1.1),
    image_mode: str = "bilinear",
) -> tuple[Tensor, Tensor | None]:
    """Random flips and a small affine transform, the same geometry for images and their masks.

    Per sample: a horizontal flip with ``hflip_prob``, a vertical flip with ``vflip_prob``, a
    rotation by ``U(-rotation_deg, rotation_deg)`` degrees about the centre and a zoom by
    ``U(scale_range)`` (> 1 zooms in). All of it is one affine matrix per sample, applied with
    ``affine_grid``/``grid_sample`` (``align_corners=False``): images with ``image_mode``, masks
    with nearest neighbour on the same grid. Pixels that come from outside the frame are 0 in
    both (black, background). The rotation is a true rotation in pixel space for non-square images.

    Vertical flips are off by default: the ultrasound probe sits at the top of the frame, and an
    upside-down fan is not an image the network will ever see.

    Args:
        images: ``(N, C, H, W)`` floating images.
        masks: ``(N, H, W)`` integer labels (any values, e.g. an ignore label, survive unchanged), or None.
        generator: the random source (optional).
        hflip_prob: probability of a left-right flip.
        vflip_prob: probability of an up-down flip.
        rotation_deg: the largest rotation in degrees (0 disables rotation).
        scale_range: ``(low, high)`` zoom factors, both > 0 (``(1, 1)`` disables zoom).
        image_mode: ``grid_sample`` mode for images: ``bilinear`` or ``nearest``.

    Returns:
        ``(images, masks)`` with the input shapes, dtypes and device; ``masks`` is None when none were given.

    Raises:
        ValueError: for malformed inputs or options.
    """
    _check_images(images)
    n, _, h, w = images.shape
    if masks is not None and (masks.shape != (n, h, w) or masks.is_floating_point()):
        raise ValueError(f"masks must be integer (N, H, W) = {(n, h, w)}, got {masks.dtype} {tuple(masks.shape)}")
    low, high = (float(v) for v in scale_range)
    if not 0 < low <= high:
        raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}")
    if image_mode not in ("bilinear", "nearest"):
        raise ValueError(f"image_mode must be 'bilinear' or 'nearest', got {image_mode!r}")

    draws = _uniform((n, 4), images.new_empty(0, dtype=torch.float32), generator)
    hflip = torch.where(draws[:, 0] < hflip_prob, -1.0, 1.0)
    vflip = torch.where(draws[:, 1] < vflip_prob, -1.0, 1.0)
    angle = (draws[:, 2] * 2.0 - 1.0) * math.radians(rotation_deg)
    scale = low + draws[:, 3] * (high - low)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # Output -> input in normalised coordinates: D^-1 R D / scale, D = diag(W, H), then flips of the output.
    theta = torch.zeros(n, 2, 3, dtype=torch.float32, device=images.device)
    theta[:, 0, 0] = cos * hflip
    theta[:, 0, 1] = -sin * (h / w) * vflip
    theta[:, 1, 0] = sin * (w / h) * hflip
    theta[:, 1, 1] = cos * vflip
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    out = F.grid_sample(images.float(), grid, mode=image_mode, padding_mode="zeros", align_corners=False)
    out = out.to(images.dtype)
    if masks is None:
        return out, None
    warped = F.grid_sample(masks[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out, warped[:, 0].round().to(masks.dtype)


def _gaussian_blur(images: Tensor, sigma: Tensor, radius: int) -> Tensor:
    """Separable Gaussian blur with one ``sigma`` per sample (reflect padding). The kernel radius is
    cut to ``size - 1`` along a short axis (and renormalised)."""
    n, c, h, w = images.shape
    flat = images.reshape(1, n * c, h, w)
    for axis, size in ((3, w), (2, h)):
        r = min(radius, size - 1)
        if r < 1:
            continue
        offsets = torch.arange(-r, r + 1, device=images.device, dtype=images.dtype)
        kernel = torch.exp(-0.5 * (offsets[None] / sigma[:, None]) ** 2)
        kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, dim=0)  # (N*C, K)
        if axis == 3:
            flat = F.conv2d(F.pad(flat, (r, r, 0, 0), mode="reflect"), kernel.view(n * c, 1, 1, -1), groups=n * c)
        else:
            flat = F.conv2d(F.pad(flat, (0, 0, r, r), mode="reflect"), kernel.view(n * c, 1, -1, 1), groups=n * c)
    return flat.view(n, c, h, w)


def strong_augment(
    images: Tensor,
    generator: torch.Generator | None = None,
    *,
    colour_prob: float = 0.8,
    brightness: float = 0.2,
    contrast: tuple[float, float] = (0.7, 1.3),
    gamma: tuple[float, float] = (0.7, 1.5),
    blur_prob: float = 0.5,
    blur_sigma: tuple[float, float] = (0.1, 2.0),
    noise_prob: float = 0.5,
    noise_sigma: tuple[float, float] = (0.0, 0.05),
    cutout_prob: float = 0.5,
    cutout_fill: float = 0.0,
) -> Tensor:
    """Photometric strong view plus CutOut; no geometry, so a pseudo-label of the input still aligns.

    Per sample, in this order: brightness ``x + U(-brightness, brightness)``, contrast about the
    image mean by ``U(contrast)``, gamma ``x ** U(gamma)`` (each with ``colour_prob``; values are
    clamped to [0, 1] before the gamma), a Gaussian blur with ``sigma ~ U(blur_sigma)``
    (``blur_prob``), Gaussian noise with ``std ~ U(noise_sigma)`` (``noise_prob``), a clamp to
    [0, 1], then one CutOut box (:func:`cutmix_box`, ``cutout_prob``) filled with ``cutout_fill``.
    As in FixMatch, pixels under the box keep their pseudo-label.

    Args:
        images: ``(N, C, H, W)`` floating images in [0, 1].
        generator: the random source (optional).
        colour_prob: probability of each of brightness, contrast and gamma.
        brightness: the largest additive brightness shift.
        contrast: ``(low, high)`` contrast factors.
        gamma: ``(low, high)`` gamma exponents.
        blur_prob: probability of the blur.
        blur_sigma: ``(low, high)`` blur standard deviations in pixels (``high`` sets the kernel size).
        noise_prob: probability of the noise.
        noise_sigma: ``(low, high)`` noise standard deviations.
        cutout_prob: probability of a CutOut box.
        cutout_fill: the value written into the box.

    Returns:
        A new tensor with the shape, dtype and device of ``images``.

    Raises:
        ValueError: for images that are not floating ``(N, C, H, W)``.
    """
    _check_images(images)
    n, c, h, w = images.shape
    dtype = images.dtype
    x = images.float()
    u = _uniform((n, 12), x, generator)
    per_sample = lambda v: v.view(n, 1, 1, 1)  # noqa: E731

    applied = per_sample((u[:, 0] < colour_prob).float())
    x = x + applied * per_sample((u[:, 1] * 2.0 - 1.0) * brightness)
    applied = per_sample((u[:, 2] < colour_prob).float())
    factor = per_sample(contrast[0] + u[:, 3] * (contrast[1] - contrast[0]))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = x + applied * ((x - mean) * factor + mean - x)
    x = x.clamp(0.0, 1.0)
    applied = per_sample((u[:, 4] < colour_prob).float())
    exponent = per_sample(gamma[0] + u[:, 5] * (gamma[1] - gamma[0]))
    x = x + applied * (x.clamp_min(1e-12) ** exponent - x)

    if blur_prob > 0 and blur_sigma[1] > 0:
        sigma = (blur_sigma[0] + u[:, 7] * (blur_sigma[1] - blur_sigma[0])).clamp_min(1e-3)
        radius = max(1, math.ceil(3.0 * blur_sigma[1]))
        applied = per_sample((u[:, 6] < blur_prob).float())
        x = x + applied * (_gaussian_blur(x, sigma, radius) - x)

    applied = per_sample((u[:, 8] < noise_prob).float())
    std = per_sample(noise_sigma[0] + u[:, 9] * (noise_sigma[1] - noise_sigma[0]))
    x = x + applied * std * _normal(x.shape, x, generator)
    x = x.clamp(0.0, 1.0)

    box = cutmix_box((n, h, w), generator, p=cutout_prob, device=x.device)
    x = torch.where(box[:, None], torch.as_tensor(cutout_fill, dtype=x.dtype, device=x.device), x)
    return x.to(dtype)


def cutmix_box(
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    *,
    p: float = 0.5,
    area: tuple[float, float] = (0.02, 0.4),
    ratio: tuple[float, float] = (0.3, 1 / 0.3),
    device: torch.device | str | None = None,
) -> Tensor:
    """One random box per sample (UniMatch's ``obtain_cutmix_box``), as a boolean mask.

    With probability ``p`` a sample gets a box of ``U(area)`` times the image area and aspect ratio
    (height / width) ``U(ratio)``, clipped to the image and placed uniformly inside it; otherwise its
    mask is all False. Use it for CutOut (fill the box) or CutMix (``torch.where(box, b, a)`` on
    images, masks and pseudo-labels alike).

    Args:
        shape: ``(N, H, W)`` or ``(N, C, H, W)``; only N, H and W are used.
        generator: the random source (optional).
        p: probability that a sample gets a box.
        area: ``(low, high)`` box area as a fraction of ``H * W``.
        ratio: ``(low, high)`` box aspect ratios (height / width).
        device: where the mask is built (default: the CPU).

    Returns:
        A ``(N, H, W)`` bool tensor, True inside the box.

    Raises:
        ValueError: for a shape with fewer than 3 dimensions.
    """
    if len(shape) < 3:
        raise ValueError(f"shape must be (N, H, W) or (N, C, H, W), got {tuple(shape)}")
    n, h, w = int(shape[0]), int(shape[-2]), int(shape[-1])
    like = torch.empty(0, device=device)
    u = _uniform((n, 5), like, generator)
    size = (area[0] + u[:, 0] * (area[1] - area[0])) * h * w
    aspect = ratio[0] + u[:, 1] * (ratio[1] - ratio[0])
    box_h = torch.sqrt(size * aspect).floor().clamp(1, h)
    box_w = torch.sqrt(size / aspect).floor().clamp(1, w)
    top = (u[:, 2] * (h - box_h + 1)).floor()
    left = (u[:, 3] * (w - box_w + 1)).floor()
    present = u[:, 4] < p
    rows = torch.arange(h, device=like.device, dtype=torch.float32)[None, :, None]
    cols = torch.arange(w, device=like.device, dtype=torch.float32)[None, None, :]
    inside_rows = (rows >= top.view(n, 1, 1)) & (rows < (top + box_h).view(n, 1, 1))
    inside_cols = (cols >= left.view(n, 1, 1)) & (cols < (left + box_w).view(n, 1, 1))
    return inside_rows & inside_cols & present.view(n, 1, 1)


def mixup(a: Tensor, b: Tensor, lam: float | Tensor) -> Tensor:
    """``lam * a + (1 - lam) * b`` (mixup / ICT), for images or probability maps alike.

    Args:
        a: the first batch ``(N, ...)``.
        b: the second batch, same shape as ``a``.
        lam: the weight of ``a``: a float, a 0-d tensor, or one weight per sample ``(N,)``.

    Raises:
        ValueError: when the shapes differ or a per-sample ``lam`` does not have N entries.
    """
    if a.shape != b.shape:
        raise ValueError(f"mixup needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    if isinstance(lam, Tensor) and lam.ndim > 0:
        if lam.shape != (a.shape[0],):
            raise ValueError(f"a per-sample lam must have shape ({a.shape[0]},), got {tuple(lam.shape)}")
        lam = lam.to(device=a.device, dtype=a.dtype).view(-1, *([1] * (a.ndim - 1)))
    return lam * a + (1 - lam) * b


def sample_beta(alpha: float = 0.5, generator: torch.Generator | None = None) -> float:
    """One draw from ``Beta(alpha, alpha)`` (mixup's weight; 0.5 for ICT), reproducible from ``generator``.

    It inverts the Beta CDF (``scipy.special.betaincinv``) at a uniform number from ``generator``,
    because ``torch.distributions.Beta`` cannot take a generator.

    Args:
        alpha: both shape parameters, > 0.
        generator: the random source (optional; a CPU generator is expected).

    Raises:
        ValueError: for ``alpha <= 0``.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    from scipy.special import betaincinv

    u = float(torch.rand((), generator=generator, device=generator.device if generator is not None else "cpu"))
    return float(betaincinv(alpha, alpha, u))
