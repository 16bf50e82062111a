"""Information divergence's ``transformer_options``: they reach the transformer and its EMA copy only."""

from __future__ import annotations

import pytest
import torch

from sonoseg.ssl.base import Batch, StepContext, build_method

MODEL = {"name": "unet_small"}
SMALL_SWIN = {"embed_dim": 12, "depths": [1, 1, 1, 1]}


def test_transformer_options_build_the_transformer_and_its_teacher_but_not_the_cnn():
    method = build_method("infodiv", {"transformer_options": {**SMALL_SWIN, "patch_size": 4}}, MODEL, num_classes=3)
    for role in ("transformer", "transformer_teacher"):
        assert method.inner(role).input_multiple == 64  # 16 * patch 4; the default patch 2 needs multiples of 32
    assert type(method.inner("student")).__name__ == "UNeXt"
    default = build_method("infodiv", {"transformer_options": SMALL_SWIN}, MODEL, num_classes=3)
    assert default.inner("transformer").input_multiple == 32


def test_a_patch_4_transformer_trains_on_64_px():
    torch.manual_seed(0)
    method = build_method("infodiv", {"transformer_options": {**SMALL_SWIN, "patch_size": 4}}, MODEL, num_classes=3)
    images = torch.rand(4, 1, 64, 64)
    labelled, unlabelled = Batch(images[:2], torch.randint(0, 3, (2, 64, 64))), Batch(images[2:])
    losses = method.losses(labelled, unlabelled, StepContext(5, 10, torch.Generator().manual_seed(1)))
    assert {"sup", "divergence", "cross", "ict"} <= set(losses)
    losses["total"].backward()
    assert all(p.grad is not None for p in method.networks["transformer"].parameters() if p.requires_grad)


def test_an_unknown_transformer_option_names_the_option():
    with pytest.raises(ValueError, match=r"\['patchsize'\].*swin_unet"):
        build_method("infodiv", {"transformer_options": {"patchsize": 4}}, MODEL, num_classes=3)
