"""torchvision classification backbones with a C-way head and a width multiplier.

Gan, Chen and Xu (PRL 2019, Sec. 3.1) use VGG16 with its last fully connected layer replaced
by a C-way layer, initialised from VGG-Face; Zhou, Xie and Tian (Table 6) compare RI18
(ResNet-18 from ImageNet), ResNet34, VGG16, DenseNet121 and R18 (ResNet-18 from MS-Celeb-1M).
Every builder here returns a :class:`Backbone`: ``forward(x)`` gives logits (B, 1, C), the
torchvision network is ``.net`` (so a ResNet's ``conv1, bn1, relu, maxpool, layer1..layer4,
avgpool, fc`` are ``model.net.<name>``), ``.cam_layer()`` is the layer Grad-CAM explains and
``.head`` the C-way linear layer.

Width. ``width=1.0`` (the default) is exactly torchvision's architecture; the tests check the
parameter counts and state-dict shapes against torchvision's own builders with the same head.
Other widths multiply every channel count by ``width`` (rounded, at least 1), built from
torchvision's own parts, so a CPU can train the same shapes:

- ResNet: the stem and the four stages of :class:`~torchvision.models.resnet.BasicBlock` are
  rebuilt with ``round(w * 64), round(w * 128), round(w * 256), round(w * 512)`` planes by
  the ResNet's own ``_make_layer``; depths (2, 2, 2, 2) and (3, 4, 6, 3) are unchanged.
- VGG16: :func:`torchvision.models.vgg.make_layers` on ``cfgs["D"]`` with scaled channel
  counts. Its classifier's two hidden layers shrink too, to ``round(w * 4096)`` units
  (otherwise nearly all parameters of a narrow VGG16, 120M of them, would sit in a 4096-wide
  classifier); the 7x7 adaptive pooling and the dropout are kept.
- DenseNet121: ``growth_rate = round(w * 32)`` and ``num_init_features = round(w * 64)`` of
  :class:`~torchvision.models.densenet.DenseNet`; ``block_config`` (6, 12, 24, 16) and
  ``bn_size`` 4 are unchanged, so the bottleneck width 4 * growth rate scales with it.

Rebuilt layers are initialised as torchvision initialises them (He-normal convolutions; for
VGG, N(0, 0.01) linear layers and zero biases). Initialise every member of an ensemble under
its own seed with :meth:`fernb.models.members.Members.build`.

``in_chans=1`` replaces only the first convolution (1 input channel, same output channels).

Pre-trained weights are read from a local file; nothing is ever downloaded. ``weights`` is
the path of a file written by ``torch.save`` holding the *torchvision* network's state dict
(key names as in ``torchvision.models.vgg16().state_dict()``), optionally wrapped as
``{"state_dict": ...}`` or ``{"model": ...}`` and with a ``module.`` (DataParallel) or
``net.`` (a saved :class:`Backbone`) prefix on every key. The head is loaded only when its
shape matches ``n_classes``; otherwise it keeps its fresh initialisation, which is how a face
recognition or ImageNet network is fine-tuned for expressions. Any other missing, unexpected
or mis-shaped key raises an error naming the keys. Known files:

- MS-Celeb-1M ResNet-18 (Zhou et al.'s R18): the ``resnet18_msceleb.pth`` that FER code
  such as DAN's distributes is ``{"state_dict": <torchvision resnet18 state dict>}``:
  ``resnet18(weights="resnet18_msceleb.pth")``.
- ImageNet (Zhou et al.'s RI18 and the others): torchvision's own files, e.g.
  ``resnet18-f37072fd.pth`` or ``densenet121-a639ec97.pth`` from ``~/.cache/torch/hub/
  checkpoints``, copied there on a machine with internet access. DenseNet files in
  torchvision's older key format (``...denselayer1.norm.1.weight``) are renamed as
  torchvision renames them.
- VGG-Face (Parkhi et al. 2015; Gan et al.'s initialisation) is distributed for Caffe,
  MatConvNet and Torch7, with layers ``conv1_1 ... conv5_3, fc6, fc7, fc8``. Convert it once
  to a torchvision ``vgg16`` state dict with :func:`vgg_face_state_dict`, whose table maps
  each layer to its torchvision key, and ``torch.save`` the result. VGG-Face expects RGB
  224x224 inputs with its own mean subtracted (on a 0..255 scale: R 129.186, G 104.762,
  B 93.594) and no division by a standard deviation; :class:`VGGFaceInput` is that preparation
  as a layer to put in front of the network.

Weights fit only the architecture they were trained for: ``width=1.0`` and, for the files
above, ``in_chans=3`` (feed grayscale datasets as 3 channels, ``FaceDataset(channels=3)``).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.densenet import DenseNet
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.models.vgg import VGG, cfgs, make_layers

from fernb.models.contract import member_index
from fernb.models.sizes import check_sizes, scaled

WeightsPath = str | Path | None

# VGG-Face's layer names -> torchvision vgg16 keys (without ".weight" / ".bias").
VGG_FACE_LAYERS: dict[str, str] = {
    "conv1_1": "features.0", "conv1_2": "features.2",
    "conv2_1": "features.5", "conv2_2": "features.7",
    "conv3_1": "features.10", "conv3_2": "features.12", "conv3_3": "features.14",
    "conv4_1": "features.17", "conv4_2": "features.19", "conv4_3": "features.21",
    "conv5_1": "features.24", "conv5_2": "features.26", "conv5_3": "features.28",
    "fc6": "classifier.0", "fc7": "classifier.3", "fc8": "classifier.6",
}

# torchvision's renaming of its older DenseNet files ("norm.1.weight" -> "norm1.weight").
_DENSENET_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
                               r"((?:[12])\.(?:weight|bias|running_mean|running_var))$")


class Backbone(nn.Module):
    """A torchvision ResNet, VGG or DenseNet whose ``forward`` returns logits (B, 1, C).

    Args:
        net: the torchvision network (``.net``).
        arch: builder name, e.g. ``"resnet18"``.
        cam_layer: dotted path in ``net`` of the layer Grad-CAM explains.
        head: dotted path in ``net`` of the C-way linear layer.

    ``forward_features`` is the network up to its last feature map (ResNet ``layer4``, VGG and
    DenseNet ``features``), ``forward_head`` the rest, as torchvision's ``forward`` runs them.
    """

    def __init__(self, net: nn.Module, *, arch: str, cam_layer: str, head: str) -> None:
        super().__init__()
        if not isinstance(net, (ResNet, VGG, DenseNet)):
            raise TypeError(f"net must be a torchvision ResNet, VGG or DenseNet, got "
                            f"{type(net).__name__}")
        self.net = net
        self.arch = arch
        self._cam_path, self._head = cam_layer, head

    def cam_layer(self, member: int = 0, image_size: int | None = None) -> nn.Module:
        """The last convolutional block, for :func:`fernb.explain.gradcam`: ResNet
        ``layer4``, VGG ``features[-1]`` (its last max-pool), DenseNet ``features.norm5``
        (pytorch-grad-cam's recommended layers), whatever ``image_size``."""
        member_index(member, 1)
        return self.net.get_submodule(self._cam_path)

    @property
    def head(self) -> nn.Linear:
        """The C-way linear layer (ResNet ``fc``, VGG ``classifier[6]``, DenseNet
        ``classifier``), e.g. for its own learning rate."""
        return self.net.get_submodule(self._head)

    @property
    def head_keys(self) -> tuple[str, str]:
        """The head's state-dict keys in ``net``."""
        return f"{self._head}.weight", f"{self._head}.bias"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map (B, C', H', W')."""
        net = self.net
        if isinstance(net, ResNet):
            x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
            return net.layer4(net.layer3(net.layer2(net.layer1(x))))
        return net.features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Pooling and the classifier: logits (B, 1, C)."""
        net = self.net
        if isinstance(net, ResNet):
            return net.fc(torch.flatten(net.avgpool(features), 1)).unsqueeze(1)
        if isinstance(net, VGG):
            return net.classifier(torch.flatten(net.avgpool(features), 1)).unsqueeze(1)
        pooled = F.adaptive_avg_pool2d(F.relu(features), 1)  # DenseNet
        return net.classifier(torch.flatten(pooled, 1)).unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))  # (B, 1, C)


def _check(n_classes: int, in_chans: int, width: float) -> None:
    check_sizes(n_classes=n_classes, in_chans=in_chans, width=width)
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")


def _he_init(module: nn.Module, *, mode: str, linear_std: float | None = None) -> None:
    """torchvision's initialisation of rebuilt layers: He-normal convolutions with ``mode``
    and zero biases; with ``linear_std``, N(0, std) linear weights and zero biases (VGG)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0, linear_std)
            nn.init.zeros_(m.bias)


def _resnet(layers: list[int], *, n_classes: int, in_chans: int, width: float) -> ResNet:
    if width == 1.0 and in_chans == 3:
        return ResNet(BasicBlock, layers, num_classes=n_classes)
    with torch.device("meta"):  # a skeleton: every part with parameters is rebuilt below
        net = ResNet(BasicBlock, layers, num_classes=n_classes)
    planes = [scaled(64 * 2**i, width) for i in range(4)]
    net.inplanes = planes[0]
    net.conv1 = nn.Conv2d(in_chans, planes[0], kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(planes[0])
    net.layer1 = net._make_layer(BasicBlock, planes[0], layers[0])
    net.layer2 = net._make_layer(BasicBlock, planes[1], layers[1], stride=2)
    net.layer3 = net._make_layer(BasicBlock, planes[2], layers[2], stride=2)
    net.layer4 = net._make_layer(BasicBlock, planes[3], layers[3], stride=2)
    net.fc = nn.Linear(planes[3] * BasicBlock.expansion, n_classes)
    _he_init(nn.ModuleList([net.conv1, net.layer1, net.layer2, net.layer3, net.layer4]),
             mode="fan_out")
    return net


def _build(arch: str, net: nn.Module, cam_layer: str, head: str, weights: WeightsPath
           ) -> Backbone:
    model = Backbone(net, arch=arch, cam_layer=cam_layer, head=head)
    if weights is not None:
        load_weights(model, weights)
    return model


def resnet18(*, n_classes: int = 7, in_chans: int = 3, width: float = 1.0,
             weights: WeightsPath = None) -> Backbone:
    """ResNet-18 (torchvision) with a ``n_classes``-way ``fc``; see the module docstring for
    ``width`` and ``weights`` (e.g. MS-Celeb-1M, Zhou et al.'s R18)."""
    _check(n_classes, in_chans, width)
    net = _resnet([2, 2, 2, 2], n_classes=n_classes, in_chans=in_chans, width=width)
    return _build("resnet18", net, "layer4", "fc", weights)


def resnet34(*, n_classes: int = 7, in_chans: int = 3, width: float = 1.0,
             weights: WeightsPath = None) -> Backbone:
    """ResNet-34 (torchvision) with a ``n_classes``-way ``fc``."""
    _check(n_classes, in_chans, width)
    net = _resnet([3, 4, 6, 3], n_classes=n_classes, in_chans=in_chans, width=width)
    return _build("resnet34", net, "layer4", "fc", weights)


def vgg16(*, n_classes: int = 7, in_chans: int = 3, width: float = 1.0,
          weights: WeightsPath = None, dropout: float = 0.5,
          batch_norm: bool = False) -> Backbone:
    """VGG16 (torchvision, configuration "D") with a ``n_classes``-way last layer, as Gan et
    al.'s base architecture (Sec. 3.1; dropout 0.5, Sec. 4.2). VGG16 and VGG-Face have no
    BatchNorm; ``batch_norm=True`` gives torchvision's ``vgg16_bn``, which also trains from
    scratch."""
    _check(n_classes, in_chans, width)
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if width == 1.0 and in_chans == 3:
        net = VGG(make_layers(cfgs["D"], batch_norm=batch_norm), num_classes=n_classes,
                  dropout=dropout)
    else:
        with torch.device("meta"):  # a skeleton: features and classifier are rebuilt below
            net = VGG(nn.Sequential(), num_classes=n_classes, init_weights=False)
        config = [v if v == "M" else scaled(v, width) for v in cfgs["D"]]
        net.features = make_layers(config, batch_norm=batch_norm)
        net.features[0] = nn.Conv2d(in_chans, config[0], kernel_size=3, padding=1)
        hidden, last = scaled(4096, width), config[-2]
        net.classifier = nn.Sequential(
            nn.Linear(last * 7 * 7, hidden), nn.ReLU(True), nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(p=dropout),
            nn.Linear(hidden, n_classes))
        _he_init(net, mode="fan_out", linear_std=0.01)
    return _build("vgg16", net, f"features.{len(net.features) - 1}", "classifier.6", weights)


def densenet121(*, n_classes: int = 7, in_chans: int = 3, width: float = 1.0,
                weights: WeightsPath = None) -> Backbone:
    """DenseNet-121 (torchvision) with a ``n_classes``-way ``classifier``."""
    _check(n_classes, in_chans, width)
    init_features = scaled(64, width)
    net = DenseNet(growth_rate=scaled(32, width), block_config=(6, 12, 24, 16),
                   num_init_features=init_features, num_classes=n_classes)
    if in_chans != 3:
        net.features.conv0 = nn.Conv2d(in_chans, init_features, kernel_size=7, stride=2,
                                       padding=3, bias=False)
        nn.init.kaiming_normal_(net.features.conv0.weight)
    return _build("densenet121", net, "features.norm5", "classifier", weights)


# VGG-Face's mean pixel (R, G, B) on a 0..255 scale (Parkhi et al. 2015).
VGG_FACE_MEAN: tuple[float, float, float] = (129.186, 104.762, 93.594)


class VGGFaceInput(nn.Module):
    """VGG-Face's input preparation as a layer: RGB images in [0, 1] (B, 3, H, W) are scaled
    to 0..255 and the mean pixel :data:`VGG_FACE_MEAN` is subtracted (no division by a
    standard deviation). Put it in front of a network loaded with VGG-Face weights."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(VGG_FACE_MEAN).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"VGG-Face takes RGB batches (B, 3, H, W), got shape "
                             f"{tuple(x.shape)}; use FaceDataset(channels=3)")
        return x * 255.0 - self.mean


BACKBONES: dict[str, Callable[..., Backbone]] = {
    "resnet18": resnet18, "resnet34": resnet34, "vgg16": vgg16, "densenet121": densenet121,
}


def build_backbone(name: str, **kwargs: Any) -> Backbone:
    """The :data:`BACKBONES` builder ``name`` called with keyword arguments."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name](**kwargs)


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or \
            not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} holds no state dict (a mapping of parameter names to "
                         f"tensors, optionally under 'state_dict' or 'model')")
    state = dict(obj)
    for prefix in ("module.", "net."):
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return {_DENSENET_OLD_KEY.sub(r"\1\2", k): v for k, v in state.items()}


def load_weights(model: Backbone, path: str | Path) -> list[str]:
    """Load a local state-dict file into ``model.net`` (see the module docstring).

    Returns:
        The keys left at their fresh initialisation: the head's, when the file's head has
        another number of classes; otherwise none.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file holds no state dict, or any key other than the head's is
            missing, unexpected or of another shape.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist (weights are read from "
                                f"local files only, nothing is downloaded)")
    state = _unwrap(torch.load(path, map_location="cpu", weights_only=True), path)
    own = model.net.state_dict()
    skipped = [k for k in model.head_keys if k in state and state[k].shape != own[k].shape]
    for k in skipped:
        del state[k]
    # Files older than BatchNorm's num_batches_tracked lack it; BatchNorm then fills it in.
    missing = sorted(k for k in set(own) - set(state) - set(skipped)
                     if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if state[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
        problems = [f"{len(v)} {name}: {few(v)}" for name, v in
                    (("missing", missing), ("unexpected", unexpected),
                     ("of another shape", shapes)) if v]
        raise ValueError(f"{path} does not fit {model.arch} (width and in_chans as built): "
                         f"{'; '.join(problems)}. Pre-trained files fit width=1.0, in_chans=3")
    model.net.load_state_dict(state, strict=not skipped)
    return skipped


def vgg_face_state_dict(layers: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torchvision ``vgg16`` state dict from VGG-Face's layers (:data:`VGG_FACE_LAYERS`).

    Args:
        layers: ``"<layer>.weight"`` and ``"<layer>.bias"`` tensors for every layer of
            :data:`VGG_FACE_LAYERS`, as read from a VGG-Face release (e.g. ``conv1_1.weight``
            of shape (64, 3, 3, 3)). Fully connected layers stored as convolutions (``fc6``
            as (4096, 512, 7, 7)) are flattened to (out, in); torchvision's flattening of the
            (512, 7, 7) feature map has the same channel-major order.

    The caller must make sure the first convolution's input channels are in RGB order (Caffe
    releases store BGR filters: flip them with ``weight.flip(1)``).
    """
    state = {}
    for name, key in VGG_FACE_LAYERS.items():
        for part in ("weight", "bias"):
            source = f"{name}.{part}"
            if source not in layers:
                raise KeyError(f"VGG-Face layer {source!r} is missing; expected the layers "
                               f"{list(VGG_FACE_LAYERS)}")
            value = layers[source]
            if part == "weight" and name.startswith("fc"):
                value = value.reshape(value.shape[0], -1)
            state[f"{key}.{part}"] = value
    return state
