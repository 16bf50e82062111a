"""A UNeXt-like light CNN (Valanarasu & Patel, MICCAI 2022).

Following the paper's reference model (channels 16-32-128-160-256, about 1.47 M parameters):

* three convolutional encoder stages (3x3 conv, BN, ReLU, 2x max-pool), built from MONAI ``Convolution``;
* two tokenized-MLP stages: an overlapping patch embedding (3x3 conv, stride 2, LayerNorm) followed by a
  shifted-MLP block: LayerNorm, a channel shift along H, a per-token linear layer, a depth-wise 3x3 conv
  (positional information), GELU, a channel shift along W, a linear layer, plus the residual;
* a mirrored decoder: 3x3 conv + BN + ReLU, 2x bilinear upsampling, *addition* of the skip, with
  shifted-MLP blocks at the two tokenized levels; a last 3x3 conv and upsampling to full resolution.

Simplifications: in the decoder, ReLU comes before the bilinear upsampling instead of after it, and the
last 3x3 conv has BatchNorm too (MONAI ``Convolution`` blocks throughout); upsampling goes to the skip's
size (not a fixed factor), so any H, W divisible by 16 works, not only 32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import Tensor, nn

from sonoseg.models.base import SegmentationNet

__all__ = ["UNeXt", "ShiftedMLPBlock", "TokenizedStage"]


def _shift(x: Tensor, shift_size: int, dim: int) -> Tensor:
    """UNeXt's axial shift: split the channels into ``shift_size`` groups and roll group i by i - shift_size//2
    pixels along ``dim`` (2 = H, 3 = W), with zero padding instead of wrap-around."""
    pad = shift_size // 2
    padded = F.pad(x, (pad, pad, pad, pad))
    groups = torch.chunk(padded, shift_size, dim=1)
    shifted = torch.cat([torch.roll(g, s, dims=dim) for g, s in zip(groups, range(-pad, pad + 1))], dim=1)
    return shifted[:, :, pad:pad + x.shape[2], pad:pad + x.shape[3]]


class ShiftedMLPBlock(nn.Module):
    """``x + MLP(LN(x))`` with UNeXt's shifted MLP: shift(H) -> fc1 -> DWConv -> GELU -> shift(W) -> fc2.

    Operates on ``(N, C, H, W)`` maps (tokens are the pixels)."""

    def __init__(self, dim: int, mlp_ratio: float = 1.0, shift_size: int = 5, drop: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.shift_size = shift_size
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        y = _shift(y, self.shift_size, dim=2)
        y = self.fc1(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        y = self.drop(self.act(self.dwconv(y)))
        y = _shift(y, self.shift_size, dim=3)
        y = self.drop(self.fc2(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
        return x + y


class _ChannelsLastNorm(nn.LayerNorm):
    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class TokenizedStage(nn.Module):
    """Overlapping patch embedding (3x3 conv, stride 2, LayerNorm), shifted-MLP blocks, LayerNorm."""

    def __init__(self, in_ch: int, dim: int, depth: int = 1, mlp_ratio: float = 1.0, drop: float = 0.0) -> None:
        super().__init__()
        self.embed = nn.Conv2d(in_ch, dim, 3, stride=2, padding=1)
        self.embed_norm = _ChannelsLastNorm(dim)
        self.blocks = nn.Sequential(*[ShiftedMLPBlock(dim, mlp_ratio, drop=drop) for _ in range(depth)])
        self.norm = _ChannelsLastNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.blocks(self.embed_norm(self.embed(x))))


def _cbr(in_ch: int, out_ch: int) -> Convolution:
    return Convolution(2, in_ch, out_ch, kernel_size=3, act="RELU", norm="BATCH")


class UNeXtEncoder(nn.Module):
    def __init__(self, in_channels: int, channels: Sequence[int], depth: int, mlp_ratio: float, drop: float) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = channels
        self.conv_stages = nn.ModuleList(
            [nn.Sequential(_cbr(i, o), nn.MaxPool2d(2)) for i, o in ((in_channels, c1), (c1, c2), (c2, c3))]
        )
        self.token_stages = nn.ModuleList(
            [TokenizedStage(c3, c4, depth, mlp_ratio, drop), TokenizedStage(c4, c5, depth, mlp_ratio, drop)]
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for stage in (*self.conv_stages, *self.token_stages):
            x = stage(x)
            features.append(x)
        return features  # 1/2, 1/4, 1/8, 1/16, 1/32


class UNeXtDecoder(nn.Module):
    def __init__(self, channels: Sequence[int], depth: int, mlp_ratio: float, drop: float) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = channels
        # deep to shallow: conv-BN-ReLU, upsample to the skip, add it; shifted-MLP blocks at 1/16 and 1/8
        self.convs = nn.ModuleList([_cbr(c5, c4), _cbr(c4, c3), _cbr(c3, c2), _cbr(c2, c1), _cbr(c1, c1)])
        self.token_blocks = nn.ModuleList(
            [
                nn.Sequential(*[ShiftedMLPBlock(c, mlp_ratio, drop=drop) for _ in range(depth)], _ChannelsLastNorm(c))
                for c in (c4, c3)
            ]
        )

    def forward(self, features: list[Tensor]) -> Tensor:
        x = features[-1]
        skips = features[-2::-1]  # 1/16, 1/8, 1/4, 1/2
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(skips):
                x = F.interpolate(x, size=skips[i].shape[-2:], mode="bilinear", align_corners=False) + skips[i]
            else:  # the last stage returns to the input resolution, twice the first skip's
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            if i < len(self.token_blocks):
                x = self.token_blocks[i](x)
        return x


class UNeXt(SegmentationNet):
    """UNeXt-like network (see the module docstring).

    Args:
        in_channels: input image channels.
        num_classes: output classes (background included).
        channels: five stage widths: three conv stages, two tokenized-MLP stages (paper: 16, 32, 128, 160, 256).
        depth: shifted-MLP blocks per tokenized stage (encoder and decoder; paper: 1).
        mlp_ratio: hidden width of the shifted MLP over its input width (paper: 1).
        drop: dropout inside the shifted MLPs.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 3, channels: Sequence[int] = (16, 32, 128, 160, 256),
                 depth: int = 1, mlp_ratio: float = 1.0, drop: float = 0.0) -> None:
        channels = tuple(int(c) for c in channels)
        if len(channels) != 5 or min(channels) < 5:
            raise ValueError(f"channels needs five widths >= 5 (the shift uses 5 channel groups), got {channels}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        super().__init__(in_channels, num_classes, feature_channels=channels[0], bottleneck_channels=channels[-1])
        self.input_multiple = 16
        self.options = {"channels": channels, "depth": int(depth), "mlp_ratio": float(mlp_ratio), "drop": float(drop)}
        self.encoder = UNeXtEncoder(in_channels, **self.options)
        self.decoder = self.make_decoder()
        self.head = self.make_head()

    def make_decoder(self) -> nn.Module:
        return UNeXtDecoder(**self.options)
