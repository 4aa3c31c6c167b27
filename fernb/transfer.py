"""Transfer learning from facial landmark localisation (FLL) to expressions (FER).

Wadhawan and Gandhi, IEEE TAI 2023, Sec. III-D. Every FTL and EL network
(:class:`fernb.models.parts.PartNetwork`) is trained in three stages with :func:`fernb.train.fit`:

1. FLL pre-training: extractor and landmark head regress the part's normalised landmark
   coordinates with the L1 loss of eq. 1 (:func:`fernb.losses.member_l1`), lr 1e-2;
2. expression head: the extractor is frozen (BatchNorm statistics included) and the
   expression head is trained with cross-entropy (eq. 2), lr 1e-2, "for a few epochs";
3. fine-tuning: everything but the landmark head is trained at lr 1e-4.

The Baseline network is trained directly on expressions at lr 1e-2 (:func:`train_direct`).
All stages use Adam (beta1 0.9, beta2 0.999, eps 1e-7), mini-batches of 32 and keep the weights
of the epoch with the lowest validation loss. Sec. V-B compares the landmark error of the
localisation head, kept fixed, before and after fine-tuning (:func:`landmark_errors`;
:attr:`TransferResult.error_before` / ``error_after``).

Inputs follow Sec. III-A/B and the authors' notebook: CLAHE (:func:`equalized`), grayscale
repeated to three channels and scaled to [-1, 1] (:func:`inputs`); landmark targets are
``x / W, y / H`` of the part's points (:func:`fernb.models.parts.normalise_landmarks`).
Augmentation (:func:`paper_augmentation`: flip, rotation, translation) moves the landmark
targets with the image, as the paper says; the authors' notebook instead re-ran the dlib
landmark detector on every augmented image.

Choices where the paper is silent (all fields of :class:`TransferConfig`):

- Epochs: the paper gives approximate budgets per dataset (:data:`PAPER_EPOCHS`), one for the
  head and fine-tuning stages together; ``head_epochs=10`` ("a few epochs") and the rest of
  the budget for fine-tuning. The authors' notebook defines an epoch as 30 steps of 32
  class-balanced, augmented images; here an epoch is one pass over the training set.
- "Stop training when the validation loss saturates": early stopping with ``patience=20``
  epochs; the weights of the best epoch are kept (as the authors' ModelCheckpoint does).
- The landmark head is frozen in stages 2 and 3 (the paper replaces it and puts it back for
  Sec. V-B), so it is exactly the stage-1 head when the error is measured again.
- Stage 2 without augmentation (no ``augment`` factory, or ``head_augment=False``) trains the
  head on the frozen extractor's features of the images, computed once: the extractor and its
  BatchNorm statistics are fixed, so this is the same computation as running the extractor
  at every step, only cheaper, and many head epochs cost little.
- During fine-tuning BatchNorm statistics update. The authors' Keras code calls the extractor
  with ``training=False`` when it builds the expression model, which in Keras would keep them
  fixed even after unfreezing; the paper does not say.
"""
from __future__ import annotations

import math
from collections.abc import Callable
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
from fernb.data.transforms import (LandmarkAugmentation, PairedAugmentation, WarpSets,
                                   apply_clahe)
from fernb.landmarks import subset_flip_permutation
from fernb.losses import member_l1
from fernb.models.members import Members
from fernb.models.parts import ENSEMBLE_PARTS, LANDMARK_SETS, PartNetwork, normalise_landmarks
from fernb.train import FitConfig, History, adam, fit, freeze

Augment = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]
# Called as factory(part=...) with a part, or None for class labels; returns fit's augment(x, y).
AugmentFactory = Callable[..., Augment]

