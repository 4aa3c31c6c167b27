"""The networks of Gan, Chen and Xu's soft-label ensemble (PRL 2019, Sec. 3.1).

Every base classifier is a VGG16 with a C-way last layer
(:func:`fernb.models.backbones.vgg16`); :class:`Network` puts VGG-Face's input preparation
(:class:`fernb.models.backbones.VGGFaceInput`) in front of it when it starts from VGG-Face
weights. Every base classifier trains end to end, as in the paper.
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
