"""Transfer learning from facial landmark localisation (FLL) to expressions (FER).

Wadhawan and Gandhi, IEEE TAI 2023, Sec. III-D. Every FTL and EL network
(:class:`fernb.models.parts.PartNetwork`) is trained in three stages with :func:`fernb.train.fit`:

1. FLL pre-training (:func:`pretrain_landmarks`): extractor and landmark head regress the
   part's normalised landmark coordinates with the L1 loss of eq. 1
   (:func:`fernb.losses.member_l1`), lr 1e-2;
2. expression head (:func:`train_head`): the extractor is frozen (BatchNorm statistics
   included) and the expression head is trained with cross-entropy (eq. 2), lr 1e-2, "for a
   few epochs";
3. fine-tuning (:func:`finetune`): everything but the landmark head is trained at lr 1e-4.

:func:`train_transfer` runs the three in order; its landmark set may be another set of faces
than the expression set (``landmarks=``: many faces with landmarks, few with expression
labels). :func:`train_expressions` runs stages 2 and 3 alone, on a pre-trained network or,
as a control, on one with random weights. The Baseline network is trained directly on
expressions at lr 1e-2 (:func:`train_direct`). All stages use Adam (beta1 0.9, beta2 0.999,
eps 1e-7), mini-batches of 32 and keep the weights of the epoch with the lowest validation
loss. Sec. V-B compares the landmark error of the localisation head, kept fixed, before and
after fine-tuning (:func:`landmark_errors`; :attr:`TransferResult.error_before` /
``error_after``).

Inputs follow Sec. III-A/B and the authors' notebook: CLAHE (:func:`equalized`), grayscale
repeated to three channels and scaled to [-1, 1] (:func:`inputs`); landmark targets are
``x / W, y / H`` of the part's points (:func:`fernb.models.parts.normalise_landmarks`).
Augmentation (:func:`paper_augmentation`: flip, rotation, translation) moves the landmark
targets with the image, as the paper says; the authors' notebook instead re-ran the dlib
landmark detector on every augmented image.

Choices where the paper is silent (fields of :class:`TransferConfig` unless said):

- Epochs: the paper gives approximate budgets per dataset (:data:`PAPER_EPOCHS`), one for the
  head and fine-tuning stages together; ``head_epochs=10`` ("a few epochs") and the rest of
  the budget for fine-tuning. The authors' notebook defines an epoch as 30 steps of 32
  class-balanced, augmented images; here an epoch is one pass over the training set.
- "Stop training when the validation loss saturates": early stopping with ``patience=20``
  epochs; the weights of the best epoch are kept (as the authors' ModelCheckpoint does).
  ``stop_on="accuracy"`` watches the validation accuracy instead in the expression stages
  (direct training, stages 2 and 3): on a few labelled faces a network's loss on new people
  is often lowest after the first epoch, before it is confident and while it is still at
  the majority class, and grows with its confidence while its accuracy rises.
  Stage 2 has its own ``head_patience``: on cached features its epochs cost almost nothing,
  so it can run to convergence.
- The landmark head is frozen in stages 2 and 3 (the paper replaces it and puts it back for
  Sec. V-B), so it is exactly the stage-1 head when the error is measured again.
- Stage 2 without augmentation (no ``augment`` factory, or ``head_augment=False``) trains the
  head on the frozen extractor's features of the images, computed once: the extractor and its
  BatchNorm statistics are fixed, so this is the same computation as running the extractor
  at every step, only cheaper; with ``head_copies`` the features of that many augmented
  copies of the images are computed once as well (:func:`cached_features`). A network built
  with ``standardize=True`` has its feature standardisation set from these training
  features first (:class:`fernb.models.parts.Standardize`).
- During fine-tuning the BatchNorm statistics stay those of stage 1
  (``finetune_statistics="fixed"``): the authors' Keras code calls the extractor with
  ``training=False`` when it builds the expression model, which keeps them fixed even after
  unfreezing; ``"update"`` lets PyTorch update them as usual.
- How far fine-tuning moves the weights depends on the rate and the number of steps (an Adam
  step moves a weight by at most about the rate; with noisy gradients the distance grows
  more like the rate times the square root of the steps). :func:`finetune_travel` measures
  it at several rates and :func:`choose_rate` picks the rate whose travel is a chosen share
  of stage 1's (:func:`relative_change` of the convolution kernels).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fernb.complexity import eval_mode
from fernb.data.datasets import FaceDataset
from fernb.device import resolve_device
from fernb.data.transforms import (LandmarkAugmentation, PairedAugmentation, WarpSets,
                                   apply_clahe)
from fernb.landmarks import subset_flip_permutation
from fernb.losses import member_l1
from fernb.models.members import Members
from fernb.models.parts import (ENSEMBLE_PARTS, LANDMARK_SETS, PartNetwork, Standardize,
                                normalise_landmarks)
from fernb.train import FitConfig, History, adam, fit, freeze

Augment = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]
# Called as factory(part=...) with a part, or None for class labels; returns fit's augment(x, y).
AugmentFactory = Callable[..., Augment]

# dataset -> (Baseline epochs, FLL pre-training epochs, head + fine-tuning epochs), Sec. III-D3.
PAPER_EPOCHS: dict[str, tuple[int, int, int]] = {
    "ckplus": (400, 100, 300), "jaffe": (300, 100, 200), "sfew": (400, 200, 200)}


STATISTICS = ("fixed", "update")
STOP_ON = ("loss", "accuracy")


@dataclass(frozen=True)
class TransferConfig:
    """Hyper-parameters of the three stages and of direct training (Sec. III-D).

    Defaults are the paper's for CK+ (the worst case it reports complexity for);
    :meth:`for_dataset` gives the JAFFE and SFEW epoch budgets.

    Attributes:
        landmark_lr, landmark_epochs: stage 1, FLL pre-training (1e-2; 100 epochs on CK+).
        head_lr, head_epochs: stage 2, expression head on the frozen extractor (1e-2; "a few
            epochs": 10).
        finetune_lr, finetune_epochs: stage 3 (1e-4; 300 - 10 epochs on CK+).
        direct_lr, direct_epochs: the Baseline's direct training (1e-2; 400 epochs on CK+).
        batch_size: mini-batch size (32).
        patience: early stopping after this many epochs without a better validation score
            (stages 1 and 3, direct training); None trains every epoch.
        head_patience: the same for stage 2 (None: every epoch).
        betas, eps: Adam's (0.9, 0.999) and 1e-7 (Keras' default, as the paper states).
        head_augment: augment the images of stage 2 too (the paper augments all training
            data); False trains the head on features computed once (see the module notes).
        head_copies: with ``head_augment=False``, the features are those of the training
            images and of this many augmented copies of them, computed once, so that the
            head of stage 2 sees the augmentation stages 1 and 3 see.
        stop_on: the validation score of the expression stages' early stopping and kept
            epoch: ``"loss"`` (the paper) or ``"accuracy"``; stage 1 watches its loss.
        finetune_statistics: ``"fixed"`` keeps the BatchNorm statistics of stage 1 during
            fine-tuning (the authors' Keras code), ``"update"`` lets them change.
        epoch_images: an epoch shows the training set ``round(epoch_images / N)`` times (at
            least once), so that an epoch is about this many images whatever the set's size
            N: the authors' notebook makes an epoch 30 steps of 32 images (960); None: one
            pass.
    """

    landmark_lr: float = 1e-2
    landmark_epochs: int = 100
    head_lr: float = 1e-2
    head_epochs: int = 10
    finetune_lr: float = 1e-4
    finetune_epochs: int = 290
    direct_lr: float = 1e-2
    direct_epochs: int = 400
    batch_size: int = 32
    patience: int | None = 20
    head_patience: int | None = 20
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-7
    head_augment: bool = True
    head_copies: int = 0
    stop_on: str = "loss"
    finetune_statistics: str = "fixed"
    epoch_images: int | None = None

    def __post_init__(self) -> None:
        for name in ("landmark_lr", "head_lr", "finetune_lr", "direct_lr", "eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("landmark_epochs", "head_epochs", "finetune_epochs", "direct_epochs",
                     "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.head_copies < 0:
            raise ValueError(f"head_copies must be at least 0, got {self.head_copies}")
        for name in ("patience", "head_patience", "epoch_images"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 or None, got {value}")
        if self.stop_on not in STOP_ON:
            raise ValueError(f"stop_on must be one of {STOP_ON}, got {self.stop_on!r}")
        if self.finetune_statistics not in STATISTICS:
            raise ValueError(f"finetune_statistics must be one of {STATISTICS}, got "
                             f"{self.finetune_statistics!r}")

    @classmethod
    def for_dataset(cls, name: str, **changes: Any) -> TransferConfig:
        """The paper's epoch budgets for ``"ckplus"``, ``"jaffe"`` or ``"sfew"``, with
        ``changes`` to any field on top."""
        if name not in PAPER_EPOCHS:
            raise ValueError(f"the paper gives epochs for {sorted(PAPER_EPOCHS)}, got {name!r}")
        direct, landmark, transfer = PAPER_EPOCHS[name]
        head = changes.get("head_epochs", cls.head_epochs)
        epochs = dict(direct_epochs=direct, landmark_epochs=landmark,
                      finetune_epochs=transfer - head)
        return cls(**{**epochs, **changes})


def equalized(dataset: FaceDataset, *, clip_limit: float = 2.0,
              tile_grid_size: int = 8) -> FaceDataset:
    """The dataset with every image contrast-enhanced by CLAHE (Sec. III-B; the authors'
    clip limit 2.0 and 8x8 tiles). Real-data readers can do this before face detection
    (``clahe=True``), as the paper does; this is for data that come already cropped."""
    images = np.stack([apply_clahe(image, clip_limit=clip_limit, tile_grid_size=tile_grid_size)
                       for image in dataset.images])
    return replace(dataset, images=images)


def inputs(dataset: FaceDataset, *, channels: int = 3) -> torch.Tensor:
    """(N, channels, H, W) float images in [-1, 1]: grayscale repeated to three channels
    (Sec. III-A) and scaled as the authors' ``(x / 255 - 0.5) * 2``. RGB datasets stay in
    colour; the paper's input needs them loaded with ``grayscale=True``."""
    x, _ = dataset.with_options(channels=channels, transform=None).tensors()
    return x.mul_(2).sub_(1)


def _require_landmarks(dataset: FaceDataset) -> np.ndarray:
    if dataset.landmarks is None:
        raise ValueError(f"dataset {dataset.name!r} has no landmarks; FLL pre-training needs "
                         f"(N, 68, 2) landmarks (e.g. fernb.data.transforms.detect_landmarks)")
    return dataset.landmarks


def landmark_targets(dataset: FaceDataset, part: str) -> torch.Tensor:
    """(N, 2K) stage-1 targets: the part's landmarks as ``x / W, y / H`` (NaN where the
    dataset has none)."""
    return torch.from_numpy(normalise_landmarks(_require_landmarks(dataset),
                                                dataset.image_size, part))


def epoch_set(data: TensorDataset, epoch_images: int | None) -> TensorDataset:
    """``data`` repeated ``round(epoch_images / len(data))`` times (at least once): one epoch
    of about ``epoch_images`` images (None: ``data`` itself)."""
    if epoch_images is None:
        return data
    repeats = max(1, round(epoch_images / len(data)))
    if repeats == 1:
        return data
    return TensorDataset(*(t.repeat(repeats, *([1] * (t.ndim - 1))) for t in data.tensors))


def _annotated(targets: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(targets).all(dim=1)


def landmark_dataset(dataset: FaceDataset, part: str, *, channels: int = 3,
                     x: torch.Tensor | None = None) -> TensorDataset:
    """Stage-1 data (x, (N, 2K) targets) for one part; images without landmarks (NaN rows)
    are left out.

    Args:
        x: the images as :func:`inputs` makes them, to share one tensor between stages.
    """
    targets = landmark_targets(dataset, part)
    keep = _annotated(targets)
    if not keep.any():
        raise ValueError(f"no image of {dataset.name!r} has landmarks for part {part!r}")
    x = inputs(dataset, channels=channels) if x is None else x
    if keep.all():
        return TensorDataset(x, targets)
    return TensorDataset(x[keep], targets[keep])


def expression_dataset(dataset: FaceDataset, *, channels: int = 3,
                       x: torch.Tensor | None = None) -> TensorDataset:
    """Stage-2/3 and Baseline data: (x, labels) with x from :func:`inputs`."""
    x = inputs(dataset, channels=channels) if x is None else x
    return TensorDataset(x, torch.from_numpy(dataset.labels))


class _NormalisedLandmarks:
    """Applies a pixel-coordinate landmark augmentation to (B, 2K) ``x / W, y / H`` targets."""

    def __init__(self, augmentation: LandmarkAugmentation) -> None:
        self.augmentation = augmentation

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = x.shape[-2:]
        scale = torch.tensor([w, h], dtype=y.dtype, device=y.device)
        x, points = self.augmentation(x, y.reshape(len(y), -1, 2) * scale)  # (B, K, 2) px
        return x, (points / scale).reshape(y.shape)

    def spec(self) -> dict[str, Any]:
        """What the augmentation does, for a stored run's key (:mod:`fernb.specs`)."""
        return {"augmentation": "normalised landmarks", "pixels": self.augmentation.spec()}

    def __repr__(self) -> str:
        return f"_NormalisedLandmarks({self.augmentation!r})"


def paper_augmentation(size: int, *, part: str | None = None, flip: float = 0.5,
                       degrees: float = 15.0, shift: float = 0.05) -> Augment:
    """Sec. III-D augmentation with the ranges of the authors' notebook, drawn per image:
    horizontal flip (p = 0.5), rotation uniform over whole degrees in [-15, 15] and
    translation uniform over whole pixels within +-5% of the side, about the image centre.
    The notebook's shear of 0.05 degrees (Keras' ``shear_range`` is in degrees) moves no point
    by more than 0.14 px at 160 px and is left out. Built on
    :class:`fernb.data.transforms.LandmarkAugmentation` (reflection padding).

    Args:
        size: image side in pixels (translations are whole pixels).
        part: None for stages 2-3 and the Baseline (``y`` is class labels and passes
            through); a key of :data:`~fernb.models.parts.LANDMARK_SETS` for stage 1, where
            ``y`` holds that part's (B, 2K) normalised coordinates, moved with the image and
            swapped left for right on a flip (eye corner 36 becomes the mirrored 45).
    """
    if part is not None and part not in LANDMARK_SETS:
        raise ValueError(f"part must be one of {list(LANDMARK_SETS)} or None, got {part!r}")
    if size < 1 or degrees < 0 or not 0 <= shift < 1:
        raise ValueError(f"need size >= 1, degrees >= 0 and 0 <= shift < 1; got size={size}, "
                         f"degrees={degrees}, shift={shift}")
    steps = math.floor(degrees)
    pixels = round(shift * size)
    warp = WarpSets(angles=tuple(math.radians(d) for d in range(-steps, steps + 1)),
                    skews=(0.0,), scales=(1.0,), translations=tuple(range(-pixels, pixels + 1)))
    if part is None:
        return PairedAugmentation(targets=("label",), flip=flip, warp=warp)
    permutation = subset_flip_permutation(LANDMARK_SETS[part])
    return _NormalisedLandmarks(LandmarkAugmentation(flip=flip, warp=warp,
                                                     flip_permutation=permutation))


@torch.no_grad()
def predict_landmarks(network: PartNetwork, x: torch.Tensor, *, batch_size: int = 256
                      ) -> torch.Tensor:
    """Normalised (N, 2K) landmark predictions of ``x`` (on the network's device), in eval
    mode; the network's train/eval modes are restored."""
    device = next(network.parameters()).device
    with eval_mode(network):
        out = [network.forward_landmarks(x[i:i + batch_size].to(device)).float().cpu()
               for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def image_errors(network: PartNetwork, dataset: FaceDataset, *, channels: int = 3,
                 batch_size: int = 256) -> dict[str, np.ndarray]:
    """Each image's mean absolute landmark error (eq. 1) per part, in units of the image
    side, as :func:`landmark_errors` averages them: ``{part: (N,)}`` over the images with
    landmarks, one entry for a part network, every part and ``"full"`` for a 68-point one."""
    if network.part is None:
        raise ValueError("the Baseline network (part=None) has no landmark head")
    targets = landmark_targets(dataset, network.part)
    keep = _annotated(targets)
    if not keep.any():
        raise ValueError(f"no image of {dataset.name!r} has landmarks")
    pred = predict_landmarks(network, inputs(dataset, channels=channels)[keep],
                             batch_size=batch_size)
    diff = (pred - targets[keep]).abs().view(len(pred), -1, 2)  # (N, K, 2)
    if network.part != "full":
        return {network.part: diff.mean((1, 2)).numpy()}
    errors = {part: diff[:, list(LANDMARK_SETS[part])].mean((1, 2)).numpy()
              for part in ENSEMBLE_PARTS}
    errors["full"] = diff.mean((1, 2)).numpy()
    return errors


def landmark_errors(network: PartNetwork, dataset: FaceDataset, *, channels: int = 3,
                    batch_size: int = 256) -> dict[str, float]:
    """Mean absolute difference (eq. 1) between predicted and ground-truth landmarks, in units
    of the image side (multiply by the side for pixels), over images with landmarks (Sec. V-B).

    Returns:
        ``{part: error}`` for a part network; for a 68-point network one entry per part of
        :data:`~fernb.models.parts.ENSEMBLE_PARTS` and ``"full"`` for all points.
    """
    # Every image has the same points, so the mean of the images' means is the overall mean.
    return {part: float(e.mean()) for part, e in image_errors(
        network, dataset, channels=channels, batch_size=batch_size).items()}


class _Landmarks(nn.Module):
    """A network's landmark predictions as one member's outputs (B, 1, 2K), for ``fit``."""

    def __init__(self, network: PartNetwork) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.forward_landmarks(x).unsqueeze(1)  # (B, 1, 2K)


class _Head(nn.Module):
    """A network's expression head on precomputed (B, F) features, as one member (B, 1, C),
    for ``fit`` in stage 2."""

    def __init__(self, network: PartNetwork) -> None:
        super().__init__()
        self.network = network

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.network.forward_head(features)  # (B, 1, C)


@torch.no_grad()
def extract_features(network: PartNetwork, x: torch.Tensor, *, batch_size: int = 256
                     ) -> torch.Tensor:
    """The extractor's (N, F) features of ``x`` in eval mode, on the CPU; the network's
    train/eval modes are restored."""
    device = next(network.parameters()).device
    with eval_mode(network):
        out = [network.forward_features(x[i:i + batch_size].to(device)).float().cpu()
               for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def cached_features(network: PartNetwork, x: torch.Tensor, y: torch.Tensor,
                    augment: Augment | None = None, *, copies: int = 0, seed: int = 0,
                    batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The extractor's (N, F) features of ``x`` and, with ``augment``, of ``copies``
    augmented copies of ``x`` drawn under ``seed`` (stacked after them, ((1 + copies) N, F)),
    with their labels; computed once, for a head trained on a frozen extractor."""
    features, labels = [extract_features(network, x, batch_size=batch_size)], [y]
    if augment is not None and copies:
        device = next(network.parameters()).device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for _ in range(copies):
                moved = torch.cat([augment(x[i:i + batch_size].to(device),
                                           y[i:i + batch_size].to(device))[0].cpu()
                                   for i in range(0, len(x), batch_size)])
                features.append(extract_features(network, moved, batch_size=batch_size))
                labels.append(y)
    return torch.cat(features), torch.cat(labels)


def _folder(checkpoint: str | Path | None, name: str) -> Path | None:
    return Path(checkpoint) / name if checkpoint is not None else None


@dataclass(frozen=True)
class Runtime:
    """Where and how every stage computes: device, precision (:mod:`fernb.device`) and a
    progress bar; none of them changes what a stage trains."""

    device: str = "auto"
    precision: str = "auto"
    progress: bool = False


def _stage(config: TransferConfig, runtime: Runtime, lr: float, epochs: int, *, seed: int,
           early_stopping: int | None, **changes: Any) -> FitConfig:
    """One stage's :class:`FitConfig`: Adam at ``lr`` with the config's betas and eps, the
    config's batch size."""
    return FitConfig(epochs=epochs, optimizer=adam(lr, betas=config.betas, eps=config.eps),
                     batch_size=config.batch_size, early_stopping=early_stopping, seed=seed,
                     device=runtime.device, precision=runtime.precision,
                     progress=runtime.progress, **changes)


def _build(factory: AugmentFactory | None, part: str | None) -> Augment | None:
    return factory(part=part) if factory is not None else None


def _early(config: TransferConfig, val: Any) -> int | None:
    return config.patience if val is not None else None


def _watch(config: TransferConfig) -> dict[str, Any]:
    """The :class:`FitConfig` fields an expression stage's early stopping watches."""
    if config.stop_on == "accuracy":
        return {"select": "val_acc_ens", "maximize": True}
    return {"select": "val_loss", "maximize": False}


@dataclass
class TransferResult:
    """Histories of the three stages and the Sec. V-B landmark errors of the fixed
    localisation head after stage 1 (``error_before``) and after stage 3 (``error_after``), and
    the network's weights and statistics after stage 1 (``landmark_state``, a state dict), from
    which its landmarks before fine-tuning can be predicted again (Fig. 10)."""

    landmarks: History
    head: History
    finetune: History
    error_before: dict[str, float] = field(default_factory=dict)
    error_after: dict[str, float] = field(default_factory=dict)
    landmark_state: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)


def _require_part_network(network: Any, what: str) -> None:
    if not isinstance(network, PartNetwork) or network.part is None:
        raise TypeError(f"{what} needs a PartNetwork with a landmark head (part set); train "
                        f"the Baseline with train_direct")


def pretrain_landmarks(network: PartNetwork, landmarks: FaceDataset,
                       val: FaceDataset | None = None, *,
                       config: TransferConfig = TransferConfig(),
                       checkpoint: str | Path | None = None,
                       augment: AugmentFactory | None = None, seed: int = 0,
                       runtime: Runtime = Runtime()) -> History:
    """Stage 1, FLL pre-training: extractor and landmark head regress the part's normalised
    coordinates on ``landmarks`` (faces with (N, 68, 2) landmarks; their labels are not
    used) with eq. 1's L1 loss at ``config.landmark_lr``; ``val`` (faces with landmarks)
    drives early stopping and the kept epoch. ``augment(part=network.part)`` must move the
    coordinates with the image (:func:`paper_augmentation`)."""
    _require_part_network(network, "pretrain_landmarks")
    channels = network.features.in_chans
    train_set = landmark_dataset(landmarks, network.part, channels=channels)
    val_set = (landmark_dataset(val, network.part, channels=channels)
               if val is not None else None)
    network.requires_grad_(True)
    network.head.requires_grad_(False)
    stage = _stage(config, runtime, config.landmark_lr, config.landmark_epochs,
                   loss=member_l1, task="regression", augment=_build(augment, network.part),
                   seed=seed, early_stopping=_early(config, val))
    history = fit(_Landmarks(network), epoch_set(train_set, config.epoch_images), val_set,
                  stage, checkpoint=checkpoint)
    network.requires_grad_(True)
    return history


def _freeze_for_expressions(network: PartNetwork) -> None:
    if network.landmark_head is not None:
        freeze(network.landmark_head)


def train_head(network: PartNetwork, train: FaceDataset, val: FaceDataset | None = None, *,
               config: TransferConfig = TransferConfig(),
               checkpoint: str | Path | None = None, augment: AugmentFactory | None = None,
               seed: int = 0, runtime: Runtime = Runtime()) -> History:
    """Stage 2, the expression head on the frozen extractor (BatchNorm statistics
    included): cross-entropy at ``config.head_lr`` for up to ``config.head_epochs`` epochs,
    early stopping after ``config.head_patience``. Without augmentation (``augment`` None
    or ``config.head_augment`` False) the head trains on the features of the images computed
    once. A network with a :class:`~fernb.models.parts.Standardize` has it set from the
    training images' features first (and of ``config.head_copies`` augmented copies of
    them, the features the head then trains on)."""
    if not isinstance(network, PartNetwork):
        raise TypeError(f"train_head needs a PartNetwork, got {type(network).__name__}")
    channels = network.features.in_chans
    x_train = inputs(train, channels=channels)
    x_val = inputs(val, channels=channels) if val is not None else None
    y_train = torch.from_numpy(train.labels)
    y_val = torch.from_numpy(val.labels) if val is not None else None
    network.requires_grad_(True)
    _freeze_for_expressions(network)
    network.freeze_features()
    device = resolve_device(runtime.device)
    network.to(device)
    head_augment = _build(augment, None) if config.head_augment else None
    copies = config.head_copies if head_augment is None else 0
    train_features, y_cached = cached_features(
        network, x_train, y_train, _build(augment, None) if copies else None, copies=copies,
        seed=seed)
    if isinstance(network.standardize, Standardize):
        network.standardize.fit(train_features)
    head_config = _stage(config, runtime, config.head_lr, config.head_epochs,
                         augment=head_augment, seed=seed, **_watch(config),
                         early_stopping=config.head_patience if val is not None else None)
    if head_augment is None:  # the frozen extractor's features, computed once
        head_val = (TensorDataset(extract_features(network, x_val), y_val)
                    if val is not None else None)
        history = fit(_Head(network), epoch_set(TensorDataset(train_features, y_cached),
                                                config.epoch_images), head_val,
                      head_config, checkpoint=checkpoint)
    else:
        history = fit(network, epoch_set(TensorDataset(x_train, y_train), config.epoch_images),
                      TensorDataset(x_val, y_val) if val is not None else None, head_config,
                      checkpoint=checkpoint)
    network.requires_grad_(True)
    return history


class _FixedStatistics(nn.Module):
    """A network whose BatchNorm layers stay in eval mode (their running statistics fixed)
    while their weights train, as Keras' ``training=False`` call does."""

    def __init__(self, network: PartNetwork) -> None:
        super().__init__()
        self.network = network

    def train(self, mode: bool = True) -> _FixedStatistics:
        super().train(mode)
        for m in self.network.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)  # (B, 1, C)


def finetune(network: PartNetwork, train: FaceDataset, val: FaceDataset | None = None, *,
             config: TransferConfig = TransferConfig(), checkpoint: str | Path | None = None,
             augment: AugmentFactory | None = None, seed: int = 0,
             runtime: Runtime = Runtime()) -> History:
    """Stage 3, fine-tuning: extractor and expression head trained together on expressions
    at ``config.finetune_lr``; the landmark head stays as stage 1 left it and, with
    ``config.finetune_statistics="fixed"``, so do the BatchNorm statistics."""
    if not isinstance(network, PartNetwork):
        raise TypeError(f"finetune needs a PartNetwork, got {type(network).__name__}")
    channels = network.features.in_chans
    network.requires_grad_(True)
    _freeze_for_expressions(network)
    network.unfreeze_features()
    model = _FixedStatistics(network) if config.finetune_statistics == "fixed" else network
    history = fit(model, epoch_set(expression_dataset(train, channels=channels),
                                   config.epoch_images),
                  expression_dataset(val, channels=channels) if val is not None else None,
                  _stage(config, runtime, config.finetune_lr, config.finetune_epochs,
                         augment=_build(augment, None), seed=seed, **_watch(config),
                         early_stopping=_early(config, val)), checkpoint=checkpoint)
    network.requires_grad_(True)
    return history


def train_expressions(network: PartNetwork, train: FaceDataset, val: FaceDataset | None = None,
                      *, config: TransferConfig = TransferConfig(),
                      checkpoint: str | Path | None = None,
                      augment: AugmentFactory | None = None, seed: int = 0,
                      runtime: Runtime = Runtime()) -> tuple[History, History]:
    """Stages 2 and 3 (:func:`train_head`, then :func:`finetune`) on ``network`` as it is:
    after stage 1 for a transfer network, or with its initial random weights for the
    control that separates what the landmarks taught from what the schedule does.
    Checkpoints in ``checkpoint/head`` and ``checkpoint/finetune``."""
    head = train_head(network, train, val, config=config, augment=augment, seed=seed,
                      checkpoint=_folder(checkpoint, "head"), runtime=runtime)
    tuned = finetune(network, train, val, config=config, augment=augment, seed=seed,
                     checkpoint=_folder(checkpoint, "finetune"), runtime=runtime)
    return head, tuned


def _has_landmarks(dataset: FaceDataset | None) -> bool:
    return dataset is not None and dataset.landmarks is not None and \
        bool(np.isfinite(dataset.landmarks).all(axis=(1, 2)).any())


def train_transfer(network: PartNetwork, train: FaceDataset, val: FaceDataset | None = None,
                   *, landmarks: FaceDataset | None = None,
                   landmarks_val: FaceDataset | None = None,
                   config: TransferConfig = TransferConfig(),
                   checkpoint: str | Path | None = None,
                   augment: AugmentFactory | None = None, seed: int = 0,
                   runtime: Runtime = Runtime()) -> TransferResult:
    """Train one FTL or EL network in the three stages of Sec. III-D2.

    Args:
        network: a :class:`PartNetwork` with a landmark head (``part`` not None).
        train, val: the expression set (labels; ``val`` drives early stopping and the kept
            epoch of stages 2 and 3).
        landmarks, landmarks_val: the landmark set of stage 1 and its validation faces
            (faces with (N, 68, 2) landmarks, labels unused); by default ``train`` and
            ``val``, as in the paper. A separate set lets many faces with landmarks teach
            the extractor while few faces carry expression labels.
        checkpoint: stage ``s`` checkpoints in ``checkpoint/s`` (``landmarks``, ``head``,
            ``finetune``); rerunning resumes where it stopped.
        augment: ``augment(part=...)`` builds fit's ``augment(x, y)``: with the network's
            part for stage 1 (it must move the (B, 2K) normalised coordinates with the
            image), with ``part=None`` for stages 2 (unless ``config.head_augment`` is
            False) and 3 (labels pass through); e.g.
            ``functools.partial(paper_augmentation, 160)``. None: no augmentation.
        seed: shuffling and augmentation seed of every stage.
        runtime: device, precision and progress bar of every stage.

    The Sec. V-B errors are measured on ``val`` when it has landmarks, else on the landmark
    validation faces (else the landmark set).
    """
    _require_part_network(network, "train_transfer")
    if landmarks is None:
        landmarks, landmarks_val = train, val
    reference = next((d for d in (val, landmarks_val) if _has_landmarks(d)), landmarks)
    _require_landmarks(landmarks)
    stage1 = pretrain_landmarks(network, landmarks, landmarks_val, config=config,
                                checkpoint=_folder(checkpoint, "landmarks"), augment=augment,
                                seed=seed, runtime=runtime)
    error_before = landmark_errors(network, reference)
    landmark_state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
    head, tuned = train_expressions(network, train, val, config=config, checkpoint=checkpoint,
                                    augment=augment, seed=seed, runtime=runtime)
    error_after = landmark_errors(network, reference)
    return TransferResult(stage1, head, tuned, error_before, error_after, landmark_state)


def train_direct(network: PartNetwork, train: FaceDataset, val: FaceDataset | None = None, *,
                 config: TransferConfig = TransferConfig(),
                 checkpoint: str | Path | None = None, augment: AugmentFactory | None = None,
                 seed: int = 0, runtime: Runtime = Runtime()) -> History:
    """Direct expression training of a Baseline network (Sec. III-D1): Adam at
    ``config.direct_lr`` for up to ``config.direct_epochs`` (early stopping after
    ``config.patience``); a landmark head, if any, is unused. Arguments as
    :func:`train_transfer` (``augment`` is called with ``part=None``)."""
    if not isinstance(network, PartNetwork):
        raise TypeError(f"train_direct needs a PartNetwork, got {type(network).__name__}")
    channels = network.features.in_chans
    network.requires_grad_(True)
    _freeze_for_expressions(network)
    history = fit(network, epoch_set(expression_dataset(train, channels=channels),
                                     config.epoch_images),
                  expression_dataset(val, channels=channels) if val is not None else None,
                  _stage(config, runtime, config.direct_lr, config.direct_epochs, seed=seed,
                         early_stopping=_early(config, val), augment=_build(augment, None),
                         **_watch(config)),
                  checkpoint=_folder(checkpoint, "direct"))
    network.requires_grad_(True)
    return history


# ------------------------------------------------------------- how far fine-tuning moves

StateLike = nn.Module | Mapping[str, torch.Tensor]


def conv_kernels(network: StateLike, prefix: str = "") -> torch.Tensor:
    """The extractor's convolution kernels (``features.*`` 4-d tensors) of a network or a
    state dict (keys under ``prefix``), as one vector."""
    state = network.state_dict() if isinstance(network, nn.Module) else network
    kernels = [v.detach().float().flatten().cpu() for k, v in state.items()
               if k.startswith(f"{prefix}features.") and v.ndim == 4]
    if not kernels:
        raise ValueError(f"no convolution kernels under {prefix!r}features.")
    return torch.cat(kernels)


def relative_change(start: StateLike, end: StateLike) -> float:
    """How far training moved the extractor: ``||w1 - w0|| / ||w0||`` over every convolution
    kernel (0.1: the kernels moved by a tenth of their size)."""
    w0, w1 = conv_kernels(start), conv_kernels(end)
    return float((w1 - w0).norm() / w0.norm())


def finetune_travel(network: PartNetwork, train: FaceDataset, lrs: Sequence[float], *,
                    val: FaceDataset | None = None, config: TransferConfig = TransferConfig(),
                    augment: AugmentFactory | None = None, seed: int = 0,
                    runtime: Runtime = Runtime()) -> pd.Series:
    """How far stage 3 moves ``network``'s extractor at each rate of ``lrs``: a copy is
    fine-tuned for all of ``config.finetune_epochs`` (no early stopping, the last epoch
    kept: the farthest the budget goes) after its stage-2 head (trained as
    :func:`train_head` does, ``val`` stopping it), and :func:`relative_change` measured from
    where fine-tuning starts. Returns the travel by rate (ascending)."""
    if not lrs or any(lr <= 0 for lr in lrs):
        raise ValueError(f"lrs must be positive rates, got {list(lrs)}")
    start = copy.deepcopy(network)
    train_head(start, train, val, config=config, augment=augment, seed=seed, runtime=runtime)
    travel = {}
    for lr in sorted(set(lrs)):
        probe = copy.deepcopy(start)
        finetune(probe, train, None, config=replace(config, finetune_lr=lr), augment=augment,
                 seed=seed, runtime=runtime)
        travel[float(lr)] = relative_change(start, probe)
    return pd.Series(travel, name="travel").rename_axis("lr")


def choose_rate(travel: pd.Series, target: float) -> float:
    """The rate at which fine-tuning's travel (:func:`finetune_travel`) reaches ``target``,
    interpolated linearly in log rate and log travel between the measured rates; clipped to
    the measured range (the smallest rate if even it moves farther, the largest if none
    reaches the target)."""
    if not target > 0:
        raise ValueError(f"target must be positive, got {target}")
    travel = travel.sort_index()
    rates = np.log(travel.index.to_numpy(dtype=float))
    moved = np.log(np.maximum(travel.to_numpy(dtype=float), 1e-12))
    order = np.argsort(moved, kind="stable")
    return float(np.exp(np.interp(np.log(target), moved[order], rates[order])))


def train_members(model: Members, train: FaceDataset, val: FaceDataset | None = None, *,
                  landmarks: FaceDataset | None = None,
                  landmarks_val: FaceDataset | None = None,
                  config: TransferConfig = TransferConfig(),
                  checkpoint: str | Path | None = None,
                  augment: AugmentFactory | None = None, seed: int = 0,
                  runtime: Runtime = Runtime()) -> list[TransferResult | History]:
    """Train every network of an EL, FTL or Baseline ensemble separately: three-stage transfer
    for networks with a landmark head, direct training otherwise.

    Member ``k`` (1-based) checkpoints in ``checkpoint/member_<k>_<part>`` and is trained
    with seed ``seed + k - 1``; ``landmarks`` and ``landmarks_val`` are the transfer
    networks' landmark set (:func:`train_transfer`). Returns one :class:`TransferResult` or
    History per member.
    """
    if not isinstance(model, Members) or not all(isinstance(n, PartNetwork)
                                                 for n in model.networks):
        raise TypeError("train_members needs Members of PartNetworks (fernb.models.parts."
                        "part_ensemble)")
    results: list[TransferResult | History] = []
    for k, network in enumerate(model.networks, start=1):
        where = _folder(checkpoint, f"member_{k}_{network.part or 'baseline'}")
        common = dict(config=config, checkpoint=where, augment=augment, seed=seed + k - 1,
                      runtime=runtime)
        if network.part is None:
            results.append(train_direct(network, train, val, **common))
        else:
            results.append(train_transfer(network, train, val, landmarks=landmarks,
                                          landmarks_val=landmarks_val, **common))
    return results


def error_table(results: list[TransferResult | History]) -> pd.DataFrame:
    """Sec. V-B table: landmark error before and after fine-tuning and its change (negative:
    the fixed head localises better afterwards), indexed by (member, part); members are
    numbered from 1 and Baseline networks, which have no landmark head, are skipped."""
    rows = [{"member": k, "part": part, "before": before, "after": result.error_after[part]}
            for k, result in enumerate(results, start=1) if isinstance(result, TransferResult)
            for part, before in result.error_before.items()]
    if not rows:
        raise ValueError("no TransferResult among the results (Baseline networks have no "
                         "landmark errors)")
    table = pd.DataFrame(rows).set_index(["member", "part"])
    table["change"] = table["after"] - table["before"]
    return table
