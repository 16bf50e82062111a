"""DeepLabV3+ (Chen et al., 2018) on a MONAI ResNet-50/101 encoder at output stride 16.

The encoder is MONAI's 2D ``ResNet`` (bottleneck blocks, layers 3-4-6-3 or 3-4-23-3) with its stem
built for ``in_channels`` (1 for ultrasound), no classifier, and the last stage's stride replaced by
dilation 2 (torchvision's ``replace_stride_with_dilation=[False, False, True]``), so the deepest map
is at 1/16 of the input. Its parameter names match torchvision's ResNet (``conv1``, ``bn1``,
``layer1.0.conv1`` ...), so an ImageNet checkpoint on disk loads into ``encoder.`` with
:func:`sonoseg.models.pretrained.load_pretrained` (the RGB stem is summed to one channel).

The decoder holds ASPP (1x1 conv, three 3x3 atrous convs at ``aspp_rates``, image pooling; each
conv-BN-ReLU from MONAI's ``Convolution``; concatenated and projected), the 1x1 reduction of the
low-level (layer1, 1/4) features to 48 channels, two 3x3 fusion convs and bilinear upsampling to the
input size. Putting ASPP in the decoder (as UniMatch's and HDC's DeepLabV3+ do) means a feature
perturbation of the encoder maps reaches ASPP, and each decoder of a dual-decoder net owns one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.nets.resnet import ResNet, ResNetBottleneck
from torch import Tensor, nn

from sonoseg.models.base import SegmentationNet

__all__ = ["DeepLabV3Plus", "ResNetEncoder", "ASPP", "RESNET_LAYERS"]

#: Blocks per stage of each supported encoder.
RESNET_LAYERS: dict[str, list[int]] = {"resnet50": [3, 4, 6, 3], "resnet101": [3, 4, 23, 3]}


class ResNetEncoder(ResNet):
    """MONAI 2D ResNet returning ``[layer1 (1/4), layer2 (1/8), layer3 (1/16), layer4 (1/16, dilated)]``."""

    def __init__(self, depth: str = "resnet50", in_channels: int = 1) -> None:
        super().__init__(ResNetBottleneck, RESNET_LAYERS[depth], [64, 128, 256, 512], spatial_dims=2,
                         n_input_channels=in_channels, conv1_t_size=7, conv1_t_stride=2, shortcut_type="B",
                         feed_forward=False, bias_downsample=False)
        del self.avgpool  # no classifier: feed_forward=False already left fc as None
        # Output stride 16: layer4 keeps the resolution and dilates its 3x3 convs instead.
        first = self.layer4[0]
        first.conv2.stride = (1, 1)
        first.downsample[0].stride = (1, 1)
        for block in list(self.layer4)[1:]:
            block.conv2.dilation = (2, 2)
            block.conv2.padding = (2, 2)
        self.out_channels = [256, 512, 1024, 2048]

    def forward(self, x: Tensor) -> list[Tensor]:  # type: ignore[override]
        x = self.maxpool(self.act(self.bn1(self.conv1(x))))
        features = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            features.append(x)
        return features


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, 3x3 at each rate, image pooling; concat, 1x1 projection, dropout."""

    def __init__(self, in_channels: int, out_channels: int = 256, rates: Sequence[int] = (6, 12, 18),
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [Convolution(2, in_channels, out_channels, kernel_size=1, act="RELU", norm="BATCH", bias=False)]
            + [
                Convolution(2, in_channels, out_channels, kernel_size=3, dilation=int(r), act="RELU", norm="BATCH",
                            bias=False)
                for r in rates
            ]
        )
        self.pooling = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.ReLU(inplace=True)
        )  # no BatchNorm on a 1x1 map: it would fail at batch 1
        self.project = Convolution(2, out_channels * (len(rates) + 2), out_channels, kernel_size=1, act="RELU",
                                   norm="BATCH", bias=False, dropout=dropout or None)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.pooling(x).expand(-1, -1, *x.shape[-2:])
        return self.project(torch.cat([branch(x) for branch in self.branches] + [pooled], dim=1))


class DeepLabV3PlusDecoder(nn.Module):
    """ASPP on the deepest map, fused with the reduced low-level map at 1/4, upsampled to the input size."""

    def __init__(self, low_channels: int, deep_channels: int, aspp_channels: int, aspp_rates: Sequence[int],
                 low_level_channels: int, decoder_channels: int, dropout: float) -> None:
        super().__init__()
        self.aspp = ASPP(deep_channels, aspp_channels, aspp_rates, dropout)
        self.reduce = Convolution(2, low_channels, low_level_channels, kernel_size=1, act="RELU", norm="BATCH",
                                  bias=False)
        self.fuse = nn.Sequential(
            Convolution(2, aspp_channels + low_level_channels, decoder_channels, kernel_size=3, act="RELU",
                        norm="BATCH", bias=False),
            Convolution(2, decoder_channels, decoder_channels, kernel_size=3, act="RELU", norm="BATCH", bias=False),
        )

    def forward(self, features: list[Tensor]) -> Tensor:
        low = features[0]
        x = self.aspp(features[-1])
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        x = self.fuse(torch.cat([x, self.reduce(low)], dim=1))
        # layer1 is at 1/4 of the input, so the input size is 4x the low-level size.
        return F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)


class DeepLabV3Plus(SegmentationNet):
    """DeepLabV3+ with a ResNet encoder at output stride 16.

    Args:
        in_channels: input channels; the ResNet stem is built for them (1 for greyscale ultrasound).
        num_classes: output classes (background included).
        encoder: ``"resnet50"`` or ``"resnet101"``.
        aspp_channels: channels of each ASPP branch and of its output.
        aspp_rates: dilation rates of ASPP's three 3x3 branches (``(6, 12, 18)`` at output stride 16).
        low_level_channels: channels the layer1 skip is reduced to (48 in the paper).
        decoder_channels: channels of the two 3x3 fusion convs (the head's input).
        dropout: dropout after the ASPP projection.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 3, encoder: str = "resnet50",
                 aspp_channels: int = 256, aspp_rates: Sequence[int] = (6, 12, 18), low_level_channels: int = 48,
                 decoder_channels: int = 256, dropout: float = 0.1) -> None:
        if encoder not in RESNET_LAYERS:
            raise ValueError(f"encoder must be one of {sorted(RESNET_LAYERS)}, got {encoder!r}")
        if len(tuple(aspp_rates)) < 1:
            raise ValueError("aspp_rates needs at least one rate")
        super().__init__(in_channels, num_classes, feature_channels=decoder_channels, bottleneck_channels=2048)
        self.encoder_name = encoder
        self.decoder_options = {
            "low_channels": 256, "deep_channels": 2048, "aspp_channels": int(aspp_channels),
            "aspp_rates": tuple(int(r) for r in aspp_rates), "low_level_channels": int(low_level_channels),
            "decoder_channels": int(decoder_channels), "dropout": float(dropout),
        }
        self.encoder = ResNetEncoder(encoder, in_channels)
        self.decoder = self.make_decoder()
        self.head = self.make_head()

    def make_decoder(self) -> nn.Module:
        return DeepLabV3PlusDecoder(**self.decoder_options)
