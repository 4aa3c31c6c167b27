"""Part-based ensemble transfer learning from landmarks to expressions (EL, FTL, Baseline).

Wadhawan and Gandhi, "Landmark-Aware and Part-based Ensemble Transfer Learning Network for
Facial Expression Recognition from Static Images", IEEE TAI 2023, Sec. III-C (architecture),
eq. 4 (ensemble policy, :class:`fernb.ensemble.SoftmaxSum`) and Sec. IV-E (complexity).

A :class:`PartNetwork` is a CNN feature extractor (four blocks of two 3x3 'same' convolutions,
each followed by BatchNorm then ReLU, 16/32/64/128 filters, every block ending in a 3x3
stride-2 'same' max-pool, then global average pooling to 128-d) with two heads on the 128-d
vector: a landmark-localisation head Dense(128) -> Dense(2K) for the K points of its part and
an expression head Dense(128) -> Dense(128) -> Dense(C). Convolutions start He-uniform,
dense layers Glorot-uniform, biases at zero (Keras' default). Three ensembles of five
networks, each member initialised from its own seeded stream (:func:`part_ensemble`):

- ``"el"``: one network per part (eyebrows, eyes, nose, mouth, jaw; Table I order);
- ``"ftl"``: five networks that localise all 68 points;
- ``"baseline"``: five networks without a landmark head, trained directly on expressions.

Choices where the paper is silent (the authors' public notebook settles some of them):

- ``head_activation="none"``: the hidden Dense(128) layers of both heads have no activation
  in the authors' code (Keras' default), so each head is an affine map written as two or
  three layers; ``"relu"`` puts a ReLU after each hidden dense layer instead. The parameter
  count is the same either way.
- The landmark output is linear (the authors' code) although eq. 1 states predictions in
  [0, 1]; targets are in [0, 1] by construction, predictions are not clipped.
- Landmark coordinates are normalised as ``u = x / W``, ``v = y / H`` of pixel (x, y) with
  pixel centres at integers (the authors divide dlib's pixel coordinates by 160), flattened
  as ``x0, y0, x1, y1, ...`` in the order of :data:`LANDMARK_SETS`; :func:`normalise_landmarks`
  and :func:`pixel_landmarks` convert.
- 'same' max-pooling is ``MaxPool2d(3, 2, padding=1)``: the output size equals Keras'
  (ceil(n / 2)), but TensorFlow pads only the right and bottom edge, so for even sizes the
  windows sit one pixel to the left and up of Keras'. Counts are unaffected.
- Convolutions keep their bias (Keras' ``use_bias=True`` default; 480 of the 294,480
  extractor parameters) although BatchNorm follows them. BatchNorm uses PyTorch's defaults
  (momentum 0.1, eps 1e-5); Keras' are momentum 0.99 (PyTorch 0.01) and eps 1e-3.
- ``width`` scales every convolution's filters and the 128-unit dense layers (1.0 = paper).
- :meth:`PartNetwork.cam_layer` is the last convolution's BN-ReLU output (before the last
  max-pool), the layer Grad-CAM explains (Sec. IV-C, eqs. 5-6).
- ``standardize=True`` (not in the paper; the book's networks use it) puts a fixed
  standardisation (:class:`Standardize`) of the 128-d features before the expression head,
  set from the training images' features when the head is trained on a frozen extractor
  (stage 2 of :mod:`fernb.transfer`). A landmark-trained extractor's pooled features vary
  little between images (a spread of a few hundredths around a mean near 0.6), which leaves
  an Adam-trained head at the majority class; standardised, the same features are as
  usable as they are to a standardised linear probe. Its 2 x 128 fixed values are no
  parameters; :func:`complexity_summary` counts the paper's network without them.

Complexity at the paper's 160x160x3 input and C = 8 (CK+), see :func:`complexity_summary`:
extractor 294,480 trainable parameters ("about 0.29M"), expression head 34,056, sub-network
328,536 ("0.33M"), five 1,642,680; Keras also lists BatchNorm's moving statistics (960 per
network), giving 329,496 and 1,647,480 ("1.65M"; the trainable count rounds to 1.64M, while
the extractor's 0.29M matches the trainable count, the Keras one being 295,440). The "24
layers" of Sec. I are 8 convolutions, 8 BatchNorms, 4 max-pools, the global average pool and
3 dense layers (:func:`paper_layers`). Three printed figures do not follow from the
architecture:

- FLOPs: eqs. 7-9 give 670,924,800 for the convolutions, 67,584 for the dense layers and
  192,000 for the max-pools, 671,184,384 in all (0.671 GFLOPs, not 0.555; five: 3.356, not
  2.775); the convolutions are 99.96% of it (paper: 99.98%; 99.99% without the max-pools).
  No variant at 160 px gives 0.555 ('valid' instead of 'same' convolutions or pooling, eq. 7
  on output instead of input sizes, one input channel): the nearest, 'valid' convolutions,
  gives 0.550. FLOPs grow with the image area, so 0.555 would need an input of about 146 px.
- Storage: 1,647,480 values x 4 bytes = 6.28 MiB is the five-network ensemble (one network:
  1.26 MiB). The paper calls 6.3 MB one sub-network and multiplies by five again (31.5 MB).
- Landmark head: Dense(128) -> Dense(2K) has 16,512 + 129 * 2K parameters: 18,834 for the
  nose's 18 outputs ("0.019M", as printed) but 34,056 for the 136 outputs of all 68 points
  (printed "0.025M"); 34,056 is also the CK+ expression head (printed "approximately 0.035M").
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation

from fernb.complexity import (conv_flops_formula, count_keras_parameters, count_parameters,
                              flops, storage_mb)
from fernb.landmarks import N_LANDMARKS, PARTS
from fernb.models.contract import member_index
from fernb.models.members import Members
from fernb.models.sizes import check_sizes, scaled
from fernb.seeding import seeded

FILTERS: tuple[int, ...] = (16, 32, 64, 128)
HIDDEN = 128
# The five parts in the order of Table I; "full" is the FTL network's 68 points.
ENSEMBLE_PARTS: tuple[str, ...] = ("eyebrows", "eyes", "nose", "mouth", "jaw")
LANDMARK_SETS: dict[str, tuple[int, ...]] = {
    **{part: PARTS[part] for part in ENSEMBLE_PARTS}, "full": tuple(range(N_LANDMARKS))}
KINDS: tuple[str, ...] = ("el", "ftl", "baseline")
HEAD_ACTIVATIONS: dict[str, type[nn.Module]] = {"none": nn.Identity, "relu": nn.ReLU}


class Standardize(nn.Module):
    """Fixed per-feature standardisation ``(f - mean) / scale`` of (B, F) features: the
    identity until :meth:`fit` sets it from a set of features (buffers, not parameters, so
    fine-tuning leaves it as set)."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))

    @torch.no_grad()
    def fit(self, features: torch.Tensor, *, eps: float = 1e-6) -> Standardize:
        """Set mean and scale from (N, F) features: each feature's mean and standard
        deviation (population), a floor of ``eps`` on the scale of a constant feature."""
        features = features.detach().float()
        if features.ndim != 2 or features.shape[1] != len(self.mean) or len(features) < 2:
            raise ValueError(f"expected at least two ({len(self.mean)},) feature vectors, got "
                             f"shape {tuple(features.shape)}")
        self.mean.copy_(features.mean(0))
        self.scale.copy_(features.std(0, unbiased=False).clamp_min(eps))
        return self

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.scale  # (B, F)


