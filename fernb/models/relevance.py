"""Relevance-map regularised CNN and its baseline.

Ferreira, Marques, Cardoso and Rebelo, "Physiological Inspired Deep Neural Networks for
Emotion Recognition", IEEE Access 6, 2018 (Sec. III, Fig. 4). Three components:

- facial parts ``E(x)``: an encoder-decoder that regresses a relevance map ``x_hat`` at the
  input's resolution (Sec. III-A-1);
- representation ``F(x, x_hat)``: conv-conv-pool blocks, then expression blocks (e-blocks,
  eq. 1): ``a_l = ReLU(W * a_{l-1}) (.) x_hat``, with ``x_hat`` resized and cropped to the
  feature map (Sec. III-A-2, Fig. 5);
- classification ``G(h)``: dense layers (512, 512, C) (Sec. IV-A).

:class:`BaselineCNN` is the paper's "CNN trained from scratch" (Sec. IV-C: "the same network
architecture as the representation component"): representation and classification only,
its e-blocks without the product. It has no ``forward_with_map`` and trains with plain
cross-entropy. :class:`RelevanceNet` adds the facial-parts component; train it with
``FitConfig(forward="forward_with_map", loss=fernb.losses.RelevanceLoss(...))``.

The architecture table (Table 3) and the hyper-parameter grid (Table 2) are images missing
from the text, so these are this book's choices, each a keyword argument:

- ``parts_blocks=3`` (L_E) and ``rep_blocks=3`` (L_F): both were grid-searched in the paper.
  Three halvings keep 120 (the paper's input), 96 and 48 pixels divisible by 2**3, which the
  encoder-decoder needs to come back to the input's size.
- ``parts_filters=32``, ``rep_filters=32``, doubling at every pooling (the text says so for
  the facial-parts component; the representation component follows the same habit).
- Facial parts: no skip connections and no extra convolutions at the lowest resolution
  (``skip_connections=False``): the text describes a convolutional path followed by a
  deconvolutional path and names no skips. ``skip_connections=True`` gives the U-Net variant.
- ``map_activation="linear"``: the text says the last 3x3 convolution has "a linear
  activation function", although it calls ``x_hat`` a probability map; eq. (6) takes
  ``|x_hat|``, which only matters for a map that can be negative, so the linear output is
  kept. ``"sigmoid"`` gives a map in (0, 1).
- ``n_eblocks=2`` e-blocks with the filter count of the block before them, after the last
  conv-conv-pool block and before the dense layers (the text: "it starts with several
  sequences of convolution-convolution-pooling layers ... Then, we introduce ... the
  e-block"). ``eblock_after=k`` puts them after the k-th block instead, at a finer stride
  2**k, with the remaining blocks after them.
- ``gate="mean"``: eq. (1) multiplies the features by ``x_hat`` but does not say at what
  scale. Read literally (``gate="literal"``), a map whose mean is well below 1 (the
  landmark targets of eq. 4 average about 0.2, and eq. 6 pulls every pixel towards 0)
  shrinks the features at every e-block, two e-blocks by the square of it, and the dense
  layers start from near-zero inputs: measured on synth-lab at 48 px, the fully supervised
  network then sits at the majority class for several epochs. ``"mean"`` divides the map,
  once brought to the feature map, by its mean magnitude over that map (per image), so the
  gate redistributes the features over the face without changing their overall scale: the
  map's shape, not its size, reaches the classifier. The relevance losses still act on
  ``x_hat`` itself; under ``"mean"`` the sparsity of eq. (6) can therefore shrink the whole
  map without cost to the classifier, so a map's sparsity is best read from its shape
  (e.g. the share of its pixels above half its peak), not from its mean.
- ``padding="same"`` in the representation component: the e-blocks' feature map at stride
  ``s = 2**rep_blocks`` is then exactly ``x_hat`` averaged over s x s blocks (the pixels the
  max-pools merged), cropped where a pooling floored an odd size. ``"valid"`` convolutions
  shrink the maps, and the pooled ``x_hat`` is centre-cropped to them: the paper's "x_hat has
  to be resized and cropped accordingly to the actual feature map size".
- ``dropout=0.0``: the paper regularises with an l2 penalty (``weight_decay`` in ``fit``) and
  names no dropout for these models.
- No batch normalisation: none is mentioned.
- ``map_start=1.0``: the facial-parts head (the last 3x3 convolution) starts with zero
  weights and a bias that makes ``x_hat`` equal 1 everywhere, so that at initialisation the
  e-blocks are plain convolutions and, with the same ``seed``, the network computes exactly
  the baseline's function; the relevance losses then move the map away from 1. The paper
  names no initialisation; a random head makes the two e-blocks multiply the features by a
  map near zero, and, measured on synth-lab at 48 px, training then stays at the majority
  class. ``map_start=None`` keeps the random head; with ``map_activation="sigmoid"`` the
  start must lie in (0, 1).
- ``init="kaiming"``: every convolution and dense layer starts from He et al.'s normal
  initialisation for ReLU networks (``kaiming_normal_``, fan-in; biases zero). The paper
  names no initialisation; without batch normalisation PyTorch's default (a uniform
  distribution of a third of that variance) shrinks the signal through the eight
  convolutions so much that, measured on synth-lab at 48 px, the baseline stays at the
  majority class for the first epochs. ``init="torch"`` keeps PyTorch's defaults.

``width`` scales every convolution's filters (1.0 = the choices above); the dense layers
keep their 512 units. ``seed`` builds the representation and classification components
under ``seeded(seed, 0)`` and the facial parts under ``seeded(seed, "facial_parts")``, so a
baseline and a RelevanceNet with the same seed start from the same shared weights;
``seed=None`` draws from the caller's RNG (as :meth:`fernb.models.members.Members.build`
expects).

The relevance targets of the fully supervised scheme (eq. 4, Fig. 6) come from
:func:`target_maps`, and :data:`PAPER_TRAINING` collects the training settings Sec. IV-A
prints.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fernb.landmarks import heatmap
from fernb.models.contract import member_index
from fernb.models.sizes import check_sizes, scaled
from fernb.seeding import seeded
from fernb.train.optim import Schedule

PADDINGS = ("same", "valid")
MAP_ACTIVATIONS = ("linear", "sigmoid")
GATES = ("mean", "literal")
GATE_EPS = 1e-6  # smallest mean magnitude a "mean" gate divides by
INITS = ("kaiming", "torch")
SIGMA_FRACTION = 1 / 40  # default Gaussian sigma as a fraction of the map side (3 px at 120)


@dataclass(frozen=True)
class TrainingSettings:
    """What Ferreira et al. print about training (Sec. IV-A unless noted).

    The learning rate, the l2 coefficient, L_E, L_F, lambda and gamma were chosen by grid
    search with cross-validation on each training set (Table 2, an image not in the text);
    ``lambda_*`` and ``gamma`` below are the values the relevance-map figures show.
    """

    optimizer: str = "adam"
    batch_size: int = 50
    lr_decay: float = 0.99            # learning rate x 0.99 after every epoch
    image_size: int = 120             # MTCNN face crops resized to 120 x 120
    hidden: tuple[int, int] = (512, 512)  # two dense layers before the C-way output
    lambda_fully: float = 10.0        # Fig. 9, third row (5 in its bottom row)
    lambda_weakly: float = 1e-4       # Fig. 10, middle row; 1e-2 over-regularises
    gamma: float = 1.0                # Fig. 10
    ckplus_folds: int = 10            # subject-independent stratified k-fold (Sec. IV-C)
    jaffe_folds: int = 3              # (Sec. IV-D)
    val_fraction: float = 0.2         # of each training split, subject-independent
    finetune_epochs: int = 25         # SFEW after FER-2013 pre-training, "~25" (Sec. IV-E)

    def schedule(self) -> Schedule:
        """``FitConfig(schedule=...)``: multiply the learning rate by ``lr_decay`` every
        epoch."""
        return Schedule("ExponentialLR", gamma=self.lr_decay)


PAPER_TRAINING = TrainingSettings()


def target_maps(landmarks: np.ndarray | torch.Tensor, size: int | tuple[int, int], *,
                sigma: float | None = None, combine: str = "max",
                chunk: int = 64) -> torch.Tensor:
    """Target relevance maps of the fully supervised scheme (Sec. III-B-1, Fig. 6).

    One Gaussian of standard deviation ``sigma`` at each landmark, its peak 1, combined by
    their maximum: values stay in [0, 1], like a probability of relevance, and close points
    (eye and lip contours) do not add up. The paper's "mixture of the Gaussians" could also
    be read as a sum (``combine="sum"``); a normalised density mixture would have values near
    1 / (2 pi sigma^2 k), far too small for the lambda of Fig. 9. Sigma is not printed (Fig. 6
    shows several); the default is 1/40 of the map side (3 px at 120 px, 1.2 px at 48 px).

    Args:
        landmarks: (N, K, 2) pixel (x, y) in the maps' frame (e.g. (N, 68, 2)).
        size: map side (int) or (height, width).
        sigma: Gaussian standard deviation in pixels; None for ``SIGMA_FRACTION`` x side.
        combine: ``"max"`` or ``"sum"`` (see :func:`fernb.landmarks.heatmap`).
        chunk: images computed at once (bounds the (chunk, K, H, W) intermediate).

    Returns:
        (N, 1, H, W) float32 maps.
    """
    points = np.asarray(landmarks.cpu() if isinstance(landmarks, torch.Tensor) else landmarks,
                        dtype=np.float32)
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"landmarks must be (N, K, 2) pixel (x, y), got shape {points.shape}")
    h, w = (size, size) if isinstance(size, int) else size
    sigma = SIGMA_FRACTION * min(h, w) if sigma is None else sigma
    if sigma <= 0:
        raise ValueError(f"sigma must be a positive number of pixels, got {sigma}")
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1 image, got {chunk}")
    maps = [heatmap(points[i:i + chunk], (h, w), sigma=sigma, combine=combine)
            for i in range(0, len(points), chunk)]
    out = np.concatenate(maps) if maps else np.zeros((0, h, w), np.float32)
    return torch.from_numpy(out).unsqueeze(1)  # (N, 1, H, W)


def fit_relevance(relevance: torch.Tensor, size: Sequence[int], stride: int) -> torch.Tensor:
    """``x_hat`` (B, 1, H, W) brought to a feature map of spatial ``size`` at ``stride``:
    averaged over stride x stride blocks, then centre-cropped (Sec. III-A-2)."""
    pooled = F.avg_pool2d(relevance, stride) if stride > 1 else relevance
    h, w = size
    ph, pw = pooled.shape[-2:]
    if ph < h or pw < w:
        raise ValueError(f"relevance map {tuple(relevance.shape[-2:])} at stride {stride} is "
                         f"{(ph, pw)}, smaller than the feature map {(h, w)}")
    top, left = (ph - h) // 2, (pw - w) // 2
    return pooled[..., top:top + h, left:left + w]


def _double_conv(in_chans: int, out_chans: int, padding: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_chans, out_chans, 3, padding=padding), nn.ReLU(),
                         nn.Conv2d(out_chans, out_chans, 3, padding=padding), nn.ReLU())


def gate(relevance: torch.Tensor, size: Sequence[int], stride: int,
         mode: str = "mean") -> torch.Tensor:
    """What an e-block multiplies its features by: ``x_hat`` (B, 1, H, W) brought to the
    feature map (:func:`fit_relevance`), as it is (``"literal"``, eq. 1 as printed) or divided
    by its mean magnitude over the feature map, per image (``"mean"``), so that the gate
    averages 1 in magnitude and keeps the features' scale."""
    if mode not in GATES:
        raise ValueError(f"gate must be one of {GATES}, got {mode!r}")
    fitted = fit_relevance(relevance, size, stride)  # (B, 1, h, w)
    if mode == "literal":
        return fitted
    scale = fitted.abs().mean(dim=(-2, -1), keepdim=True)
    return fitted / scale.clamp_min(GATE_EPS)


