"""The network registry and ``build_network``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sonoseg.models.base import SegmentationNet
from sonoseg.models.deeplab import DeepLabV3Plus
from sonoseg.models.swin_unet import SwinUNet
from sonoseg.models.unet import UNet, unet_small
from sonoseg.models.unext import UNeXt

__all__ = ["NETWORKS", "build_network", "network_options"]

#: Name -> builder ``(in_channels, num_classes, **options) -> SegmentationNet``.
NETWORKS: dict[str, Callable[..., SegmentationNet]] = {
    "unet_small": unet_small,  # the CPU default, ~0.49 M parameters
    "unet": UNet,
    "deeplabv3plus": DeepLabV3Plus,  # encoder="resnet50" | "resnet101"
    "unext": UNeXt,  # ~1.47 M parameters
    "swin_unet": SwinUNet,  # ~3.3 M parameters by default
}

_FIXED = ("in_channels", "num_classes")


def network_options(name: str) -> dict[str, Any]:
    """The options a network accepts besides ``in_channels``/``num_classes``, with their defaults."""
    builder = _builder(name)
    return {
        key: param.default
        for key, param in inspect.signature(builder).parameters.items()
        if key not in _FIXED and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)
    }


def _builder(name: str) -> Callable[..., SegmentationNet]:
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; valid names: {', '.join(sorted(NETWORKS))}")
    return NETWORKS[name]


def build_network(name: str, in_channels: int = 1, num_classes: int = 3, *, pretrained: str | Path | None = None,
                  pretrained_prefix: str | None = None, **options: Any) -> SegmentationNet:
    """Build a registered network.

    Args:
        name: a key of :data:`NETWORKS`.
        in_channels: input image channels.
        num_classes: output classes (background included).
        pretrained: a local state_dict file loaded with :func:`~sonoseg.models.pretrained.load_pretrained`
            (never downloaded); ``None`` keeps the random initialisation.
        pretrained_prefix: load only parameters under this prefix (e.g. ``"encoder."``).
        options: the network's own options (see :func:`network_options`).

    Raises:
        ValueError: unknown ``name`` or option (the message lists the valid ones), or an invalid option value.
        FileNotFoundError: ``pretrained`` names a missing file.
    """
    valid = network_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for network {name!r}; valid options: "
            f"{', '.join(sorted(valid)) or '(none)'}, plus pretrained and pretrained_prefix"
        )
    net = _builder(name)(in_channels=in_channels, num_classes=num_classes, **options)
    if pretrained is not None:
        from sonoseg.models.pretrained import load_pretrained

        load_pretrained(net, pretrained, prefix=pretrained_prefix)
    return net