class FeatureExtractor(nn.Module):
    """Four blocks of [conv3x3 'same' -> BN -> ReLU] x 2, each ending in a 3x3 stride-2 'same'
    max-pool, then global average pooling: (B, in_chans, H, W) -> (B, out_features)."""

    def __init__(self, *, in_chans: int = 3, width: float = 1.0) -> None:
        super().__init__()
        blocks, cin = [], in_chans
        for filters in FILTERS:
            cout = scaled(filters, width)
            blocks.append(nn.Sequential(
                Conv2dNormActivation(cin, cout, 3, bias=True),
                Conv2dNormActivation(cout, cout, 3, bias=True),
                nn.MaxPool2d(3, stride=2, padding=1)))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.in_chans, self.out_features = in_chans, cin

    @property
    def last_conv(self) -> nn.Module:
        """The last convolution with its BN and ReLU, before the last max-pool."""
        return self.blocks[-1][1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.blocks(x)).flatten(1)  # (B, F)


def _initialise(module: nn.Module) -> None:
    """He-uniform convolutions, Glorot-uniform dense layers, zero biases, BatchNorm at 1, 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()


def _dense_stack(sizes: list[int], activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(HEAD_ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class PartNetwork(nn.Module):
    """One network of an ensemble: extractor, landmark head for one part, expression head.

    Args:
        part: landmark set the localisation head predicts, a key of :data:`LANDMARK_SETS`
            (``"eyebrows"``, ``"eyes"``, ``"nose"``, ``"mouth"``, ``"jaw"`` or ``"full"``), or
            None for the Baseline network, which has no landmark head.
        n_classes: expression classes (8 for CK+, 7 for JAFFE and SFEW).
        width: multiplier of filters and dense units; 1.0 is the paper's network.
        in_chans: input channels (3: grayscale repeated, Sec. III-A).
        head_activation: ``"none"`` (the authors' code) or ``"relu"`` after the hidden dense
            layers of both heads.
        standardize: a fixed :class:`Standardize` of the features before the expression head
            (not the paper's; see the module notes); False is the paper's network.

    ``forward(x)`` gives expression logits (B, 1, C); ``forward_landmarks(x)`` gives (B, 2K)
    normalised coordinates ``x0/W, y0/H, x1/W, ...`` of the part's K points.
    """

    def __init__(self, *, part: str | None = "mouth", n_classes: int = 8, width: float = 1.0,
                 in_chans: int = 3, head_activation: str = "none",
                 standardize: bool = False) -> None:
        super().__init__()
        if part is not None and part not in LANDMARK_SETS:
            raise ValueError(f"part must be one of {list(LANDMARK_SETS)} or None (Baseline), "
                             f"got {part!r}")
        check_sizes(n_classes=n_classes, in_chans=in_chans, width=width)
        if head_activation not in HEAD_ACTIVATIONS:
            raise ValueError(f"head_activation must be one of {list(HEAD_ACTIVATIONS)}, got "
                             f"{head_activation!r}")
        self.part, self.n_classes = part, n_classes
        self.indices: tuple[int, ...] = LANDMARK_SETS[part] if part is not None else ()
        self.features = FeatureExtractor(in_chans=in_chans, width=width)
        # The extractor draws its weights before any head exists, so under one seed a
        # Baseline, an FTL and a part network start from the same extractor.
        _initialise(self.features)
        n_feat, hidden = self.features.out_features, scaled(HIDDEN, width)
        self.landmark_head = (_dense_stack([n_feat, hidden, 2 * len(self.indices)],
                                           head_activation) if part is not None else None)
        self.head = _dense_stack([n_feat, hidden, hidden, n_classes], head_activation)
        self.standardize: nn.Module = Standardize(n_feat) if standardize else nn.Identity()
        for head in (self.landmark_head, self.head):
            if head is not None:
                _initialise(head)

    def reset_parameters(self) -> None:
        """He-uniform convolutions, Glorot-uniform dense layers (Sec. III-C), zero biases
        (Keras' default), BatchNorm at scale 1 and shift 0; the extractor first."""
        for module in (self.features, self.landmark_head, self.head):
            if module is not None:
                _initialise(module)

    @property
    def n_landmarks(self) -> int:
        return len(self.indices)

    def cam_layer(self, member: int = 0, image_size: int | None = None) -> nn.Module:
        """The last convolution with its BN and ReLU, before the last max-pool (Sec. IV-C),
        whatever ``image_size``."""
        member_index(member, 1)
        return self.features.last_conv

    @property
    def features_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.features.parameters())

    def freeze_features(self) -> None:
        """No gradients for the extractor; its BatchNorm statistics stay fixed (``fit`` keeps
        BatchNorm layers whose parameters are all frozen in eval mode). Stage 2."""
        self.features.requires_grad_(False)
        self.features.eval()

    def unfreeze_features(self) -> None:
        """Make the extractor trainable again (stage 3, fine-tuning)."""
        self.features.requires_grad_(True)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The 128-d feature vector (B, F) shared by both heads."""
        if x.ndim != 4 or x.shape[1] != self.features.in_chans:
            raise ValueError(f"expected input (batch, {self.features.in_chans}, H, W), got "
                             f"{tuple(x.shape)}")
        return self.features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """The expression head (after the standardisation, if any): logits (B, 1, C)."""
        return self.head(self.standardize(features)).unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))  # (B, 1, C)

    def forward_landmarks(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised coordinates (B, 2K) of the part's landmarks."""
        if self.landmark_head is None:
            raise RuntimeError("the Baseline network (part=None) has no landmark head")
        return self.landmark_head(self.forward_features(x))  # (B, 2K)


def part_ensemble(kind: str = "el", *, n_networks: int = 5, n_classes: int = 8,
                  width: float = 1.0, in_chans: int = 3, head_activation: str = "none",
                  standardize: bool = False, seed: int = 0) -> Members:
    """The EL, FTL or Baseline ensemble as :class:`~fernb.models.members.Members` (B, M, C).

    Args:
        kind: ``"el"`` (one network per part of :data:`ENSEMBLE_PARTS`), ``"ftl"`` (68-point
            networks) or ``"baseline"`` (no landmark head).
        n_networks: networks of FTL and Baseline (5 in the paper); EL has one per part.
        standardize: networks with a fixed feature standardisation before the expression
            head (:class:`PartNetwork`).
        seed: member ``k`` (0-based) is built under ``seeded(seed, k)``, as
            :meth:`Members.build` does.

    Combine members with eq. 4, :class:`fernb.ensemble.SoftmaxSum`.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind != "el" and n_networks < 1:
        raise ValueError(f"n_networks must be at least 1, got {n_networks}")
    parts: tuple[str | None, ...] = {
        "el": ENSEMBLE_PARTS, "ftl": ("full",) * n_networks, "baseline": (None,) * n_networks,
    }[kind]
    networks = []
    for k, part in enumerate(parts):
        with seeded(seed, k):
            networks.append(PartNetwork(part=part, n_classes=n_classes, width=width,
                                        in_chans=in_chans, head_activation=head_activation,
                                        standardize=standardize))
    return Members(networks)


class _Classifier(nn.Module):
    """A part network's extractor and expression head (see :func:`expression_network`)."""

    def __init__(self, network: PartNetwork) -> None:
        super().__init__()
        self.features, self.standardize, self.head = (network.features, network.standardize,
                                                      network.head)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, F)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.standardize(features)).unsqueeze(1)  # (B, 1, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))  # (B, 1, C)

    def cam_layer(self, member: int = 0, image_size: int | None = None) -> nn.Module:
        member_index(member, 1)
        return self.features.last_conv


