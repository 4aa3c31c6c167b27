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
from fernb.models.contract import member_index


class Network(nn.Module):
    """A VGG16 (``.backbone``) with VGG-Face's input preparation in front when it is loaded
    with VGG-Face weights; output (B, 1, C)."""

    def __init__(self, backbone: Backbone, *, face_input: bool) -> None:
        super().__init__()
        self.prepare = VGGFaceInput() if face_input else nn.Identity()
        self.backbone = backbone

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """VGG16's last feature map (B, C', H', W') of the prepared input."""
        return self.backbone.forward_features(self.prepare(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Pooling and the three fully connected layers: logits (B, 1, C)."""
        return self.backbone.forward_head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))  # (B, 1, C)

    def cam_layer(self, member: int = 0, image_size: int | None = None) -> nn.Module:
        """VGG16's last max-pool (:meth:`Backbone.cam_layer`)."""
        return self.backbone.cam_layer(member, image_size)


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

    def forward_features(self, z: torch.Tensor) -> torch.Tensor:
        """The fifth block's output (B, C', H', W')."""
        return self.block5(z)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Pooling and the three fully connected layers: logits (B, 1, C)."""
        return self.classifier(torch.flatten(self.avgpool(features), 1)).unsqueeze(1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(z))  # (B, 1, C)

    def cam_layer(self, member: int = 0, image_size: int | None = None) -> nn.Module:
        """The fifth block's max-pool, VGG16's last (as :meth:`Backbone.cam_layer`), whatever
        ``image_size`` (the side of the fourth block's output it takes)."""
        member_index(member, 1)
        return self.block5[-1]


class VGGBase(nn.Module):
    """The input preparation and first four convolution blocks of a trained network."""

    def __init__(self, net: Network) -> None:
        super().__init__()
        cut = _pools(net.backbone)[3] + 1
        self.prepare = net.prepare
        self.blocks = net.backbone.net.features[:cut]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.prepare(x))  # (B, 8 * 64 * width, H / 16, W / 16)
