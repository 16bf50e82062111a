"""The protocol every segmentation network implements.

A :class:`SegmentationNet` is three separable parts:

* ``encoder``: an ``nn.Module`` mapping images ``(N, in_channels, H, W)`` to a list of feature maps,
  shallow to deep; the last one is the bottleneck (``bottleneck_channels`` channels);
* ``decoder``: an ``nn.Module`` mapping that list to the decoder's last feature map
  ``(N, feature_channels, H, W)`` at input resolution;
* ``head``: a 1x1 convolution ``feature_channels -> num_classes``.

``forward(x) == head(decode(encode(x)))``. Because the parts are separable, wrappers can re-use one
encoder with several decoders (:class:`~sonoseg.models.wrappers.DualDecoderNet`): every subclass
implements :meth:`SegmentationNet.make_decoder`, which builds a fresh, independently initialised
decoder with the same architecture.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

from torch import Tensor, nn

__all__ = ["SegmentationNet", "count_parameters"]


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class SegmentationNet(nn.Module, metaclass=ABCMeta):
    """Abstract base of every network in the factory.

    Args:
        in_channels: channels of the input image.
        num_classes: output classes (background included).
        feature_channels: channels of the decoder's last feature map (the head's input).
        bottleneck_channels: channels of the deepest encoder map (``encode(x)[-1]``).

    Subclasses assign ``self.encoder``, ``self.decoder`` (from :meth:`make_decoder`) and ``self.head``
    (from :meth:`make_head`), and set ``input_multiple``: the number H and W must be divisible by.
    """

    input_multiple: int = 16
    encoder: nn.Module
    decoder: nn.Module
    head: nn.Module

    def __init__(self, in_channels: int, num_classes: int, feature_channels: int, bottleneck_channels: int) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.feature_channels = int(feature_channels)
        self.bottleneck_channels = int(bottleneck_channels)

    @abstractmethod
    def make_decoder(self) -> nn.Module:
        """A new decoder (fresh random initialisation) mapping ``encode(x)`` to ``(N, feature_channels, H, W)``."""

    def make_head(self) -> nn.Module:
        """A new 1x1 convolution ``feature_channels -> num_classes``."""
        return nn.Conv2d(self.feature_channels, self.num_classes, kernel_size=1)

    def check_input(self, x: Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``(N, in_channels, H, W)`` with H, W divisible by ``input_multiple``."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects (N, {self.in_channels}, H, W) input, got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % self.input_multiple or w % self.input_multiple:
            raise ValueError(
                f"{type(self).__name__} needs H and W divisible by {self.input_multiple}, got {h}x{w}; "
                "resize or pad the input"
            )

    def encode(self, x: Tensor) -> list[Tensor]:
        """Encoder feature maps, shallow to deep; the last one is the bottleneck."""
        self.check_input(x)
        return list(self.encoder(x))

    def decode(self, features: list[Tensor]) -> Tensor:
        """The decoder's last feature map ``(N, feature_channels, H, W)`` at input resolution."""
        return self.decoder(list(features))

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, num_classes, H, W)``."""
        return self.head(self.decode(self.encode(x)))

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, num_classes={self.num_classes}, "
            f"feature_channels={self.feature_channels}, bottleneck_channels={self.bottleneck_channels}"
        )