def expression_network(model: PartNetwork | Members) -> nn.Module:
    """The network(s) as used for expressions: extractor and expression head, without the
    landmark heads, sharing their modules; output (B, M, C). The paper's complexity figures
    (Sec. IV-E) count this."""
    if isinstance(model, PartNetwork):
        return _Classifier(model)
    if isinstance(model, Members) and all(isinstance(n, PartNetwork) for n in model.networks):
        return Members([_Classifier(n) for n in model.networks])
    raise TypeError(f"expected a PartNetwork or Members of PartNetworks, got "
                    f"{type(model).__name__}")


def normalise_landmarks(points: np.ndarray, size: tuple[int, int], part: str = "full"
                        ) -> np.ndarray:
    """(..., 68, 2) pixel (x, y) -> (..., 2K) ``x/W, y/H`` of the part's points.

    Args:
        points: 68-point landmarks in pixels of images of ``size``.
        size: (height, width) of the images.
        part: a key of :data:`LANDMARK_SETS`.
    """
    if part not in LANDMARK_SETS:
        raise ValueError(f"part must be one of {list(LANDMARK_SETS)}, got {part!r}")
    pts = np.asarray(points, dtype=np.float32)
    if pts.ndim < 2 or pts.shape[-2:] != (N_LANDMARKS, 2):
        raise ValueError(f"expected (..., {N_LANDMARKS}, 2) landmarks, got shape {pts.shape}")
    h, w = size
    sel = pts[..., list(LANDMARK_SETS[part]), :] / np.array([w, h], dtype=np.float32)
    return sel.reshape(*sel.shape[:-2], -1)


