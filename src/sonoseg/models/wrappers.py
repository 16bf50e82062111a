"""Wrappers over any registered network: dual decoders (HDC), an SDM head and a projection head (SimCVD)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sonoseg.models.base import SegmentationNet
from sonoseg.ssl.noise import Perturbation

__all__ = ["DualDecoderNet", "SDMHead", "SDMNet", "with_sdm_head", "ProjectionHead"]


class _Shared(SegmentationNet):
    """A network that re-uses the encoder, decoder and head modules of ``base`` (same parameter names, so
    a plain network's state_dict loads into the wrapper) and builds new decoders the way ``base`` does."""

    def __init__(self, base: SegmentationNet) -> None:
        if not isinstance(base, SegmentationNet):
            raise TypeError(f"expected a SegmentationNet, got {type(base).__name__}")
        super().__init__(base.in_channels, base.num_classes, base.feature_channels, base.bottleneck_channels)
        self.input_multiple = base.input_multiple
        self.base_type = type(base).__name__
        for child_name, child in base.named_children():
            self.add_module(child_name, child)
        self._make_decoder = base.make_decoder  # a bound method: base is kept only for building decoders

    def make_decoder(self) -> nn.Module:
        return self._make_decoder()


class DualDecoderNet(_Shared):
    """One shared encoder, two decoders (``decoder``/``head``: main; ``noisy_decoder``/``noisy_head``: noisy).

    Built from any registered network: its encoder and decoder are re-used and a second decoder and head
    are instantiated with fresh random weights (independent initialisation).

    Args:
        base_name: a registered network name (see :data:`sonoseg.models.NETWORKS`).
        perturbation: applied to every encoder feature map before the noisy decoder (the feature-perturbation
            hook); ``None`` is the identity. An ``nn.Module`` is registered as a submodule (so ``train()``/
            ``eval()`` reach it).
        options: ``in_channels``, ``num_classes``, ``pretrained``, ``pretrained_prefix`` and the network's
            options, as for :func:`~sonoseg.models.build_network`. ``pretrained`` is loaded into the dual
            net, so a single-decoder checkpoint fills the encoder and the main decoder.
    """

    def __init__(self, base_name: str, perturbation: Callable[[Tensor], Tensor] | None = None,
                 **options: Any) -> None:
        from sonoseg.models.factory import build_network

        pretrained: str | Path | None = options.pop("pretrained", None)
        prefix: str | None = options.pop("pretrained_prefix", None)
        super().__init__(build_network(base_name, **options))
        self.base_name = base_name
        self.noisy_decoder = self.make_decoder()
        self.noisy_head = self.make_head()
        self.perturbation = perturbation
        if pretrained is not None:
            from sonoseg.models.pretrained import load_pretrained

            load_pretrained(self, pretrained, prefix=prefix)

    def perturb(self, features: list[Tensor]) -> list[Tensor]:
        """The perturbation applied to each encoder map (identity when ``perturbation`` is None).

        A ``vat`` perturbation gets one adversarial direction for all maps jointly, found through the
        noisy decoder and head (its ε is the norm per sample over every map): as CCT's VAT decoder,
        at the cost of two extra noisy-decoder passes and one backward through it."""
        if self.perturbation is None:
            return list(features)
        if isinstance(self.perturbation, Perturbation) and self.perturbation.name == "vat":
            shapes = [f.shape[1:] for f in features]
            sizes = [f[0].numel() for f in features]

            def unflatten(flat: Tensor) -> list[Tensor]:
                return [part.reshape(-1, *shape) for part, shape in zip(flat.split(sizes, dim=1), shapes)]

            flat = torch.cat([f.flatten(1) for f in features], dim=1)
            noisy_logits = lambda x: self.noisy_head(self.noisy_decoder(unflatten(x)))  # noqa: E731
            return unflatten(self.perturbation(flat, forward_fn=noisy_logits))
        return [self.perturbation(f) for f in features]

    def forward(self, x: Tensor) -> Tensor:
        """Main-decoder logits (inference)."""
        return self.head(self.decode(self.encode(x)))

    def forward_dual(self, x: Tensor, perturb: bool = True) -> tuple[Tensor, Tensor, list[Tensor]]:
        """``(main_logits, noisy_logits, encoder_features)``.

        The noisy decoder sees the perturbed encoder maps when ``perturb`` (clean ones otherwise); the main
        decoder always sees the clean maps, which are also the ones returned."""
        features = self.encode(x)
        main = self.head(self.decoder(features))
        noisy_input = self.perturb(features) if perturb else features
        noisy = self.noisy_head(self.noisy_decoder(noisy_input))
        return main, noisy, features


class SDMHead(nn.Module):
    """1x1 conv on the decoder's last feature map, then tanh: a signed distance map per foreground class
    ``(N, num_foreground, H, W)`` in (-1, 1)."""

    def __init__(self, feature_channels: int, num_foreground: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(feature_channels, num_foreground, kernel_size=1)

    def forward(self, features: Tensor) -> Tensor:
        return torch.tanh(self.conv(features))


class SDMNet(_Shared):
    """A network with a segmentation head and an SDM head on the same decoder feature map.

    ``forward(x)`` gives the logits (inference); ``forward_with_sdm(x)`` gives
    ``(logits, sdm, encoder_features)`` with ``sdm`` of shape ``(N, max(1, num_classes - 1), H, W)``."""

    def __init__(self, net: SegmentationNet) -> None:
        super().__init__(net)
        self.num_foreground = max(1, self.num_classes - 1)
        self.sdm_head = SDMHead(self.feature_channels, self.num_foreground)

    def forward_with_sdm(self, x: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        features = self.encode(x)
        decoded = self.decode(features)
        return self.head(decoded), self.sdm_head(decoded), features


def with_sdm_head(net: SegmentationNet) -> SDMNet:
    """``net`` (its modules, shared, not copied) plus an SDM head: see :class:`SDMNet`."""
    return SDMNet(net)


class ProjectionHead(nn.Module):
    """SimCVD's projection of the boundary-aware input (image and predicted SDM) to patch embeddings.

    A small conv (two 3x3 stride-2 convs with SELU), AlphaDropout, adaptive average pooling to a
    ``patch_grid`` x ``patch_grid`` grid, a 2-layer MLP per patch, L2 normalisation.

    Args:
        in_channels: channels of the input (image channels + foreground SDM channels).
        patch_grid: patches per side; the output has ``patch_grid ** 2`` embeddings per image.
        hidden: conv and MLP width.
        out_dim: embedding size.
        alpha_dropout: AlphaDropout probability (SELU-compatible dropout).

    Returns from ``forward``: ``(N, patch_grid ** 2, out_dim)`` unit vectors.
    """

    def __init__(self, in_channels: int, patch_grid: int = 4, hidden: int = 128, out_dim: int = 64,
                 alpha_dropout: float = 0.1) -> None:
        super().__init__()
        if patch_grid < 1 or in_channels < 1:
            raise ValueError(f"in_channels and patch_grid must be >= 1, got {in_channels}, {patch_grid}")
        self.patch_grid = int(patch_grid)
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden // 2, 3, stride=2, padding=1), nn.SELU(),
            nn.Conv2d(hidden // 2, hidden, 3, stride=2, padding=1), nn.SELU(),
        )
        self.dropout = nn.AlphaDropout(alpha_dropout)
        self.pool = nn.AdaptiveAvgPool2d(self.patch_grid)
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.dropout(self.conv(x)))  # (N, hidden, g, g)
        x = self.mlp(x.flatten(2).transpose(1, 2))  # (N, g*g, out_dim)
        return F.normalize(x, dim=-1)
