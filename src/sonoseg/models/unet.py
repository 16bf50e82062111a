"""U-Net (Ronneberger et al., 2015) from MONAI blocks, and the small CPU default ``unet_small``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution, ResidualUnit, UpSample
from torch import Tensor, nn

from sonoseg.models.base import SegmentationNet

__all__ = ["UNet", "unet_small", "UNET_SMALL_CHANNELS"]

#: Channels of ``unet_small`` per level (about 0.49 M parameters with 1 input channel, 3 classes).
UNET_SMALL_CHANNELS: tuple[int, ...] = (8, 16, 32, 64, 128)

_NORMS = {"batch": "BATCH", "instance": ("INSTANCE", {"affine": True})}


def _norm(name: str) -> str | tuple:
    if name not in _NORMS:
        raise ValueError(f"norm must be one of {sorted(_NORMS)}, got {name!r}")
    return _NORMS[name]


def _conv_block(in_ch: int, out_ch: int, norm: str, dropout: float, residual: bool) -> nn.Module:
    """Two 3x3 conv-norm-LeakyReLU layers (dropout between them), or a MONAI residual unit of two."""
    if residual:
        return ResidualUnit(2, in_ch, out_ch, strides=1, kernel_size=3, subunits=2, act="LEAKYRELU",
                            norm=_norm(norm), dropout=dropout or None)
    return nn.Sequential(
        Convolution(2, in_ch, out_ch, kernel_size=3, act="LEAKYRELU", norm=_norm(norm), dropout=dropout or None),
        Convolution(2, out_ch, out_ch, kernel_size=3, act="LEAKYRELU", norm=_norm(norm)),
    )


class UNetEncoder(nn.Module):
    """Level 0 at full resolution, then (max-pool, conv block) per level; returns every level's output."""

    def __init__(self, in_channels: int, channels: Sequence[int], dropout: Sequence[float], norm: str,
                 residual: bool) -> None:
        super().__init__()
        self.levels = nn.ModuleList()
        previous = in_channels
        for level, (ch, p) in enumerate(zip(channels, dropout, strict=True)):
            block = _conv_block(previous, ch, norm, p, residual)
            self.levels.append(block if level == 0 else nn.Sequential(nn.MaxPool2d(2), block))
            previous = ch

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for level in self.levels:
            x = level(x)
            features.append(x)
        return features


class UNetDecoder(nn.Module):
    """Per level, deep to shallow: 2x transposed-conv upsampling, concatenation with the skip, conv block."""

    def __init__(self, channels: Sequence[int], norm: str, residual: bool) -> None:
        super().__init__()
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for deep, shallow in zip(channels[:0:-1], channels[-2::-1]):
            self.ups.append(UpSample(2, deep, shallow, scale_factor=2, mode="deconv"))
            self.blocks.append(_conv_block(2 * shallow, shallow, norm, 0.0, residual))

    def forward(self, features: list[Tensor]) -> Tensor:
        x = features[-1]
        for up, block, skip in zip(self.ups, self.blocks, features[-2::-1]):
            x = block(torch.cat([skip, up(x)], dim=1))
        return x


class UNet(SegmentationNet):
    """A 2D U-Net.

    Args:
        in_channels: input image channels.
        num_classes: output classes (background included).
        channels: feature channels per level, shallow to deep; ``len(channels) - 1`` 2x downsamplings,
            so H and W must be divisible by ``2 ** (len(channels) - 1)``.
        dropout: dropout probability in each encoder level's block (one float for all levels, or one per
            level). SSL4MIS's UNet uses ``(0.05, 0.1, 0.2, 0.3, 0.5)``.
        norm: ``"batch"`` or ``"instance"`` (affine) normalisation.
        residual: use MONAI ``ResidualUnit`` blocks instead of plain double convolutions.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 3, channels: Sequence[int] = (16, 32, 64, 128, 256),
                 dropout: float | Sequence[float] = 0.0, norm: str = "batch", residual: bool = False) -> None:
        channels = tuple(int(c) for c in channels)
        if len(channels) < 2 or min(channels) < 1:
            raise ValueError(f"channels needs at least two positive entries, got {channels}")
        dropout = (float(dropout),) * len(channels) if isinstance(dropout, (int, float)) else tuple(map(float, dropout))
        if len(dropout) != len(channels) or not all(0.0 <= p < 1.0 for p in dropout):
            raise ValueError(f"dropout must be a float in [0, 1) or one per level ({len(channels)}), got {dropout}")
        _norm(norm)
        super().__init__(in_channels, num_classes, feature_channels=channels[0], bottleneck_channels=channels[-1])
        self.input_multiple = 2 ** (len(channels) - 1)
        self.channels, self.dropout, self.norm, self.residual = channels, dropout, norm, bool(residual)
        self.encoder = UNetEncoder(in_channels, channels, dropout, norm, self.residual)
        self.decoder = self.make_decoder()
        self.head = self.make_head()

    def make_decoder(self) -> nn.Module:
        return UNetDecoder(self.channels, self.norm, self.residual)


def unet_small(in_channels: int = 1, num_classes: int = 3, dropout: float | Sequence[float] = 0.0,
               norm: str = "batch") -> UNet:
    """The CPU default: a 5-level U-Net with channels ``UNET_SMALL_CHANNELS`` (about 0.49 M parameters)."""
    return UNet(in_channels, num_classes, channels=UNET_SMALL_CHANNELS, dropout=dropout, norm=norm)
