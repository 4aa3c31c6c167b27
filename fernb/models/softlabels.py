"""The networks of Gan, Chen and Xu's soft-label ensemble (PRL 2019, Sec. 3.1).

Every base classifier is a VGG16 with a C-way last layer
(:func:`fernb.models.backbones.vgg16`); :class:`Network` puts VGG-Face's input preparation
(:class:`fernb.models.backbones.VGGFaceInput`) in front of it when it starts from VGG-Face
weights. For CPU runs a base classifier can train only VGG16's top: :class:`VGGBase` is the
input preparation and the first four convolution blocks of a trained network (frozen, its
outputs computed once), :class:`VGGTop` the fifth block, pooling and the three fully
connected layers on top of them.
"""
from __future__ import annotations

import torch
from torch import nn

from fernb.models.backbones import Backbone, VGGFaceInput


class Network(nn.Module):
    """A VGG16 (``.backbone``) with VGG-Face's input preparation in front when it is loaded
    with VGG-Face weights; output (B, 1, C)."""

    def __init__(self, backbone: Backbone, *, face_input: bool) -> None:
        super().__init__()
        self.prepare = VGGFaceInput() if face_input else nn.Identity()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.prepare(x))  # (B, 1, C)


def _pools(backbone: Backbone) -> list[int]:
    return [i for i, layer in enumerate(backbone.net.features) if isinstance(layer, nn.MaxPool2d)]


class VGGTop(nn.Module):
    """VGG16's fifth convolution block, pooling and three fully connected layers, applied to
    the fourth block's output (``finetune="top"``); output (B, 1, C)."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        cut = _pools(backbone)[3] + 1
        self.block5 = backbone.net.features[cut:]
        self.avgpool = backbone.net.avgpool
        self.classifier = backbone.net.classifier

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.block5(z)), 1)).unsqueeze(1)


class VGGBase(nn.Module):
    """The input preparation and first four convolution blocks of a trained network."""

    def __init__(self, net: Network) -> None:
        super().__init__()
        cut = _pools(net.backbone)[3] + 1
        self.prepare = net.prepare
        self.blocks = net.backbone.net.features[:cut]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.prepare(x))  # (B, 8 * 64 * width, H / 16, W / 16)
