"""Co-training's mutual terms: the Dice term's soft or hard target, and what each does to a small structure
that both models already agree on."""

from __future__ import annotations

import pytest
import torch

from sonoseg.ssl.base import Batch, StepContext, build_method

MODEL = {"name": "unet_small"}


def cotrain(**settings: object):
    torch.manual_seed(0)
    return build_method("cotrain", settings, MODEL, num_classes=3)


def test_the_hard_dice_target_is_the_peers_argmax_one_hot_and_the_soft_one_its_map():
    peer = torch.tensor([[0.2, 0.6, 0.1], [0.7, 0.3, 0.2], [0.1, 0.1, 0.7]]).T.reshape(1, 3, 1, 3).requires_grad_()
    hard = cotrain(dice_target="hard").dice_target(peer)
    # pixels' argmaxes: class 1, class 0, class 2
    assert torch.equal(hard, torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).T.reshape(1, 3, 1, 3))
    soft = cotrain().dice_target(peer)
    assert torch.equal(soft, peer) and not soft.requires_grad


def test_an_unknown_dice_target_names_the_setting():
    with pytest.raises(ValueError, match=r"training\.cotrain\.dice_target is 'sharp': expected one of soft, hard"):
        cotrain(dice_target="sharp")


def test_the_hard_target_changes_the_dice_term_only():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, 1, 32, 32, generator=generator)
    labelled = Batch(images[:2], torch.randint(0, 3, (2, 32, 32), generator=generator))

    def losses(dice_target: str) -> dict[str, torch.Tensor]:
        context = StepContext(5, 10, torch.Generator().manual_seed(1), lr_scale=0.5)  # after the warm-up
        return cotrain(dice_target=dice_target).losses(labelled, Batch(images[2:]), context)

    soft, hard = losses("soft"), losses("hard")
    assert torch.equal(soft["sup"], hard["sup"]) and torch.equal(soft["kl"], hard["kl"])
    assert not torch.isclose(soft["dice"], hard["dice"])


def small_disk_area_after_mutual_training(dice_target: str, steps: int = 60) -> tuple[int, int]:
    """Two identical free logit maps (background 0; a disk of radius 3 px with a 2-px edge ramp) trained on
    each other's predictions: the disk's argmax area before and after."""
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    disk = (3.0 - torch.hypot(yy - 16, xx - 16)) / 2.0
    start = torch.stack([torch.zeros(32, 32), disk, torch.full((32, 32), -10.0)])[None]
    a, b = start.clone().requires_grad_(), start.clone().requires_grad_()
    method = cotrain(dice_target=dice_target)
    optimizer = torch.optim.Adam([a, b], lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        sum(method.mutual_terms(a, b)).backward()
        optimizer.step()
    return int((start.argmax(1) == 1).sum()), int((a.argmax(1) == 1).sum())


def test_a_soft_dice_target_widens_a_small_structure_both_models_agree_on_and_a_hard_one_keeps_it():
    before, after_soft = small_disk_area_after_mutual_training("soft")
    assert after_soft > 1.2 * before  # pixels the peer gives under 0.5 are pulled in
    assert small_disk_area_after_mutual_training("hard") == (before, before)
