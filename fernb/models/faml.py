"""R18+FAML: ResNet-18 with internal Feature fusion and Attention blocks (Zhou, Xie & Tian).

Zhou, Xie and Tian, "Multi Loss-based Feature Fusion and Top Two Voting Ensemble Decision
Strategy for Facial Expression Recognition in the Wild" (arXiv 2311.03478), Sec. 3.1, Fig. 1
and Fig. 4. The network is a ResNet-18 (:func:`fernb.models.backbones.resnet18`, so widths
and local pre-trained weights work as for every backbone) with two changes:

- **Internal feature fusion** ("FA" in Fig. 1): the first convolution becomes a *main*
  convolution on the whole image plus one convolution per facial sub-area, each seeing only
  its crop of the image; their feature maps are added to the main map, at the positions they
  cover, with weights (:class:`FacialAreaFusion`).
- **Attention blocks** after the first three residual stages (Fig. 4), "using ViT [49] to
  enhance the weights of the features in the local region" (:class:`AttentionBlock`).

"ML", the multiple losses, is the training loss (:class:`fernb.losses.MultiLoss`), not part
of the network. In Table 2 "FA" stands for both architectural changes together ("attention
blocks with internal feature fusion (FA)", caption and Sec. 4.1), so the ablation rows are
one builder with options plus the loss, see :data:`ABLATION`.

Choices where the paper is vague (Fig. 1 and Fig. 4 were images; the text does not give
these details):

- Attention block: a pre-norm ViT encoder block (LayerNorm, multi-head self-attention,
  residual; LayerNorm, GELU MLP, residual; :class:`torch.nn.TransformerEncoderLayer` with
  ``norm_first=True``, no dropout) over the H x W spatial positions of the stage's feature
  map, each position a token of the stage's C channels. ViT is what the paper names, and a
  residual block leaves the ResNet's path intact. Heads of ``head_dim`` = 32 channels
  (2, 4 and 8 heads at full width) and an MLP of ``mlp_ratio`` = 4 times the channels, as
  ViT. No position embedding: convolutional features already carry position (zero padding),
  and without one the block works at any input size.
- Sub-areas (``areas``): the paper's Fig. 1 fuses two partial maps into the main one, and
  Sec. 3.1 speaks of "three ... areas of different sizes based on the proportion of facial
  features". Read as three areas in all, the whole face (main) and two parts:
  :data:`FACE_AREAS` = an eyes-and-brows band (rows 20-55 % of the aligned face, full width)
  and a mouth box (rows 55-95 %, columns 20-80 %), the regions FACS puts most expression
  action units in. Any mapping of name -> (top, bottom, left, right) fractions works.
- Fusion weights: one learnable scalar per area, initialised to ``area_weight`` = 0.5
  ("weighted addition", weights not given).
- Sub-area convolutions have the main convolution's shape (7x7, stride 2) and start as copies
  of it (``area_init="copy"``), so pre-trained stem weights serve every area;
  ``area_init="fresh"`` draws them as torchvision initialises convolutions. A crop starts on
  an even pixel, so its feature map lies exactly on the main map's grid.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from fernb.models.backbones import WeightsPath, resnet18
from fernb.models.contract import deepest_layer, member_index

Area = tuple[float, float, float, float]  # (top, bottom, left, right), fractions of the image

FACE_AREAS: dict[str, Area] = {
    "eyes": (0.20, 0.55, 0.0, 1.0),
    "mouth": (0.55, 0.95, 0.2, 0.8),
}
AREA_INITS = ("copy", "fresh")

# Table 2's rows: network options and whether the multiple losses (ML) train it; "FA" adds
# both the internal feature fusion and the attention blocks (Sec. 4.1). "FAML-noatt" is the
# Sec. 4.5 remark that the models reach the same accuracy without the attention blocks.
ABLATION: dict[str, dict[str, bool]] = {
    "R18": {"fusion": False, "attention": False, "multi_loss": False},
    "R18+FA": {"fusion": True, "attention": True, "multi_loss": False},
    "FAML": {"fusion": True, "attention": True, "multi_loss": True},
    "FAML-noatt": {"fusion": True, "attention": False, "multi_loss": True},
}


def _check_areas(areas: Mapping[str, Area]) -> dict[str, Area]:
    if not isinstance(areas, Mapping) or not areas:
        raise ValueError(f"areas must be a non-empty mapping of name -> (top, bottom, left, "
                         f"right) fractions, got {areas!r}")
    out = {}
    for name, box in areas.items():
        if len(box) != 4:
            raise ValueError(f"area {name!r} must be (top, bottom, left, right), got {box!r}")
        top, bottom, left, right = (float(v) for v in box)
        if not (0 <= top < bottom <= 1 and 0 <= left < right <= 1):
            raise ValueError(f"area {name!r} = {box!r}: need 0 <= top < bottom <= 1 and "
                             f"0 <= left < right <= 1 (fractions of the image)")
        out[str(name)] = (top, bottom, left, right)
    return out


def _span(start: float, stop: float, size: int) -> tuple[int, int]:
    """Feature-map cells [lo, hi) covering the fractions [start, stop) of ``size`` cells."""
    lo = min(math.floor(start * size), size - 1)
    return lo, max(lo + 1, min(math.ceil(stop * size), size))


class FacialAreaFusion(nn.Module):
    """Internal feature fusion (Zhou et al. Sec. 3.1, Fig. 1): the main convolution's map plus
    weighted maps of one convolution per facial area, each applied to its crop of the image.

    Out = main(x) + sum_k w_k * pad_k(conv_k(crop_k(x))), where pad_k places area k's map at
    the cells of the main map it covers and w_k is learnable.

    Args:
        main: the network's first convolution (it stays the main one).
        areas: name -> (top, bottom, left, right) fractions of the image.
        area_weight: initial fusion weight of every area.
        area_init: ``"copy"`` (area convolutions start as copies of ``main``) or ``"fresh"``.
    """

    def __init__(self, main: nn.Conv2d, areas: Mapping[str, Area] = FACE_AREAS, *,
                 area_weight: float = 0.5, area_init: str = "copy") -> None:
        super().__init__()
        if not isinstance(main, nn.Conv2d):
            raise TypeError(f"main must be an nn.Conv2d, got {type(main).__name__}")
        if area_init not in AREA_INITS:
            raise ValueError(f"area_init must be one of {AREA_INITS}, got {area_init!r}")
        if not math.isfinite(area_weight):
            raise ValueError(f"area_weight must be finite, got {area_weight}")
        self.areas = _check_areas(areas)
        self.main = main
        self.area_convs = nn.ModuleDict()
        for name in self.areas:
            conv = copy.deepcopy(main)
            if area_init == "fresh":
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)
            self.area_convs[name] = conv
        self.area_weights = nn.Parameter(torch.full((len(self.areas),), float(area_weight)))

    def windows(self, height: int, width: int) -> dict[str, tuple[int, int, int, int]]:
        """Each area's cells (row0, row1, col0, col1) on a main feature map of this size."""
        return {name: (*_span(top, bottom, height), *_span(left, right, width))
                for name, (top, bottom, left, right) in self.areas.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.main(x)  # (B, C, H', W')
        h, w = out.shape[-2:]
        sy, sx = self.main.stride
        for k, (name, (r0, r1, c0, c1)) in enumerate(self.windows(h, w).items()):
            crop = x[:, :, r0 * sy:r1 * sy, c0 * sx:c1 * sx]
            part = self.area_convs[name](crop)  # (B, C, r1 - r0, c1 - c0)
            out = out + self.area_weights[k] * F.pad(part, (c0, w - c1, r0, h - r1))
        return out

    def extra_repr(self) -> str:
        return f"areas={self.areas}"


def _heads(channels: int, head_dim: int) -> int:
    """The most heads of at least ``head_dim`` channels that divide ``channels`` (>= 1)."""
    heads = max(1, channels // head_dim)
    while channels % heads:
        heads -= 1
    return heads


class AttentionBlock(nn.Module):
    """Self-attention over a feature map's spatial positions (Zhou et al. Fig. 4): a pre-norm
    ViT encoder block (MHSA and MLP, both residual) on the H x W tokens of C channels.

    Args:
        channels: C of the feature map.
        head_dim: channels per head (the number of heads divides C).
        mlp_ratio: MLP hidden units as a multiple of C.
    """

    def __init__(self, channels: int, *, head_dim: int = 32, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if channels < 1 or head_dim < 1:
            raise ValueError(f"channels and head_dim must be >= 1, got {channels}, {head_dim}")
        if not mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be positive, got {mlp_ratio}")
        self.encoder = nn.TransformerEncoderLayer(
            d_model=channels, nhead=_heads(channels, head_dim),
            dim_feedforward=max(1, round(mlp_ratio * channels)), dropout=0.0,
            activation="gelu", batch_first=True, norm_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, H*W, C)
        # In fp32 even under bf16 autocast: on a CPU, attention over a few channels per head
        # is faster in fp32 (about twice, at 48 px and width 0.125), and as exact.
        with torch.autocast(x.device.type, enabled=False):
            out = self.encoder(tokens.float())  # (B, H*W, C)
        return out.transpose(1, 2).reshape(b, c, h, w)


class FAML(nn.Module):
    """R18+FAML's network around a torchvision ResNet ``net`` (Fig. 1, Fig. 4).

    ``forward(x)`` returns logits (B, 1, C). ``net.conv1`` is a :class:`FacialAreaFusion`
    when ``fusion`` is on; ``attention`` holds the blocks run after ``layer1..layer3``
    (empty when off). Build it with :func:`r18_faml`.
    """

    def __init__(self, net: nn.Module, *, fusion: bool = True, attention: bool = True,
                 areas: Mapping[str, Area] = FACE_AREAS, area_weight: float = 0.5,
                 area_init: str = "copy", head_dim: int = 32, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.net = net
        self.in_chans = net.conv1.in_channels
        self.fusion, self.use_attention = bool(fusion), bool(attention)
        if fusion:
            net.conv1 = FacialAreaFusion(net.conv1, areas, area_weight=area_weight,
                                         area_init=area_init)
        stages = (net.layer1, net.layer2, net.layer3)
        self.attention = nn.ModuleList(
            [AttentionBlock(stage[-1].bn2.num_features, head_dim=head_dim, mlp_ratio=mlp_ratio)
             for stage in stages] if attention else [])

    def cam_layer(self, member: int = 0, image_size: int | None = None) -> nn.Module:
        """The layer Grad-CAM explains (Fig. 8): the output of the deepest residual stage that
        is at least :data:`~fernb.models.contract.MIN_CAM_SIZE` cells wide at ``image_size``
        (the attention block after it, when there is one, since the next stage reads that):
        ``layer4`` at the paper's 224 px, ``layer2``'s attention block at 48 px, where
        ``layer4`` is 2 x 2. None: ``layer4``."""
        member_index(member, 1)
        net = self.net
        stages = (net.layer1, net.layer2, net.layer3, net.layer4)
        candidates = [self.attention[i] if i < len(self.attention) else stage
                      for i, stage in enumerate(stages)]
        return deepest_layer(self, candidates, self.in_chans, image_size)

    @property
    def head(self) -> nn.Linear:
        """The C-way linear layer ``net.fc``."""
        return self.net.fc

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature maps of the last stage (B, C', H', W')."""
        net = self.net
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        for i, stage in enumerate((net.layer1, net.layer2, net.layer3, net.layer4)):
            x = stage(x)
            if i < len(self.attention):
                x = self.attention[i](x)
        return x

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Pooled features -> logits (B, 1, C)."""
        return self.net.fc(torch.flatten(self.net.avgpool(features), 1)).unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))  # (B, 1, C)


def r18_faml(*, n_classes: int = 7, in_chans: int = 3, width: float = 1.0,
             weights: WeightsPath = None, fusion: bool = True, attention: bool = True,
             areas: Mapping[str, Area] = FACE_AREAS, area_weight: float = 0.5,
             area_init: str = "copy", head_dim: int = 32, mlp_ratio: float = 4.0) -> FAML:
    """R18+FAML's network; ``fusion=False, attention=False`` is the plain R18 (Table 2).

    Args:
        n_classes, in_chans, width, weights: as :func:`fernb.models.backbones.resnet18`;
            ``weights`` (e.g. MS-Celeb-1M, the paper's R18) are loaded into the ResNet before
            the sub-area convolutions copy its first convolution.
        fusion: internal feature fusion of facial sub-areas in the first layer.
        attention: attention blocks after the first three residual stages.
        areas, area_weight, area_init: see :class:`FacialAreaFusion` (defaults: module
            docstring).
        head_dim, mlp_ratio: see :class:`AttentionBlock`.
    """
    backbone = resnet18(n_classes=n_classes, in_chans=in_chans, width=width, weights=weights)
    return FAML(backbone.net, fusion=fusion, attention=attention, areas=areas,
                area_weight=area_weight, area_init=area_init, head_dim=head_dim,
                mlp_ratio=mlp_ratio)
