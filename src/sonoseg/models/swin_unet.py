"""A Swin-UNet-like transformer (Cao et al., 2021) on MONAI's 2D ``SwinTransformer``.

Encoder: MONAI's ``SwinTransformer`` (``spatial_dims=2``): a patch embedding (``patch_size`` 2, so the
first map is at 1/2), then four stages of shifted-window blocks, each ending in patch merging; the five
returned maps are at 1/2 .. 1/32 with ``embed_dim * (1, 2, 4, 8, 16)`` channels (layer-normalised).

Decoder (symmetric, with skips, as in Swin-UNet): per level, deep to shallow, a *patch expanding*
layer (a linear layer doubling the channels, then a 2x pixel shuffle: half the channels at twice the
resolution, LayerNorm), concatenation with the encoder map of that level, a linear layer back to the
level's width and a stage of MONAI Swin blocks (``BasicLayer``, no downsampling). A final 2x patch
expansion brings the tokens back to full resolution with ``embed_dim`` channels.

Simplifications relative to Swin-UNet: patch size 2 instead of 4 (so H, W need only be multiples of
32 and small ultrasound inputs keep a 1/2 skip), no Swin blocks at the 1/32 bottleneck itself (MONAI's
encoder stage ends in patch merging; the first decoder stage's blocks follow it), and a small default
width (``embed_dim`` 24, about 3.3 M parameters) for CPU training at 64-128 px.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets.swin_unetr import BasicLayer, SwinTransformer, compute_mask, get_window_size
from torch import Tensor, nn

from sonoseg.models.base import SegmentationNet

__all__ = ["SwinUNet", "SwinEncoder", "PatchExpand", "run_swin_stage"]


def run_swin_stage(layer: BasicLayer, x: Tensor) -> Tensor:
    """MONAI ``BasicLayer.forward`` for 2D maps ``(N, C, H, W)``, with ``permute`` instead of einops.

    MONAI's own forward needs the optional ``einops`` package, which this project does not install;
    this is the same computation (shifted-window mask, blocks, optional patch merging)."""
    b, _, h, w = x.shape
    window_size, shift_size = get_window_size((h, w), layer.window_size, layer.shift_size)
    hp = -(-h // window_size[0]) * window_size[0]
    wp = -(-w // window_size[1]) * window_size[1]
    attn_mask = compute_mask([hp, wp], window_size, shift_size, x.device)
    x = x.permute(0, 2, 3, 1)
    for block in layer.blocks:
        x = block(x, attn_mask)
    x = x.reshape(b, h, w, -1)
    if layer.downsample is not None:
        x = layer.downsample(x)
    return x.permute(0, 3, 1, 2).contiguous()


class SwinEncoder(SwinTransformer):
    """MONAI's ``SwinTransformer`` (2D) whose forward runs without einops.

    Returns the layer-normalised maps ``[patch embedding (1/p), stage 1 .. stage 4 (1/(2p) .. 1/(16p))]``."""

    def forward(self, x: Tensor, normalize: bool = True) -> list[Tensor]:  # type: ignore[override]
        def out(t: Tensor) -> Tensor:
            return F.layer_norm(t.permute(0, 2, 3, 1), [t.shape[1]]).permute(0, 3, 1, 2) if normalize else t

        x = self.pos_drop(self.patch_embed(x))
        features = [out(x)]
        for layers in (self.layers1, self.layers2, self.layers3, self.layers4):
            x = run_swin_stage(layers[0], x.contiguous())
            features.append(out(x))
        return features


class PatchExpand(nn.Module):
    """Linear ``dim -> dim * scale**2 / ratio`` then pixel shuffle by ``scale`` and LayerNorm:
    ``(N, dim, H, W) -> (N, dim / ratio, scale H, scale W)``."""

    def __init__(self, dim: int, out_dim: int, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.expand = nn.Linear(dim, out_dim * scale * scale, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.expand(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = F.pixel_shuffle(x, self.scale)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _DecoderStage(nn.Module):
    def __init__(self, deep_dim: int, dim: int, depth: int, heads: int, window: Sequence[int], mlp_ratio: float,
                 drop_path: list[float]) -> None:
        super().__init__()
        self.up = PatchExpand(deep_dim, dim)
        self.fuse = nn.Linear(2 * dim, dim)
        self.blocks = BasicLayer(dim=dim, depth=depth, num_heads=heads, window_size=window, drop_path=drop_path,
                                 mlp_ratio=mlp_ratio, qkv_bias=True, downsample=None) if depth > 0 else None

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = torch.cat([self.up(x), skip], dim=1)
        x = self.fuse(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return run_swin_stage(self.blocks, x.contiguous()) if self.blocks is not None else x


class SwinUNetDecoder(nn.Module):
    def __init__(self, embed_dim: int, depths: Sequence[int], num_heads: Sequence[int], window: Sequence[int],
                 mlp_ratio: float, drop_path_rate: float, patch_size: int) -> None:
        super().__init__()
        dims = [embed_dim * 2**i for i in range(len(depths) + 1)]  # channels of the encoder maps
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        start = 0
        for level in reversed(range(len(depths))):  # 1/16 .. 1/2 with the widths of encoder maps 3 .. 0
            depth = depths[level]
            self.stages.append(_DecoderStage(dims[level + 1], dims[level], depth, num_heads[level], window, mlp_ratio,
                                             rates[start:start + depth]))
            start += depth
        self.final = PatchExpand(embed_dim, embed_dim, scale=patch_size)

    def forward(self, features: list[Tensor]) -> Tensor:
        x = features[-1]
        for stage, skip in zip(self.stages, features[-2::-1]):
            x = stage(x, skip)
        return self.final(x)


class SwinUNet(SegmentationNet):
    """Swin-UNet-like encoder-decoder (see the module docstring).

    Args:
        in_channels: input image channels.
        num_classes: output classes (background included).
        embed_dim: channels after the patch embedding; stage i works at ``embed_dim * 2**i``.
        depths: Swin blocks per encoder stage (four stages); the decoder mirrors them.
        num_heads: attention heads per stage.
        window_size: attention window (clamped by MONAI to the map size on small maps).
        patch_size: patch embedding size (2: the first map is at 1/2; inputs must be multiples of 16 * patch_size).
        mlp_ratio: MLP width over the token width in each Swin block.
        drop_path_rate: stochastic depth, linearly increasing over the blocks (encoder and decoder).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 3, embed_dim: int = 24,
                 depths: Sequence[int] = (2, 2, 2, 2), num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 7,
                 patch_size: int = 2, mlp_ratio: float = 4.0, drop_path_rate: float = 0.1) -> None:
        depths, num_heads = tuple(int(d) for d in depths), tuple(int(h) for h in num_heads)
        if len(depths) != 4 or len(num_heads) != 4:
            raise ValueError(
                f"depths and num_heads need four entries (MONAI's SwinTransformer), got {depths}, {num_heads}"
            )
        for i, heads in enumerate(num_heads):
            if (embed_dim * 2**i) % heads:
                raise ValueError(f"stage {i} width {embed_dim * 2**i} is not divisible by num_heads[{i}]={heads}")
        super().__init__(in_channels, num_classes, feature_channels=embed_dim, bottleneck_channels=embed_dim * 16)
        self.input_multiple = 16 * int(patch_size)
        window = (int(window_size),) * 2
        self.encoder = SwinEncoder(in_chans=in_channels, embed_dim=embed_dim, window_size=window,
                                       patch_size=(int(patch_size),) * 2, depths=depths, num_heads=num_heads,
                                       mlp_ratio=mlp_ratio, qkv_bias=True, drop_path_rate=drop_path_rate,
                                       spatial_dims=2, downsample="merging")
        self.decoder_options = {"embed_dim": int(embed_dim), "depths": depths, "num_heads": num_heads,
                                "window": window, "mlp_ratio": float(mlp_ratio),
                                "drop_path_rate": float(drop_path_rate), "patch_size": int(patch_size)}
        self.decoder = self.make_decoder()
        self.head = self.make_head()

    def make_decoder(self) -> nn.Module:
        return SwinUNetDecoder(**self.decoder_options)