# dataset -> (Baseline epochs, FLL pre-training epochs, head + fine-tuning epochs), Sec. III-D3.
PAPER_EPOCHS: dict[str, tuple[int, int, int]] = {
    "ckplus": (400, 100, 300), "jaffe": (300, 100, 200), "sfew": (400, 200, 200)}


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
        patience: early stopping after this many epochs without a lower validation loss;
            None trains every epoch.
        betas, eps: Adam's (0.9, 0.999) and 1e-7 (Keras' default, as the paper states).
        head_augment: augment the images of stage 2 too (the paper augments all training
            data); False trains the head on features computed once (see the module notes).
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
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-7
    head_augment: bool = True

    def __post_init__(self) -> None:
        for name in ("landmark_lr", "head_lr", "finetune_lr", "direct_lr", "eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("landmark_epochs", "head_epochs", "finetune_epochs", "direct_epochs",
                     "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be at least 1 or None, got {self.patience}")

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


def landmark_errors(network: PartNetwork, dataset: FaceDataset, *, channels: int = 3,
                    batch_size: int = 256) -> dict[str, float]:
    """Mean absolute difference (eq. 1) between predicted and ground-truth landmarks, in units
    of the image side (multiply by the side for pixels), over images with landmarks (Sec. V-B).

    Returns:
        ``{part: error}`` for a part network; for a 68-point network one entry per part of
        :data:`~fernb.models.parts.ENSEMBLE_PARTS` and ``"full"`` for all points.
    """
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
        return {network.part: float(diff.mean())}
    errors = {part: float(diff[:, list(LANDMARK_SETS[part])].mean()) for part in ENSEMBLE_PARTS}
    errors["full"] = float(diff.mean())
    return errors


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


def train_transfer(network: PartNetwork, train: FaceDataset, val: FaceDataset | None = None,
                   *, config: TransferConfig = TransferConfig(),
                   checkpoint: str | Path | None = None,
                   augment: AugmentFactory | None = None, seed: int = 0,
                   runtime: Runtime = Runtime()) -> TransferResult:
    """Train one FTL or EL network in the three stages of Sec. III-D2.

    Args:
        network: a :class:`PartNetwork` with a landmark head (``part`` not None).
        train, val: datasets with labels and (N, 68, 2) landmarks; ``val`` drives early
            stopping, the choice of the best epoch and the Sec. V-B errors (``train`` when
            None).
        checkpoint: stage ``s`` checkpoints in ``checkpoint/s`` (``landmarks``, ``head``,
            ``finetune``); rerunning resumes where it stopped.
        augment: ``augment(part=...)`` builds fit's ``augment(x, y)``: with the network's
            part for stage 1 (it must move the (B, 2K) normalised coordinates with the
            image), with ``part=None`` for stages 2 (unless ``config.head_augment`` is
            False) and 3 (labels pass through); e.g.
            ``functools.partial(paper_augmentation, 160)``. None: no augmentation.
        seed: shuffling and augmentation seed of every stage.
        runtime: device, precision and progress bar of every stage.
    """
    if not isinstance(network, PartNetwork) or network.part is None:
        raise TypeError("train_transfer needs a PartNetwork with a landmark head (part set); "
                        "train the Baseline with train_direct")
    channels = network.features.in_chans
    x_train = inputs(train, channels=channels)
    x_val = inputs(val, channels=channels) if val is not None else None
    lm_train = landmark_dataset(train, network.part, channels=channels, x=x_train)
    lm_val = (landmark_dataset(val, network.part, channels=channels, x=x_val)
              if val is not None else None)
    fer_train = expression_dataset(train, x=x_train)
    fer_val = expression_dataset(val, x=x_val) if val is not None else None
    reference = val if val is not None else train
    common = dict(seed=seed, early_stopping=_early(config, val))

    network.unfreeze_features()
    network.head.requires_grad_(False)
    network.landmark_head.requires_grad_(True)
    view = _Landmarks(network)
    landmarks = fit(view, lm_train, lm_val, _stage(
        config, runtime, config.landmark_lr, config.landmark_epochs, loss=member_l1,
        task="regression", augment=_build(augment, network.part), **common),
        checkpoint=_folder(checkpoint, "landmarks"))
    error_before = landmark_errors(network, reference, channels=channels)
    landmark_state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}

    freeze(network.landmark_head)
    network.freeze_features()
    network.head.requires_grad_(True)
    head_augment = _build(augment, None) if config.head_augment else None
    head_config = _stage(config, runtime, config.head_lr, config.head_epochs,
                         augment=head_augment, **common)
    if head_augment is None:  # the frozen extractor's features, computed once
        view = _Head(network)
        head_train = TensorDataset(extract_features(network, x_train), fer_train.tensors[1])
        head_val = (TensorDataset(extract_features(network, x_val), fer_val.tensors[1])
                    if fer_val is not None else None)
        head = fit(view, head_train, head_val, head_config, checkpoint=_folder(checkpoint, "head"))
    else:
        head = fit(network, fer_train, fer_val, head_config,
                   checkpoint=_folder(checkpoint, "head"))

    network.unfreeze_features()
    finetune = fit(network, fer_train, fer_val, _stage(
        config, runtime, config.finetune_lr, config.finetune_epochs,
        augment=_build(augment, None), **common), checkpoint=_folder(checkpoint, "finetune"))
    error_after = landmark_errors(network, reference, channels=channels)
    network.requires_grad_(True)
    return TransferResult(landmarks, head, finetune, error_before, error_after, landmark_state)