class EBlock(nn.Module):
    """Expression block, eq. (1): ``a_l = ReLU(W * a_{l-1}) (.) x_hat`` (Fig. 5).

    Args:
        in_chans, out_chans: channels of ``a_{l-1}`` and ``a_l``.
        padding: of the 3x3 convolution (1 = 'same', 0 = 'valid').
        stride: input pixels per feature-map pixel, used to bring ``x_hat`` to the map.
        gate: how ``x_hat`` multiplies the features (:func:`gate`).
    """

    def __init__(self, in_chans: int, out_chans: int, padding: int, stride: int,
                 gate: str = "mean") -> None:
        super().__init__()
        if gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
        self.conv = nn.Conv2d(in_chans, out_chans, 3, padding=padding)
        self.stride = stride
        self.gate = gate

    def forward(self, a: torch.Tensor, relevance: torch.Tensor | None = None) -> torch.Tensor:
        """Without ``relevance`` the block is a convolution and ReLU (the baseline)."""
        a = F.relu(self.conv(a))  # (B, C', H', W')
        if relevance is None:
            return a
        return a * gate(relevance, a.shape[-2:], self.stride, self.gate)


class Representation(nn.Module):
    """``F(x, x_hat)``: conv-conv-pool blocks with the e-blocks after the ``position``-th
    (the last by default; Sec. III-A-2)."""

    def __init__(self, in_chans: int, filters: Sequence[int], n_eblocks: int,
                 padding: int, position: int | None = None, gate: str = "mean") -> None:
        super().__init__()
        position = len(filters) if position is None else position
        if not 1 <= position <= len(filters):
            raise ValueError(f"the e-blocks sit after block 1..{len(filters)}, got {position}")
        chans = [in_chans, *filters]
        self.blocks = nn.ModuleList(nn.Sequential(_double_conv(chans[i], c, padding),
                                                  nn.MaxPool2d(2))
                                    for i, c in enumerate(filters))
        width = filters[position - 1]
        self.eblocks = nn.ModuleList(EBlock(width, width, padding, 2 ** position, gate)
                                     for _ in range(n_eblocks))
        self.position = position

    def forward(self, x: torch.Tensor, relevance: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks[:self.position]:
            x = block(x)
        for eblock in self.eblocks:
            x = eblock(x, relevance)
        for block in self.blocks[self.position:]:
            x = block(x)
        return x  # (B, C', H', W')


class FacialParts(nn.Module):
    """``E(x)``: encoder-decoder regressing the relevance map ``x_hat`` (Sec. III-A-1).

    Encoder: per level, two 3x3 convolutions with ReLU and a 2x2 max-pool, filters doubling
    per level. Decoder: per level, a 2x2 stride-2 transposed convolution and two 3x3
    convolutions, each followed by ReLU. A last 3x3 convolution maps to one channel with a
    linear (or sigmoid) activation.
    """

    def __init__(self, in_chans: int, filters: Sequence[int], activation: str,
                 skip_connections: bool) -> None:
        super().__init__()
        chans = [in_chans, *filters]
        self.down = nn.ModuleList(_double_conv(chans[i], c, 1) for i, c in enumerate(filters))
        self.pool = nn.MaxPool2d(2)
        ups, convs = [], []
        for level in reversed(range(len(filters))):
            incoming = filters[min(level + 1, len(filters) - 1)]
            ups.append(nn.ConvTranspose2d(incoming, filters[level], 2, stride=2))
            merged = 2 * filters[level] if skip_connections else filters[level]
            convs.append(_double_conv(merged, filters[level], 1))
        self.up = nn.ModuleList(ups)
        self.up_convs = nn.ModuleList(convs)
        self.head = nn.Conv2d(filters[0], 1, 3, padding=1)
        self.activation = activation
        self.skip_connections = skip_connections

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        for up, convs, skip in zip(self.up, self.up_convs, reversed(skips)):
            x = up(x)
            if self.skip_connections:
                x = torch.cat([skip, x], 1)
            x = convs(x)
        x = self.head(x)  # (B, 1, H, W)
        return torch.sigmoid(x) if self.activation == "sigmoid" else x


def _kaiming(module: nn.Module) -> None:
    """He-normal weights (fan-in, ReLU gain) and zero biases for every convolution,
    transposed convolution and dense layer in ``module``."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(m.bias)


def _feature_side(side: int, blocks: int, n_eblocks: int, shrink: int,
                  position: int | None = None) -> int:
    """Feature-map side after the representation component (``shrink`` pixels lost per
    convolution, the e-blocks after block ``position``, the last by default); 0 when it
    vanishes."""
    position = blocks if position is None else position
    for i in range(blocks):
        side = (side - 2 * shrink) // 2
        if i + 1 == position:
            side -= n_eblocks * shrink
        if side < 1:
            return 0
    return side


class BaselineCNN(nn.Module):
    """The paper's baseline: representation and classification components only.

    Args:
        n_classes: output classes (8 for CK+, 6 or 7 for JAFFE, 7 for SFEW and FER-2013).
        image_size: input side (int) or (height, width); 120 in the paper.
        in_chans: input channels (1 grayscale, 3 colour).
        width: channel multiplier of every convolution; 1.0 = the module's choices.
        rep_blocks: conv-conv-pool blocks of the representation component (L_F).
        rep_filters: filters of the first block, doubled per block.
        n_eblocks: e-blocks (at least 1).
        eblock_after: the conv-conv-pool block the e-blocks follow (1..rep_blocks); None
            for the last.
        padding: ``"same"`` or ``"valid"`` convolutions in the representation component.
        hidden: units of the dense layers before the output layer.
        dropout: dropout after each hidden dense layer (0 = none, as in the paper).
        init: ``"kaiming"`` (He-normal weights, zero biases) or ``"torch"`` (PyTorch's
            defaults).
        seed: build under ``seeded(seed, 0)``; None uses the caller's RNG.

    ``forward(x)`` returns logits (B, 1, C); ``cam_layer()`` is the block the e-blocks follow,
    the layer :func:`fernb.explain.gradcam` explains (before any product with a map).
    """

    def __init__(self, *, n_classes: int = 8, image_size: int | tuple[int, int] = 120,
                 in_chans: int = 1, width: float = 1.0, rep_blocks: int = 3,
                 rep_filters: int = 32, n_eblocks: int = 2, eblock_after: int | None = None,
                 padding: str = "same", hidden: Sequence[int] = (512, 512),
                 dropout: float = 0.0, init: str = "kaiming",
                 seed: int | None = None) -> None:
        super().__init__()
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        check_sizes(n_classes=n_classes, in_chans=in_chans, width=width)
        if rep_blocks < 1 or n_eblocks < 1:
            raise ValueError(f"rep_blocks and n_eblocks must be at least 1, got rep_blocks="
                             f"{rep_blocks}, n_eblocks={n_eblocks}")
        if eblock_after is not None and not 1 <= eblock_after <= rep_blocks:
            raise ValueError(f"eblock_after must name a block 1..{rep_blocks} (rep_blocks) or "
                             f"be None for the last, got {eblock_after}")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        shrink = 2 if padding == "valid" else 0  # pixels a 3x3 convolution removes
        fh, fw = (_feature_side(s, rep_blocks, n_eblocks, shrink, eblock_after)
                  for s in (h, w))
        if fh < 1 or fw < 1:
            raise ValueError(f"image_size={image_size} is too small for rep_blocks={rep_blocks}, "
                             f"n_eblocks={n_eblocks} and padding={padding!r}: the feature map "
                             f"vanishes; use a larger image, fewer blocks or padding='same'")
        self.n_classes = n_classes
        self.image_size = (h, w)
        self.in_chans = in_chans
        self.width = width
        self.init = init
        self.seed = seed
        filters = [scaled(rep_filters * 2**i, width) for i in range(rep_blocks)]
        with self._init_stream(0):
            self.representation = Representation(in_chans, filters, n_eblocks,
                                                 0 if shrink else 1, eblock_after)
            layers: list[nn.Module] = [nn.Flatten()]
            n_in = filters[-1] * fh * fw
            for units in hidden:
                layers += [nn.Linear(n_in, units), nn.ReLU()]
                if dropout:
                    layers.append(nn.Dropout(dropout))
                n_in = units
            layers.append(nn.Linear(n_in, n_classes))
            self.classifier = nn.Sequential(*layers)
            if init == "kaiming":
                _kaiming(self)

    def _init_stream(self, key: int | str) -> AbstractContextManager[None]:
        return nullcontext() if self.seed is None else seeded(self.seed, key)

    def cam_layer(self, member: int = 0, image_size: int | None = None) -> nn.Module:
        """The conv-conv-pool block the e-blocks follow, whatever ``image_size``: its output
        is the feature map Grad-CAM weighs, *before* any relevance map multiplies it, so a
        map explains where the representation responds rather than restating ``x_hat``
        (:meth:`gated_layer` gives the map after the products)."""
        member_index(member, 1)
        return self.representation.blocks[self.representation.position - 1]

    def gated_layer(self) -> nn.Module:
        """The last e-block: its output is what the rest of the network receives, the
        features after every product with ``x_hat`` (in the baseline, without one)."""
        return self.representation.eblocks[-1]

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_chans or tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(f"expected input (batch, {self.in_chans}, {self.image_size[0]}, "
                             f"{self.image_size[1]}), got {tuple(x.shape)}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The representation ``h`` (B, C', H', W')."""
        self._check_input(x)
        return self.representation(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``G(h)``: logits (B, 1, C)."""
        return self.classifier(features).unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))  # (B, 1, C)


class RelevanceNet(BaselineCNN):
    """The proposed network: facial-parts, representation and classification components.

    Takes every argument of :class:`BaselineCNN`, and:

    Args:
        parts_blocks: encoder (and decoder) levels of the facial-parts component (L_E); the
            image sides must be divisible by ``2**parts_blocks``.
        parts_filters: filters of the first level, doubled per level.
        map_activation: ``"linear"`` (the paper's text) or ``"sigmoid"``.
        map_start: value of ``x_hat`` everywhere at initialisation (zero head weights, the
            bias set to give it), or None for a randomly initialised head.
        skip_connections: concatenate encoder features into the decoder (U-Net style).
        gate: how the e-blocks multiply by ``x_hat``: ``"mean"`` (divided by its mean
            magnitude over the feature map, keeping the features' scale) or ``"literal"``
            (eq. 1 as printed); see :func:`gate`.

    ``forward_with_map(x)`` returns ((B, 1, C) logits, (B, 1, H, W) relevance map);
    ``forward(x)`` the logits only.
    """

    def __init__(self, *, parts_blocks: int = 3, parts_filters: int = 32,
                 map_activation: str = "linear", map_start: float | None = 1.0,
                 skip_connections: bool = False, gate: str = "mean",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
        for eblock in self.representation.eblocks:
            eblock.gate = gate
        self.gate = gate
        if parts_blocks < 1:
            raise ValueError(f"parts_blocks must be at least 1, got {parts_blocks}")
        if any(side % 2**parts_blocks for side in self.image_size):
            raise ValueError(f"image_size={self.image_size} must be divisible by "
                             f"2**parts_blocks = {2**parts_blocks} so that the relevance map "
                             f"comes back at the input's size; change parts_blocks or the size")
        if map_activation not in MAP_ACTIVATIONS:
            raise ValueError(f"map_activation must be one of {MAP_ACTIVATIONS}, got "
                             f"{map_activation!r}")
        if map_start is not None and map_activation == "sigmoid" and not 0 < map_start < 1:
            raise ValueError(f"map_start must lie in (0, 1) for a sigmoid map (or be None), "
                             f"got {map_start}")
        filters = [scaled(parts_filters * 2**i, self.width) for i in range(parts_blocks)]
        with self._init_stream("facial_parts"):
            self.facial_parts = FacialParts(self.in_chans, filters, map_activation,
                                            skip_connections)
            if self.init == "kaiming":
                _kaiming(self.facial_parts)
        if map_start is not None:
            head = self.facial_parts.head
            nn.init.zeros_(head.weight)
            bias = math.log(map_start / (1 - map_start)) if map_activation == "sigmoid" \
                else map_start
            nn.init.constant_(head.bias, bias)
        self.map_start = map_start

    def forward_with_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, 1, C) and the relevance map ``x_hat`` (B, 1, H, W)."""
        self._check_input(x)
        relevance = self.facial_parts(x)  # (B, 1, H, W)
        return self.forward_head(self.representation(x, relevance)), relevance

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The representation ``h = F(x, E(x))`` (B, C', H', W')."""
        self._check_input(x)
        return self.representation(x, self.facial_parts(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_map(x)[0]  # (B, 1, C)