def pixel_landmarks(coords: np.ndarray | torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(..., 2K) normalised coordinates -> (..., K, 2) pixel (x, y) in images of (height,
    width) ``size``; inverse of :func:`normalise_landmarks`."""
    arr = np.asarray(coords.detach().cpu() if isinstance(coords, torch.Tensor) else coords,
                     dtype=np.float32)
    if arr.shape[-1] % 2:
        raise ValueError(f"expected (..., 2K) coordinates, got shape {arr.shape}")
    h, w = size
    return arr.reshape(*arr.shape[:-1], -1, 2) * np.array([w, h], dtype=np.float32)


def paper_layers(network: PartNetwork) -> int:
    """Layers of the expression network as the paper counts them ("24 layers", Sec. I):
    convolutions, BatchNorms, max-pools, the global average pool and dense layers, not the
    activations (8 + 8 + 4 + 1 + 3 = 24)."""
    kinds = (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Linear)
    return sum(isinstance(m, kinds) for m in expression_network(network).modules())


def complexity_summary(*, n_classes: int = 8, image_size: int = 160, in_chans: int = 3,
                       width: float = 1.0, n_networks: int = 5) -> pd.DataFrame:
    """Sec. III-C and IV-E complexity of every component, both parameter conventions.

    Rows: ``extractor``, ``expression head``, ``landmark head (<set>)`` for every set of
    :data:`LANDMARK_SETS`, ``sub-network`` (extractor + expression head) and ``ensemble``
    (``n_networks`` sub-networks). Columns: ``params`` (trainable, PyTorch), ``params_keras``
    (plus BatchNorm moving statistics, as Keras' ``summary`` counts), ``flops`` (torch
    counter), ``flops_formula`` (eqs. 7-9, max-pooling included) and ``storage_mb`` (float32,
    MiB, parameters and statistics). Heads are measured on the (F,) feature vector.
    """
    network = PartNetwork(part=None, n_classes=n_classes, width=width, in_chans=in_chans)
    image = (in_chans, image_size, image_size)
    feature = (network.features.out_features,)
    parts: dict[str, tuple[nn.Module, tuple[int, ...]]] = {
        "extractor": (network.features, image), "expression head": (network.head, feature)}
    for name in LANDMARK_SETS:
        head = PartNetwork(part=name, n_classes=n_classes, width=width,
                           in_chans=in_chans).landmark_head
        parts[f"landmark head ({name})"] = (head, feature)
    parts["sub-network"] = (expression_network(network), image)
    rows = {name: {"params": count_parameters(module),
                   "params_keras": count_keras_parameters(module),
                   "flops": flops(module, shape),
                   "flops_formula": conv_flops_formula(module, shape),
                   "storage_mb": storage_mb(module)}
            for name, (module, shape) in parts.items()}
    rows["ensemble"] = {k: n_networks * v for k, v in rows["sub-network"].items()}
    return pd.DataFrame.from_dict(rows, orient="index")
