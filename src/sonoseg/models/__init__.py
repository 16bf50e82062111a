"""The network factory: UNet, DeepLabV3+/ResNet, UNeXt-like, Swin-UNet-like, and wrappers.

Library code (no Kedro). Every network is a :class:`SegmentationNet`: separable ``encoder`` (a list of
feature maps, shallow to deep), ``decoder`` (the last feature map at input resolution) and ``head``.

>>> net = build_network("unet_small", in_channels=1, num_classes=3)
>>> dual = DualDecoderNet("unet_small", perturbation=None)
"""

from sonoseg.models.base import SegmentationNet, count_parameters
from sonoseg.models.deeplab import DeepLabV3Plus
from sonoseg.models.factory import NETWORKS, build_network, network_options
from sonoseg.models.pretrained import load_pretrained, read_state_dict
from sonoseg.models.swin_unet import SwinUNet
from sonoseg.models.unet import UNet, unet_small
from sonoseg.models.unext import UNeXt
from sonoseg.models.wrappers import DualDecoderNet, ProjectionHead, SDMHead, SDMNet, with_sdm_head

__all__ = [
    "NETWORKS",
    "DeepLabV3Plus",
    "DualDecoderNet",
    "ProjectionHead",
    "SDMHead",
    "SDMNet",
    "SegmentationNet",
    "SwinUNet",
    "UNeXt",
    "UNet",
    "build_network",
    "count_parameters",
    "load_pretrained",
    "network_options",
    "read_state_dict",
    "unet_small",
    "with_sdm_head",
]
