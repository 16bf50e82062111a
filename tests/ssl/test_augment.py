"""Batch augmentations."""

from __future__ import annotations

import math

import pytest
import torch

from sonoseg.ssl.augment import cutmix_box, mixup, sample_beta, strong_augment, weak_augment


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def blob_masks() -> torch.Tensor:
    masks = torch.zeros(4, 16, 24, dtype=torch.long)
    masks[:, 3:9, 4:14] = 1
    masks[:, 10:14, 12:20] = 2
    masks[1, 0:2, 0:3] = 255  # an ignore label must survive as it is
    return masks


def test_weak_augment_applies_the_same_geometry_to_image_and_mask() -> None:
    masks = blob_masks()
    images = masks[:, None].float()  # an image equal to its mask
    out_images, out_masks = weak_augment(images, masks, generator=gen(), image_mode="nearest", hflip_prob=0.5, vflip_prob=0.5)
    assert out_masks.dtype == masks.dtype and out_images.shape == images.shape
    assert torch.equal(out_images[:, 0], out_masks.float())  # same grid, same nearest pixels
    assert not torch.equal(out_masks, masks)
    assert set(out_masks.unique().tolist()) <= {0, 1, 2, 255}
    # Bilinear images agree with the nearest-neighbour masks away from the label edges.
    smooth, warped = weak_augment(images, masks, generator=gen())
    assert (torch.isclose(smooth[:, 0], warped.float())).float().mean() > 0.8


def test_weak_augment_flip_only_is_exact() -> None:
    masks = blob_masks()
    images = torch.rand(4, 2, 16, 24, generator=gen(1))
    out, out_masks = weak_augment(images, masks, gen(), hflip_prob=1.0, rotation_deg=0.0, scale_range=(1.0, 1.0))
    assert torch.allclose(out, images.flip(-1), atol=1e-6)
    assert torch.equal(out_masks, masks.flip(-1))


def test_weak_augment_is_seeded_and_takes_no_mask() -> None:
    images = torch.rand(3, 1, 16, 16, generator=gen(1))
    first, none = weak_augment(images, None, generator=gen(5))
    assert none is None
    assert torch.equal(first, weak_augment(images, generator=gen(5))[0])
    assert not torch.equal(first, weak_augment(images, generator=gen(6))[0])


def test_strong_augment_keeps_shape_and_dtype_and_changes_values() -> None:
    images = torch.rand(4, 1, 16, 16, generator=gen(1))
    out = strong_augment(images, generator=gen())
    assert out.shape == images.shape and out.dtype == images.dtype
    assert not torch.equal(out, images)
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, strong_augment(images, generator=gen()))
    assert not torch.equal(out, strong_augment(images, generator=gen(1)))
    assert torch.equal(images, torch.rand(4, 1, 16, 16, generator=gen(1)))  # the input is untouched


def test_cutmix_box() -> None:
    box = cutmix_box((64, 1, 20, 30), generator=gen(), p=1.0)
    assert box.shape == (64, 20, 30) and box.dtype == torch.bool
    area = box.float().mean(dim=(1, 2))
    assert torch.all(area > 0) and torch.all(area <= 0.4 + 1e-6)
    rows, cols = box.any(2), box.any(1)
    assert torch.equal(box, rows[:, :, None] & cols[:, None, :])  # one axis-aligned rectangle each
    assert not cutmix_box((8, 20, 30), generator=gen(), p=0.0).any()
    assert torch.equal(box, cutmix_box((64, 20, 30), generator=gen(), p=1.0))


def test_mixup_and_sample_beta() -> None:
    a, b = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    assert torch.allclose(mixup(a, b, 0.25), torch.full_like(a, 0.25))
    mixed = mixup(a, b, torch.tensor([0.1, 0.9]))
    assert mixed[0].unique().item() == pytest.approx(0.1) and mixed[1].unique().item() == pytest.approx(0.9)
    draws = [sample_beta(0.5, gen(i)) for i in range(400)]
    assert all(0.0 <= d <= 1.0 for d in draws)
    assert sample_beta(0.5, gen(3)) == draws[3]
    # Beta(1/2, 1/2) is the arcsine law: P(lam < 0.1) = (2/pi) asin(sqrt(0.1)) = 0.205.
    share = sum(d < 0.1 for d in draws) / len(draws)
    assert share == pytest.approx(2 / math.pi * math.asin(math.sqrt(0.1)), abs=0.06)


def test_weak_augment_rotation_is_rigid_on_non_square_images() -> None:
    # A disk in a 32 x 64 frame stays a disk of the same size: a rotation done in normalised
    # coordinates would shear it into an ellipse.
    rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(64.0), indexing="ij")
    disk = (((rows - 15.5) ** 2 + (cols - 31.5) ** 2) <= 8.0**2).long()[None].repeat(8, 1, 1)
    _, out = weak_augment(disk[:, None].float(), disk, gen(), hflip_prob=0.0, rotation_deg=15.0, scale_range=(1.0, 1.0))
    assert torch.all((out.sum(dim=(1, 2)) - disk.sum(dim=(1, 2))).abs() <= 8)
    heights, widths = out.any(2).sum(1), out.any(1).sum(1)
    assert torch.all((heights - widths).abs() <= 1) and torch.all((heights - 17).abs() <= 1)


def test_strong_augment_blur_and_cutout_pieces() -> None:
    only = dict(colour_prob=0.0, noise_prob=0.0, blur_prob=0.0, cutout_prob=0.0)
    images = torch.rand(2, 1, 12, 12, generator=gen(1))
    assert torch.equal(strong_augment(images, gen(), **only), images)  # every piece off: unchanged
    impulse = torch.zeros(2, 1, 15, 15)
    impulse[:, :, 7, 7] = 1.0
    blurred = strong_augment(impulse, gen(), **{**only, "blur_prob": 1.0, "blur_sigma": (1.0, 1.5)})
    assert torch.allclose(blurred.sum(dim=(1, 2, 3)), torch.ones(2), atol=1e-5)  # mass kept, spread out
    assert torch.all(blurred[:, 0, 7, 7] < 0.2) and torch.all(blurred[:, 0, 7, 8] > 0)
    cut = strong_augment(torch.ones(3, 1, 12, 12), gen(), **{**only, "cutout_prob": 1.0}, cutout_fill=0.0)
    box = cut[:, 0] == 0
    assert torch.all(box | (cut[:, 0] == 1)) and torch.all(box.sum(dim=(1, 2)) > 0)  # one filled box each
    assert torch.equal(box, box.any(2)[:, :, None] & box.any(1)[:, None, :])