def train_direct(network: PartNetwork, train: FaceDataset, val: FaceDataset | None = None, *,
                 config: TransferConfig = TransferConfig(),
                 checkpoint: str | Path | None = None, augment: AugmentFactory | None = None,
                 seed: int = 0, runtime: Runtime = Runtime()) -> History:
    """Direct expression training of a Baseline network (Sec. III-D1): Adam at
    ``config.direct_lr`` for ``config.direct_epochs``; a landmark head, if any, is unused.
    Arguments as :func:`train_transfer` (``augment`` is called with ``part=None``)."""
    if not isinstance(network, PartNetwork):
        raise TypeError(f"train_direct needs a PartNetwork, got {type(network).__name__}")
    channels = network.features.in_chans
    if network.landmark_head is not None:
        freeze(network.landmark_head)
    network.unfreeze_features()
    history = fit(network, expression_dataset(train, channels=channels),
                  expression_dataset(val, channels=channels) if val is not None else None,
                  _stage(config, runtime, config.direct_lr, config.direct_epochs, seed=seed,
                         early_stopping=_early(config, val), augment=_build(augment, None)),
                  checkpoint=_folder(checkpoint, "direct"))
    network.requires_grad_(True)
    return history


def train_members(model: Members, train: FaceDataset, val: FaceDataset | None = None, *,
                  config: TransferConfig = TransferConfig(),
                  checkpoint: str | Path | None = None,
                  augment: AugmentFactory | None = None, seed: int = 0,
                  runtime: Runtime = Runtime()) -> list[TransferResult | History]:
    """Train every network of an EL, FTL or Baseline ensemble separately: three-stage transfer
    for networks with a landmark head, direct training otherwise.

    Member ``k`` (1-based) checkpoints in ``checkpoint/member_<k>_<part>`` and is trained
    with seed ``seed + k - 1``. Returns one :class:`TransferResult` or History per member.
    """
    if not isinstance(model, Members) or not all(isinstance(n, PartNetwork)
                                                 for n in model.networks):
        raise TypeError("train_members needs Members of PartNetworks (fernb.models.parts."
                        "part_ensemble)")
    results: list[TransferResult | History] = []
    for k, network in enumerate(model.networks, start=1):
        where = _folder(checkpoint, f"member_{k}_{network.part or 'baseline'}")
        train_one = train_direct if network.part is None else train_transfer
        results.append(train_one(network, train, val, config=config, checkpoint=where,
                                 augment=augment, seed=seed + k - 1, runtime=runtime))
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
