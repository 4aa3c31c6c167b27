"""Ferreira et al.'s experiments (IEEE Access 2018, Sec. IV): Tables 4-6 and Figs. 9-11.

Two experiments, each storing every finished run on disk so that an interrupted study resumes:

- :func:`run_folds`: the in-the-lab protocol of Tables 4 (CK+, 10 folds) and 5 (JAFFE, 3 folds).
  Subject-independent stratified folds; in each trial one fold tests and the other folds are
  split again by subject, 80 % training and 20 % validation (Sec. IV-C). Every variant of the
  proposed network (fully supervised, eq. 4; weakly supervised with sparsity only, eq. 6,
  contiguity only, eq. 7, or both, eq. 5; hybrid) and the baseline CNN is trained from the
  same initialisation seed per fold, so the comparison with the baseline is paired. Extra
  runs on one fold vary lambda for the relevance-map figures (Fig. 9: lambda 10 vs 5, fully
  supervised; Fig. 10: lambda 1e-4 vs 1e-2 with gamma 1, weakly supervised).
- :func:`run_transfer`: the in-the-wild protocol of Table 6 (SFEW): pre-train each variant on
  a large wild set (FER-2013), fine-tune it on the target's training part (keeping the epoch
  with the lowest validation loss) and test on the target's test part (SFEW: its validation
  set). A target without an official split is cut into subject-independent folds.

Every test image is also scored against the synthetic data's ground-truth evidence regions
(:attr:`fernb.data.datasets.FaceDataset.masks`, beyond the paper): the share of the relevance
map's mass inside them (:func:`fernb.explain.evidence_score`), whether its peak falls inside
(:func:`fernb.explain.pointing_game`), and the share of its mass on evidence *away* from the
landmarks (more than two target-map sigmas from every landmark: forehead, glabella, cheek and
chin texture), which the landmark targets of eq. (4) cannot ask for. Grad-CAM maps of the
classifier (the last e-block) get the same scores, so the baseline is scored too.

Choices where the paper is silent, each a setting of :class:`Config`:

- ``weak_reduction="sum"``: eqs. (6)-(7) print a 1/(m x n) mean, but the lambdas of Fig. 10
  only make sense for sums over the map's pixels (the l1 norm and the total variation the
  text names): as a mean, lambda = 1e-4 weighs a term of at most about 1 against a
  cross-entropy near ln 8 = 2.08 (0.005 %), and 1e-2 could not over-regularise. The weakly
  supervised terms are therefore taken as sums over a 120 x 120 map, the paper's: the
  per-pixel means times 14,400. A per-pixel mean does not depend on the image size, so this
  keeps the paper's balance between the terms at any size (a sum over this run's own pixels
  would weaken them 6.25-fold at 48 px). ``weak_reduction="mean"`` is the printed formula.
  Eq. (4) stays a per-pixel mean, the "mean squared error" of the text.
- ``map_activation="linear"`` (the paper's last layer) with the map starting at 1 everywhere
  (:class:`fernb.models.relevance.RelevanceNet`'s ``map_start``), so every variant starts
  from the baseline's function.
- Images are min-max stretched once (eq. 9 with p_L = 0, p_H = 100), so test images match
  the range that eq. (9) gives training images; eq. (8)'s translations of 0-5 pixels at
  120 px are scaled to the image size.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import TensorDataset

from fernb import figures
from fernb.data.datasets import SYNTHETIC, FaceDataset
from fernb.data.splits import Split, standard_split, subject_folds
from fernb.data.transforms import RelevanceAugmentation, WarpSets, contrast_normalize
from fernb.evaluate import (aggregate_folds, normalized_confusion, paired_ttest, predict,
                            to_predictions)
from fernb.explain import chance_level, evidence_score, gradcam, pointing_game
from fernb.io import atomic_savez, atomic_torch_save, atomic_write_json, \
    atomic_write_text, read_json
from fernb.losses import (RelevanceLoss, relevance_contiguity, relevance_mse,
                          relevance_sparsity)
from fernb.models.relevance import MAP_ACTIVATIONS, BaselineCNN, RelevanceNet, target_maps
from fernb.params import (LEARNING_RATE, POSITIVE_INT, ChapterSettings, Choice, Constraint,
                          DatasetName, ListOf, Range, Relation, Unused, dataset_rules, param,
                          relation)
from fernb.report import Claim
from fernb.train import FitConfig, History, Schedule, adam, fit

VARIANTS = ("baseline", "fully", "sparsity", "contiguity", "weakly", "hybrid")
LABELS = {"baseline": "Baseline CNN", "fully": "Fully supervised (eq. 4)",
          "sparsity": "Weakly, sparsity only (eq. 6)",
          "contiguity": "Weakly, contiguity only (eq. 7)",
          "weakly": "Weakly supervised (eq. 5)", "hybrid": "Hybrid (eqs. 4 + 5)"}
NEEDS_LANDMARKS = ("fully", "hybrid")
# Datasets whose readers give 68 landmarks for the target maps of eq. (4).
LANDMARK_DATASETS = ("synth-lab", "synth-wild", "ckplus", "affectnet")
LAB_DATASETS = ("synth-lab", "synth-wild", "ckplus", "jaffe", "folder")
WILD_DATASETS = ("synth-wild", "sfew", "folder")
PRETRAIN_DATASETS = ("synth-wild", "fer2013", "folder")
PAPER_SIZE = 120                  # the paper's faces and relevance maps: 120 x 120
WEAK_REDUCTIONS = ("sum", "mean")
NEAR_SIGMAS = 2.0                 # "marked by the landmarks": within 2 sigma of one

_LAB_RELATIONS, _LAB_UNUSED = dataset_rules("dataset", "data_root", ("n_subjects",))
_WILD_RELATIONS, _WILD_UNUSED = dataset_rules("wild_dataset", "wild_root", ("wild_subjects",))
_PRE_RELATIONS, _PRE_UNUSED = dataset_rules("pretrain_dataset", "pretrain_root",
                                            ("pretrain_subjects",))


class Folder(Constraint):
    """A folder path as a string; empty for a synthetic dataset (checked against the dataset
    by the relations of :func:`fernb.params.dataset_rules`)."""

    def describe(self) -> str:
        return "a folder path (a string; empty for a synthetic dataset)"

    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, str) else self.describe()


def _landmarks_ok(variants: str, dataset: str) -> Relation:
    def holds(v: Mapping[str, Any]) -> bool:
        return v[dataset] in LANDMARK_DATASETS or not set(v[variants]) & set(NEEDS_LANDMARKS)

    def message(v: Mapping[str, Any]) -> str:
        needing = [x for x in v[variants] if x in NEEDS_LANDMARKS]
        return (f"{variants} = {v[variants]} includes {needing}, whose target maps (eq. 4) need "
                f"68 landmarks, but {dataset} = {v[dataset]!r} has none (those that do: "
                f"{', '.join(LANDMARK_DATASETS)}); drop {needing} from {variants}")
    return relation((variants, dataset), holds, message)


def _folds_ok(folds: str, subjects: str, dataset: str) -> Relation:
    return relation(
        (folds, subjects, dataset),
        lambda v: v[dataset] not in SYNTHETIC or v[subjects] >= 2 * v[folds],
        lambda v: f"{folds} = {v[folds]} subject-independent folds, each split again 80/20 by "
                  f"subject, need at least {2 * v[folds]} subjects; {subjects} = {v[subjects]}")


@dataclass(frozen=True)
class Settings(ChapterSettings):
    """The chapter's parameters (``notebooks/02_relevance_maps.ipynb``); defaults are the ``cpu``
    profile."""

    dataset: str = param("synth-lab", DatasetName(LAB_DATASETS),
                         '"ckplus" (Table 4) or "jaffe" (Table 5) with data_root')
    data_root: str = param("", Folder(), "folder of a real dataset")
    n_subjects: int = param(40, Range(4, 10_000, integer=True),
                            "synthetic subjects (CK+ has 123, JAFFE 10)")
    image_size: int = param(48, Range(48, 224, integer=True), "paper: 120")
    width: float = param(0.125, Range(0, 4, open_low=True),
                         "channel multiplier of every convolution; paper network: 1.0")
    n_folds: int = param(3, Range(2, 100, integer=True),
                         "subject-independent folds (paper: 10 on CK+, 3 on JAFFE)")
    variants: list[str] = param(["baseline", "fully", "sparsity", "contiguity", "weakly",
                                 "hybrid"], ListOf(Choice(*VARIANTS), unique=True),
                                "the compared models of Tables 4-5")
    epochs: int = param(10, POSITIVE_INT, "training epochs per fold (paper: not printed)")
    batch_size: int = param(32, POSITIVE_INT, "paper: 50")
    lr: float = param(0.001, LEARNING_RATE, "Adam learning rate (paper: grid search)")
    lr_decay: float = param(0.99, Range(0, 1, open_low=True),
                            "learning rate x 0.99 after every epoch (paper)")
    weight_decay: float = param(0.0001, Range(0, 1), "l2 coefficient (paper: grid search)")
    patience: int = param(0, Range(0, integer=True), "early stopping after this many epochs "
                          "without a lower validation loss (0: off)")
    augment: bool = param(False, Choice(True, False),
                          "eq. 8 warp and eq. 9 contrast on training batches (paper: True)")
    lambda_fully: float = param(10.0, Range(0), "weight of eq. 4 (paper, Fig. 9: 10)")
    lambda_fully_low: float = param(5.0, Range(0), "Fig. 9, bottom row")
    lambda_weakly: float = param(0.0001, Range(0), "weight of eq. 5 (paper, Fig. 10: 1e-4)")
    lambda_weakly_high: float = param(0.01, Range(0), "Fig. 10, bottom row (over-regularised)")
    gamma: float = param(1.0, Range(0), "weight of contiguity inside eq. 5 (paper: 1)")
    weak_reduction: str = param("sum", Choice(*WEAK_REDUCTIONS),
                                'eqs. 6-7 as sums over a 120 x 120 map; "mean": as printed')
    sigma_fraction: float = param(0.025, Range(0, 0.5, open_low=True),
                                  "target Gaussians' sigma / image side (3 px at 120 px)")
    map_activation: str = param("linear", Choice(*MAP_ACTIVATIONS),
                                "last layer of the facial-parts component (paper: linear)")
    n_show: int = param(6, Range(1, 12, integer=True), "test faces in the relevance-map figures")
    wild_dataset: str = param("synth-wild", DatasetName(WILD_DATASETS),
                              'fine-tuning target (paper: "sfew", set wild_root)')
    wild_root: str = param("", Folder(), "folder of the real in-the-wild dataset")
    wild_subjects: int = param(16, Range(4, 10_000, integer=True),
                               "synthetic target subjects, 40 images each")
    pretrain_dataset: str = param("synth-wild", DatasetName(PRETRAIN_DATASETS),
                                  'pre-training set (paper: "fer2013", set pretrain_root)')
    pretrain_root: str = param("", Folder(), "folder of the real pre-training dataset")
    pretrain_subjects: int = param(40, Range(4, 10_000, integer=True),
                                   "synthetic pre-training subjects (other people)")
    wild_folds: int = param(3, Range(2, 100, integer=True),
                            "subject folds of a target without an official split")
    wild_variants: list[str] = param(["baseline", "hybrid"], ListOf(Choice(*VARIANTS), unique=True),
                                     "paper: the proposed model and the baseline")
    pretrain_epochs: int = param(6, POSITIVE_INT, "epochs of the pre-training")
    finetune_epochs: int = param(5, POSITIVE_INT,
                                 "paper: about 25, until the validation loss rises")

    RELATIONS: ClassVar[Sequence[Relation]] = (
        *_LAB_RELATIONS, *_WILD_RELATIONS, *_PRE_RELATIONS,
        relation(("image_size",), lambda v: v["image_size"] % 8 == 0,
                 lambda v: f"image_size = {v['image_size']} must be divisible by 8: the "
                           f"facial-parts encoder halves it three times and its decoder must "
                           f"come back to the input's size (e.g. 48, 64, 96, 120)"),
        relation(("variants",), lambda v: "baseline" in v["variants"],
                 lambda v: f"variants = {v['variants']} must include 'baseline': every variant "
                           f"is compared with it (paired t-test over folds)"),
        relation(("wild_variants",), lambda v: "baseline" in v["wild_variants"],
                 lambda v: f"wild_variants = {v['wild_variants']} must include 'baseline', "
                           f"the reference of Table 6"),
        _landmarks_ok("variants", "dataset"),
        _landmarks_ok("wild_variants", "wild_dataset"),
        _landmarks_ok("wild_variants", "pretrain_dataset"),
        _folds_ok("n_folds", "n_subjects", "dataset"),
        _folds_ok("wild_folds", "wild_subjects", "wild_dataset"),
    )
    UNUSED: ClassVar[Sequence[Unused]] = (*_LAB_UNUSED, *_WILD_UNUSED, *_PRE_UNUSED)


@dataclass(frozen=True)
class Config:
    """Settings shared by every run of an experiment (paper, Sec. IV-A: Adam, batch 50,
    learning rate x 0.99 per epoch, l2 regularisation, lambda = 10 fully supervised, 1e-4
    weakly supervised, gamma = 1; 120 x 120 faces)."""

    epochs: int
    image_size: int = PAPER_SIZE
    width: float = 1.0
    lr: float = 1e-3
    lr_decay: float = 0.99
    weight_decay: float = 1e-4
    batch_size: int = 50
    patience: int = 0
    augment: bool = True
    lambda_fully: float = 10.0
    lambda_weakly: float = 1e-4
    gamma: float = 1.0
    weak_reduction: str = "sum"
    sigma_fraction: float = 0.025
    map_activation: str = "linear"
    val_fraction: float = 0.2
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0

    def loss(self, run: Run) -> RelevanceLoss | None:
        """Eq. (2) for a run's variant (None for the baseline: plain cross-entropy)."""
        if run.variant == "baseline":
            return None
        lam_f = self.lambda_fully if run.lambda_fully is None else run.lambda_fully
        lam_w = self.lambda_weakly if run.lambda_weakly is None else run.lambda_weakly
        pixels = PAPER_SIZE**2 if self.weak_reduction == "sum" else 1
        return RelevanceLoss(run.variant, lambda_fully=lam_f, lambda_weakly=lam_w * pixels,
                             gamma=self.gamma)

    def build(self, variant: str, n_classes: int, in_chans: int, seed: int) -> nn.Module:
        """The baseline or the proposed network; the same ``seed`` gives both the same
        representation and classification weights."""
        common = dict(n_classes=n_classes, image_size=self.image_size, in_chans=in_chans,
                      width=self.width, seed=seed)
        model = BaselineCNN(**common) if variant == "baseline" else \
            RelevanceNet(map_activation=self.map_activation,
                         map_start=0.5 if self.map_activation == "sigmoid" else 1.0, **common)
        return model

    def augmentation(self, with_maps: bool) -> RelevanceAugmentation | None:
        """Eq. (8) then eq. (9) on every training batch, moving the target maps along;
        translations of 0-5 px at 120 px scaled to the image size."""
        if not self.augment:
            return None
        shift = max(1, round(5 * self.image_size / PAPER_SIZE))
        return RelevanceAugmentation(targets=("label", "map") if with_maps else ("label",),
                                     warp=WarpSets(translations=tuple(range(shift + 1))))


@dataclass(frozen=True)
class Run:
    """One variant trained and tested in one fold; ``lambda_*`` override the config's for
    the relevance-map figures."""

    fold: int
    variant: str
    lambda_fully: float | None = None
    lambda_weakly: float | None = None

    @property
    def key(self) -> str:
        extra = "" if self.lambda_fully is None else f"-lf{self.lambda_fully:g}"
        extra += "" if self.lambda_weakly is None else f"-lw{self.lambda_weakly:g}"
        return f"f{self.fold}-{self.variant}{extra}"

    @property
    def label(self) -> str:
        text = LABELS[self.variant]
        if self.lambda_fully is not None:
            text += f", lambda = {self.lambda_fully:g}"
        if self.lambda_weakly is not None:
            text += f", lambda = {self.lambda_weakly:g}"
        return text

    @property
    def main(self) -> bool:
        """A run of the accuracy tables (not an extra lambda of a figure)."""
        return self.lambda_fully is None and self.lambda_weakly is None


def plan(folds: Sequence[int], variants: Sequence[str], *, lambda_fully_low: float | None = None,
         lambda_weakly_high: float | None = None, figure_fold: int = 0) -> list[Run]:
    """Every variant in every fold, plus Fig. 9's fully supervised run with
    ``lambda_fully_low`` and Fig. 10's weakly supervised run with ``lambda_weakly_high`` on
    ``figure_fold`` (when those variants are planned)."""
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ValueError(f"unknown variants {bad}; choose from {VARIANTS}")
    runs = [Run(f, v) for f in folds for v in variants]
    if lambda_fully_low is not None and "fully" in variants:
        runs.append(Run(figure_fold, "fully", lambda_fully=lambda_fully_low))
    if lambda_weakly_high is not None and "weakly" in variants:
        runs.append(Run(figure_fold, "weakly", lambda_weakly=lambda_weakly_high))
    return runs


@dataclass
class Prepared:
    """A dataset as the study uses it: min-max stretched images, labels, target maps of
    eq. (4), evidence masks and the landmark neighbourhoods (None where missing)."""

    x: torch.Tensor                  # (N, C, H, W) in [0, 1]
    labels: np.ndarray               # (N,)
    subjects: np.ndarray             # (N,)
    classes: tuple[str, ...]
    maps: torch.Tensor | None        # (N, 1, H, W) target relevance maps
    masks: np.ndarray | None         # (N, H, W) evidence regions
    near: np.ndarray | None          # (N, H, W) within NEAR_SIGMAS sigma of a landmark
    landmarks: np.ndarray | None     # (N, 68, 2) pixel (x, y)
    split: np.ndarray | None = None  # official partition names
    intensity: np.ndarray | None = None
    name: str = ""

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def prepare(data: FaceDataset, sigma_fraction: float) -> Prepared:
    """Grayscale images stretched to [0, 1] (eq. 9 with p_L = 0, p_H = 100) and the target
    maps (Gaussians of sigma = ``sigma_fraction`` x side at the landmarks, Fig. 6).

    Every set is used in grayscale: FER-2013, the paper's pre-training set, has no colour,
    so a network pre-trained on it takes one channel.
    """
    x, _ = data.with_options(channels=1).tensors()
    x = contrast_normalize(x, 0.0, 100.0)
    side = min(data.image_size)
    maps = near = None
    if data.landmarks is not None:
        maps = target_maps(data.landmarks, data.image_size, sigma=sigma_fraction * side)
        near = (maps[:, 0] >= np.exp(-NEAR_SIGMAS**2 / 2)).numpy()
    masks = None if data.masks is None else data.masks.astype(bool)
    return Prepared(x, data.labels, data.subjects, data.classes, maps, masks, near,
                    data.landmarks, data.split, data.meta.get("intensity"), data.name)


def _inner_split(labels: np.ndarray, subjects: np.ndarray, idx: np.ndarray,
                 val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation indices of ``idx``, split by subject (Sec. IV-C: 80/20; with
    fewer than 1 / ``val_fraction`` subjects, one subject in as many validates)."""
    n_subjects = len(np.unique(subjects[idx]))
    if n_subjects < 2:
        raise ValueError(f"{n_subjects} training subject(s) cannot be split into training and "
                         f"validation by subject; use more subjects or fewer folds")
    k = min(max(2, round(1 / val_fraction)), n_subjects)
    inner = subject_folds(labels[idx], subjects[idx], k, seed=seed)
    return idx[inner != 0], idx[inner == 0]


def fold_splits(prep: Prepared, n_folds: int, *, val_fraction: float = 0.2,
                seed: int = 0) -> list[Split]:
    """The subject-independent stratified k-fold protocol (Sec. IV-C/D): fold ``k`` tests,
    the others are split by subject into training and validation."""
    if np.any(prep.subjects < 0):
        raise ValueError(f"{prep.name} has no subject ids, so it has no subject-independent "
                         f"folds; use a dataset with subjects")
    folds = subject_folds(prep.labels, prep.subjects, n_folds, seed=seed)
    out = []
    for k in range(n_folds):
        train, val = _inner_split(prep.labels, prep.subjects, np.flatnonzero(folds != k),
                                  val_fraction, seed)
        out.append(Split(train=train, val=val, test=np.flatnonzero(folds == k)))
    return out


def target_splits(prep: Prepared, n_folds: int, *, val_fraction: float = 0.2,
                  seed: int = 0) -> list[Split]:
    """The fine-tuning target's splits: its official partition when it has one (SFEW:
    train, and its validation set as the test set, Sec. IV-E), else subject folds."""
    if prep.split is not None:
        return [standard_split(prep.labels, prep.subjects, prep.split, seed=seed)]
    return fold_splits(prep, n_folds, val_fraction=val_fraction, seed=seed)


def show_indices(prep: Prepared, test: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` test faces for the map figures: one per class (expressions first, the most
    intense face of each)."""
    order = [c for c in range(prep.n_classes) if prep.classes[c] != "neutral"]
    order += [c for c in range(prep.n_classes) if prep.classes[c] == "neutral"]
    picked = []
    for c in order:
        members = test[prep.labels[test] == c]
        if len(members):
            strength = prep.intensity[members] if prep.intensity is not None else -members
            picked.append(int(members[np.argmax(strength)]))
    return np.array(picked[:n], dtype=np.int64)


def _dataset(prep: Prepared, idx: np.ndarray, with_maps: bool) -> TensorDataset:
    parts = [prep.x[idx], torch.from_numpy(prep.labels[idx])]
    if with_maps:
        parts.append(prep.maps[idx])
    return TensorDataset(*parts)


def _train(model: nn.Module, run: Run, prep: Prepared, split: Split, config: Config,
           epochs: int, ckpt: Path) -> History:
    loss = config.loss(run)
    with_maps = loss is not None and loss.needs_target_maps
    if with_maps and prep.maps is None:
        raise ValueError(f"variant {run.variant!r} needs target maps (eq. 4) but {prep.name} "
                         f"has no landmarks")
    kwargs: dict[str, Any] = {} if loss is None else {"loss": loss,
                                                      "forward": "forward_with_map"}
    fit_config = FitConfig(
        epochs=epochs, optimizer=adam(config.lr, weight_decay=config.weight_decay),
        schedule=Schedule("ExponentialLR", gamma=config.lr_decay),
        batch_size=config.batch_size, device=config.device, precision=config.precision,
        seed=config.seed, early_stopping=config.patience or None,
        augment=config.augmentation(with_maps), **kwargs)
    return fit(model, _dataset(prep, split.train, with_maps),
               _dataset(prep, split.val, with_maps), fit_config, checkpoint=ckpt)


def _score(model: nn.Module, variant: str, prep: Prepared, test: np.ndarray,
           show: np.ndarray, config: Config
           ) -> tuple[np.ndarray, pd.DataFrame, dict[str, np.ndarray]]:
    """Test logits, per-image map scores and the shown faces' maps of one trained model."""
    x = prep.x[test]
    run = dict(device=config.device, precision=config.precision)
    logits = predict(model, x, **run).numpy()  # (N, 1, C)
    rows: dict[str, np.ndarray] = {"index": test, "label": prep.labels[test],
                                   "pred": to_predictions(logits)}
    param = next(model.parameters())
    cam = gradcam(model, x.to(param.device), member=0,
                  targets=prep.labels[test].tolist())  # (N, H, W) in [0, 1]
    relevance = None
    if variant != "baseline":
        signed = predict(model, x, output="forward_with_map", **run)[1][:, 0].numpy()
        relevance = np.abs(signed)  # (N, H, W): eq. (6)'s |x_hat|, what the scores weigh
        rows["map_l1"] = relevance.mean(axis=(1, 2))
        if prep.maps is not None:
            rows["map_mse"] = ((signed - prep.maps[test, 0].numpy()) ** 2).mean(axis=(1, 2))
    if prep.masks is not None:
        mask = prep.masks[test]
        maps = {"cam": cam} if relevance is None else {"cam": cam, "map": relevance}
        for name, m in maps.items():
            rows[f"{name}_evidence"] = evidence_score(m, mask)
            rows[f"{name}_pointing"] = pointing_game(m, mask)
        rows["chance"] = chance_level(mask)
        if prep.near is not None:
            away = mask & ~prep.near[test]
            rows["away_chance"] = away.mean(axis=(1, 2))
            for name, m in maps.items():
                mass = m.sum(axis=(1, 2))
                rows[f"{name}_away"] = np.where(mass > 0, (m * away).sum(axis=(1, 2))
                                                / np.where(mass > 0, mass, 1), np.nan)
    pos = np.searchsorted(test, show) if len(show) else np.zeros(0, np.int64)
    shown = {"cam": cam[pos]}
    if relevance is not None:
        shown["map"] = relevance[pos]
    return logits, pd.DataFrame(rows), shown


def _complete(out: Path, names: Sequence[str]) -> dict[str, Any] | None:
    """A run's result.json when it and every artifact exist, else None (retrain/resume)."""
    result = read_json(out / "result.json")
    if result is None or not all((out / n).exists() for n in names):
        return None
    return result


ARTIFACTS = ("history.csv", "test.npz", "scores.csv", "maps.npz")


def _check_config(out_dir: Path, record: Mapping[str, Any]) -> None:
    stored = read_json(out_dir / "config.json")
    if stored is not None and stored != dict(record):
        raise ValueError(f"{out_dir} holds a study made with other settings ({stored}, now "
                         f"{dict(record)}); use another folder or delete it")
    atomic_write_json(out_dir / "config.json", dict(record))


def _summary(run: Run, scores: pd.DataFrame, seconds: float, history: History) -> dict[str, Any]:
    means = {c: float(np.nanmean(scores[c])) if scores[c].notna().any() else None
             for c in scores.columns if c not in ("index", "label", "pred")}
    return {**asdict(run), "key": run.key, "label": run.label, "main": run.main,
            "accuracy": float((scores["pred"] == scores["label"]).mean()),
            "best_epoch": history.best_epoch, "epochs_run": len(history),
            "train_seconds": round(seconds, 1), **means}


@dataclass
class Results:
    """Per-run rows (``table``), test logits, per-image scores, the shown faces' maps and
    training histories, keyed by :attr:`Run.key`; ``show`` holds each fold's shown faces."""

    table: pd.DataFrame
    logits: dict[str, np.ndarray]
    scores: dict[str, pd.DataFrame]
    maps: dict[str, dict[str, np.ndarray]]
    histories: dict[str, pd.DataFrame]
    show: dict[int, np.ndarray]
    classes: tuple[str, ...]
    config: Config

    @property
    def main(self) -> pd.DataFrame:
        """Rows of the accuracy tables (no figure-only lambdas)."""
        return self.table[self.table["main"]]


def _load(out: Path, result: dict[str, Any], results: dict[str, Any]) -> None:
    key = result["key"]
    results["rows"].append(result)
    results["logits"][key] = np.load(out / "test.npz")["logits"]
    results["scores"][key] = pd.read_csv(out / "scores.csv")
    results["maps"][key] = dict(np.load(out / "maps.npz"))
    results["histories"][key] = pd.read_csv(out / "history.csv")


def _results(store: dict[str, Any], show: dict[int, np.ndarray], prep: Prepared,
             config: Config) -> Results:
    return Results(pd.DataFrame(store["rows"]), store["logits"], store["scores"], store["maps"],
                   store["histories"], show, prep.classes, config)


def _store(out: Path, run: Run, history: History, logits: np.ndarray, scores: pd.DataFrame,
           shown: dict[str, np.ndarray], seconds: float) -> dict[str, Any]:
    atomic_write_text(out / "history.csv", history.to_frame().to_csv())
    atomic_savez(out / "test.npz", logits=logits, labels=scores["label"].to_numpy(),
              index=scores["index"].to_numpy())
    atomic_write_text(out / "scores.csv", scores.to_csv(index=False))
    atomic_savez(out / "maps.npz", **shown)
    result = _summary(run, scores, seconds, history)
    atomic_write_json(out / "result.json", result)  # last: marks the run finished
    shutil.rmtree(out / "ckpt", ignore_errors=True)  # fit's resume state, no longer needed
    return result


def run_folds(prep: Prepared, splits: Sequence[Split], runs: Sequence[Run], config: Config,
              out_dir: str | Path, *, n_show: int = 6) -> Results:
    """Train and test every run of the fold protocol, or load it when ``out_dir`` already
    holds it (an interrupted run resumes from its last finished epoch).

    Args:
        prep: the dataset (:func:`prepare`).
        splits: one per fold (:func:`fold_splits`).
        runs: from :func:`plan`.
        config: training settings; a folder made with other settings is refused.
        out_dir: one folder per run.
        n_show: test faces per fold whose maps are kept for the figures.
    """
    bad = sorted({r.fold for r in runs if not 0 <= r.fold < len(splits)})
    if bad:
        raise ValueError(f"runs name folds {bad}, but there are {len(splits)} folds "
                         f"(0..{len(splits) - 1})")
    out_dir = Path(out_dir)
    _check_config(out_dir, {**asdict(config), "dataset": prep.name, "n": len(prep.labels),
                            "folds": len(splits)})
    show = {k: show_indices(prep, s.test, n_show) for k, s in enumerate(splits)}
    store: dict[str, Any] = {"rows": [], "logits": {}, "scores": {}, "maps": {}, "histories": {}}
    for run in runs:
        out = out_dir / run.key
        result = _complete(out, ARTIFACTS)
        if result is None:
            start = time.perf_counter()
            split = splits[run.fold]
            # One initialisation seed per fold: every variant of a fold starts from the same
            # representation and classifier weights (a paired comparison).
            model = config.build(run.variant, prep.n_classes, prep.x.shape[1],
                                 seed=config.seed * 1000 + run.fold)
            history = _train(model, run, prep, split, config, config.epochs, out / "ckpt")
            seconds = time.perf_counter() - start
            logits, scores, shown = _score(model, run.variant, prep, split.test, show[run.fold],
                                           config)
            result = _store(out, run, history, logits, scores, shown, seconds)
        _load(out, result, store)
    return _results(store, show, prep, config)


def _pretrain_split(prep: Prepared, val_fraction: float, seed: int) -> Split:
    """Training and validation parts of the pre-training set: its official train and
    validation parts when it has them (FER-2013), else an 80/20 split by subject."""
    if prep.split is not None and (prep.split == "val").any():
        return Split(train=np.flatnonzero(prep.split == "train"),
                     val=np.flatnonzero(prep.split == "val"), test=np.zeros(0, np.int64))
    if np.any(prep.subjects < 0):
        return standard_split(prep.labels, prep.subjects, None, seed=seed)
    train, val = _inner_split(prep.labels, prep.subjects, np.arange(len(prep.labels)),
                              val_fraction, seed)
    return Split(train=train, val=val, test=np.zeros(0, np.int64))


def run_transfer(source: Prepared, target: Prepared, splits: Sequence[Split],
                 variants: Sequence[str], config: Config, out_dir: str | Path, *,
                 pretrain_epochs: int, n_show: int = 6) -> Results:
    """Table 6's protocol: each variant pre-trained on ``source`` (``pretrain_epochs``),
    then fine-tuned on every split of ``target`` for ``config.epochs`` epochs (the epoch with
    the lowest validation loss is kept; ``config.patience`` stops early, as the paper's
    "until the validation loss stops decreasing") and tested on its test part.

    Pre-trained weights are stored per variant (``pre-<variant>/model.pt``), fine-tuned runs
    per split (``f<k>-<variant>/``); both resume.
    """
    if source.classes != target.classes:
        raise ValueError(f"the pre-training classes {source.classes} differ from the target's "
                         f"{target.classes}; pre-train on a set with the same classes")
    if source.x.shape[1:] != target.x.shape[1:]:
        raise ValueError(f"pre-training images {tuple(source.x.shape[1:])} and target images "
                         f"{tuple(target.x.shape[1:])} differ in channels or size")
    out_dir = Path(out_dir)
    _check_config(out_dir, {**asdict(config), "pretrain_epochs": pretrain_epochs,
                            "source": source.name, "n_source": len(source.labels),
                            "target": target.name, "n_target": len(target.labels),
                            "folds": len(splits)})
    pre_split = _pretrain_split(source, config.val_fraction, config.seed)
    show = {k: show_indices(target, s.test, n_show) for k, s in enumerate(splits)}
    store: dict[str, Any] = {"rows": [], "logits": {}, "scores": {}, "maps": {}, "histories": {}}
    for variant in variants:
        pre_dir = out_dir / f"pre-{variant}"
        pre = _complete(pre_dir, ("model.pt",))
        if pre is None:
            start = time.perf_counter()
            model = config.build(variant, source.n_classes, source.x.shape[1],
                                 seed=config.seed * 1000 + 999)
            history = _train(model, Run(-1, variant), source, pre_split, config,
                             pretrain_epochs, pre_dir / "ckpt")
            atomic_torch_save(model.state_dict(), pre_dir / "model.pt")
            atomic_write_json(pre_dir / "result.json", {
                "variant": variant, "best_epoch": history.best_epoch,
                "train_seconds": round(time.perf_counter() - start, 1)})
            shutil.rmtree(pre_dir / "ckpt", ignore_errors=True)
        state = torch.load(pre_dir / "model.pt", map_location="cpu", weights_only=True)
        for k, split in enumerate(splits):
            run = Run(k, variant)
            out = out_dir / run.key
            result = _complete(out, ARTIFACTS)
            if result is None:
                start = time.perf_counter()
                model = config.build(variant, target.n_classes, target.x.shape[1], seed=0)
                model.load_state_dict(state)
                history = _train(model, run, target, split, config, config.epochs, out / "ckpt")
                seconds = time.perf_counter() - start
                logits, scores, shown = _score(model, variant, target, split.test, show[k],
                                               config)
                result = _store(out, run, history, logits, scores, shown, seconds)
            _load(out, result, store)
    return _results(store, show, target, config)


def loss_scales(prep: Prepared, config: Config, n: int = 64) -> pd.DataFrame:
    """The size of each term of eq. (2) before training, unweighted and weighted, under the
    printed per-pixel means of eqs. (6)-(7) and as sums over a 120 x 120 map (the paper's;
    ``weak_reduction="sum"``).

    The relevance map is the network's starting map (1 everywhere) for eq. (4) and, for
    eqs. (6)-(7), a map shaped like the landmark targets, i.e. a map the regularisers should
    accept (a centred Gaussian blob where the dataset has no landmarks).
    """
    h, w = prep.x.shape[-2:]
    if prep.maps is not None:
        example = prep.maps[:n]
    else:
        example = target_maps(np.array([[[(w - 1) / 2, (h - 1) / 2]]], np.float32), (h, w),
                              sigma=min(h, w) / 8)
    start = torch.ones_like(example)
    pixels = PAPER_SIZE**2
    sparsity = float(relevance_sparsity(example).mean())
    contiguity = float(relevance_contiguity(example).mean())
    rows = [{"term": "cross-entropy at chance, eq. (3)", "value": float(np.log(prep.n_classes)),
             "weight": 1.0, "weighted, printed mean": float(np.log(prep.n_classes)),
             "weighted, 120 x 120 sum": float(np.log(prep.n_classes))}]
    if prep.maps is not None:
        mse = float(relevance_mse(start, example).mean())
        rows.append({"term": "eq. (4), starting map vs targets", "value": mse,
                     "weight": config.lambda_fully,
                     "weighted, printed mean": config.lambda_fully * mse,
                     "weighted, 120 x 120 sum": config.lambda_fully * mse})
    for name, value, weight in (("eq. (6), sparsity of a target-shaped map", sparsity,
                                 config.lambda_weakly),
                                ("eq. (7), contiguity of a target-shaped map", contiguity,
                                 config.lambda_weakly * config.gamma)):
        rows.append({"term": name, "value": value, "weight": weight,
                     "weighted, printed mean": weight * value,
                     "weighted, 120 x 120 sum": weight * value * pixels})
    return pd.DataFrame(rows).set_index("term")


# ----------------------------------------------------------------------------- tables

def _ttest_p(a: np.ndarray, b: np.ndarray) -> float | None:
    """Two-sided paired t-test p of per-fold accuracies; None with fewer than two folds or
    when every fold differs by the same amount (the test is undefined)."""
    diff = a - b
    if len(diff) < 2 or np.allclose(diff, diff[0]):
        return None
    return paired_ttest(a, b).p


def accuracy_table(results: Results) -> pd.DataFrame:
    """Tables 4-6 layout: per variant, the test accuracy (%) mean ± std over folds, its
    gain over the baseline and a two-sided paired t-test against the baseline's folds."""
    main = results.main.assign(accuracy=lambda d: 100 * d["accuracy"])
    agg = aggregate_folds(main, by="variant", value="accuracy", decimals=1)
    base = main[main["variant"] == "baseline"].set_index("fold")["accuracy"].sort_index()
    rows = []
    for variant in [v for v in VARIANTS if v in agg.index]:
        acc = main[main["variant"] == variant].set_index("fold")["accuracy"].reindex(base.index)
        p = None if variant == "baseline" or acc.isna().any() else \
            _ttest_p(acc.to_numpy(), base.to_numpy())
        std = agg.loc[variant, "std"]
        rows.append({"variant": LABELS[variant],
                     "accuracy (%)": round(float(agg.loc[variant, "mean"]), 1),
                     "std over folds": "-" if np.isnan(std) else round(float(std), 1),
                     "gain over baseline": round(float(agg.loc[variant, "mean"] - base.mean()), 1),
                     "paired t-test p": "-" if p is None else round(p, 3),
                     "folds": int(agg.loc[variant, "n"])})
    return pd.DataFrame(rows).set_index("variant")


def per_fold_table(results: Results) -> pd.DataFrame:
    """Test accuracy (%) of every variant (rows) in every fold (columns)."""
    main = results.main.assign(accuracy=lambda d: 100 * d["accuracy"])
    table = main.pivot(index="variant", columns="fold", values="accuracy")
    table = table.loc[[v for v in VARIANTS if v in table.index]]
    table.index = [LABELS[v] for v in table.index]
    table.columns = [f"fold {c}" for c in table.columns]
    return table.round(1)


def _mean(frame: pd.DataFrame, column: str) -> float | None:
    if column not in frame or not frame[column].notna().any():
        return None
    return float(np.nanmean(frame[column]))


def map_scores(results: Results, prep: Prepared | None = None) -> pd.DataFrame:
    """Beyond the paper: every variant's maps scored against the ground-truth evidence
    regions, averaged over all test faces of all folds (columns: relevance map x_hat and
    Grad-CAM of the classifier; evidence = share of the map's mass inside the regions,
    pointing = share of peaks inside, away from landmarks = share of the mass on evidence
    more than two sigmas from every landmark). A row for the landmark target maps of
    eq. (4) (given ``prep``) and one for chance (a map without information)."""
    rows = []
    main = results.main
    for variant in [v for v in VARIANTS if v in set(main["variant"])]:
        frame = pd.concat([results.scores[k] for k in main.loc[main["variant"] == variant, "key"]])
        rows.append({"map": LABELS[variant],
                     "x_hat evidence": _mean(frame, "map_evidence"),
                     "x_hat pointing": _mean(frame, "map_pointing"),
                     "x_hat away from landmarks": _mean(frame, "map_away"),
                     "Grad-CAM evidence": _mean(frame, "cam_evidence"),
                     "Grad-CAM pointing": _mean(frame, "cam_pointing"),
                     "Grad-CAM away from landmarks": _mean(frame, "cam_away")})
    frame = pd.concat(results.scores.values())
    if prep is not None and prep.maps is not None and prep.masks is not None:
        idx = np.unique(frame["index"].to_numpy())
        target, mask = prep.maps[idx, 0].numpy(), prep.masks[idx]
        away = mask & ~prep.near[idx]
        rows.append({"map": "Landmark targets (eq. 4)",
                     "x_hat evidence": float(np.nanmean(evidence_score(target, mask))),
                     "x_hat pointing": float(np.nanmean(pointing_game(target, mask))),
                     "x_hat away from landmarks": float(np.mean(
                         (target * away).sum((1, 2)) / target.sum((1, 2))))})
    rows.append({"map": "Chance (uniform map)",
                 "x_hat evidence": _mean(frame, "chance"), "x_hat pointing": _mean(frame, "chance"),
                 "x_hat away from landmarks": _mean(frame, "away_chance"),
                 "Grad-CAM evidence": _mean(frame, "chance"),
                 "Grad-CAM pointing": _mean(frame, "chance"),
                 "Grad-CAM away from landmarks": _mean(frame, "away_chance")})
    table = pd.DataFrame(rows).set_index("map")
    return table.dropna(axis=1, how="all").astype(float).round(3).astype(object).fillna("-") \
        if len(table.columns) else table


def figure_runs(results: Results) -> pd.DataFrame:
    """The figure fold's runs with their map statistics on its test faces: mean |x_hat|
    (eq. 6 per pixel), error to the targets (eq. 4), evidence scores."""
    main_fold = results.table.loc[~results.table["main"], "fold"]
    fold = int(main_fold.iloc[0]) if len(main_fold) else 0
    rows = results.table[(results.table["fold"] == fold) & (results.table["variant"] != "baseline")]
    cols = {"label": "run", "accuracy": "accuracy (%)", "map_l1": "mean |x_hat|",
            "map_mse": "error to targets (eq. 4)", "map_evidence": "x_hat evidence",
            "map_away": "x_hat away from landmarks"}
    table = rows[[c for c in cols if c in rows]].rename(columns=cols).set_index("run")
    table = table.astype(float).round(3)
    table["accuracy (%)"] = (100 * table["accuracy (%)"]).round(1)
    return table


def best_variant(results: Results) -> str:
    """The variant with the highest mean test accuracy over folds."""
    return str(_accuracy(results).idxmax())


def confusion(results: Results, variant: str) -> pd.DataFrame:
    """Row-normalised confusion matrix of ``variant`` over all folds' test faces."""
    keys = results.main.loc[results.main["variant"] == variant, "key"]
    logits = np.concatenate([results.logits[k] for k in keys])
    labels = np.concatenate([results.scores[k]["label"].to_numpy() for k in keys])
    return normalized_confusion(logits, labels, results.classes)


# ----------------------------------------------------------------------------- figures

def figure_targets(prep: Prepared, index: int, fractions: Sequence[float]) -> Figure:
    """Fig. 6: a face and its target maps for growing sigma (as fractions of the side)."""
    if prep.maps is None:
        raise ValueError(f"{prep.name} has no landmarks, so no target maps")
    side = prep.x.shape[-1]
    images = [prep.x[index, 0].numpy()]
    titles = ["face"]
    points = prep.landmarks[index]
    for f in fractions:
        images.append(target_maps(points[None], prep.x.shape[-2:], sigma=f * side)[0, 0].numpy())
        titles.append(f"sigma = {f * side:.1f} px")
    return figures.image_grid(images, titles, ncols=len(images))


def figure_augmentation(prep: Prepared, indices: np.ndarray, config: Config,
                        seed: int = 0) -> Figure:
    """Figs. 7-8: faces (top), the same faces after eqs. (8)-(9) (middle) and their target
    maps moved by the same warp (bottom)."""
    aug = replace(config, augment=True).augmentation(with_maps=prep.maps is not None)
    x = prep.x[indices]
    maps = prep.maps[indices] if prep.maps is not None else None
    y = (torch.from_numpy(prep.labels[indices]), maps) if maps is not None else \
        torch.from_numpy(prep.labels[indices])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        warped, ys = aug(x, y)
    rows = [list(x[:, 0].numpy()), list(warped[:, 0].numpy())]
    titles = ["face"] * len(indices) + ["eqs. 8-9"] * len(indices)
    if maps is not None:
        rows.append(list(ys[1][:, 0].numpy().clip(0, 1)))
        titles += ["moved target"] * len(indices)
    return figures.image_grid([im for row in rows for im in row], titles, ncols=len(indices))


def figure_maps(results: Results, prep: Prepared, rows: Sequence[tuple[str, str]], *,
                fold: int = 0, targets: bool = False) -> Figure | None:
    """Figs. 9-10: the shown test faces (first row), optionally their target maps, then one
    row of relevance maps |x_hat| per ``(run key suffix, title)``, e.g.
    ``("fully", "lambda = 10")``, all divided by the largest value among them (white), so
    rows compare in scale. None when a row's run is missing."""
    keys = [f"f{fold}-{suffix}" for suffix, _ in rows]
    if any(k not in results.maps or "map" not in results.maps[k] for k in keys):
        return None
    show = results.show[fold]
    images = list(prep.x[show, 0].numpy())
    titles = [prep.classes[c] for c in prep.labels[show]]
    if targets and prep.maps is not None:
        images += list(prep.maps[show, 0].numpy())
        titles += ["target"] * len(show)
    peak = max(float(results.maps[k]["map"].max()) for k in keys)
    for key, (_, title) in zip(keys, rows):
        images += list(results.maps[key]["map"] / (peak if peak > 0 else 1.0))
        titles += [title] * len(show)
    return figures.image_grid(images, titles, ncols=len(show))


def highlights(results: Results, scores: pd.DataFrame) -> dict[str, str]:
    """Numbers the chapter's prose cites from :func:`map_scores`, formatted, "-" where the
    run lacks the variant: the fully supervised map's evidence share, chance, and the
    pointing game of Grad-CAM for the hybrid model and the baseline."""
    def cell(row: str, column: str) -> str:
        if row not in scores.index or column not in scores.columns:
            return "-"
        value = scores.loc[row, column]
        return value if isinstance(value, str) else f"{value:.2f}"
    return {"fully_evidence": cell(LABELS["fully"], "x_hat evidence"),
            "weakly_evidence": cell(LABELS["weakly"], "x_hat evidence"),
            "chance": cell("Chance (uniform map)", "x_hat evidence"),
            "hybrid_cam_pointing": cell(LABELS["hybrid"], "Grad-CAM pointing"),
            "baseline_cam_pointing": cell(LABELS["baseline"], "Grad-CAM pointing"),
            "cam_chance": cell("Chance (uniform map)", "Grad-CAM pointing")}


# ----------------------------------------------------------------------------- paper vs book

def _accuracy(results: Results) -> pd.Series:
    """Mean test accuracy (%) over folds per variant."""
    return results.main.groupby("variant")["accuracy"].mean() * 100


def measured(lab: Results, wild: Results | None, *, dataset: str) -> dict[str, Any]:
    """This run's values under the keys of ``paper_results.yaml`` (``relevance``): the fold
    protocol fills Table 5's rows on JAFFE and Table 4's otherwise (CK+ and the synthetic
    presets), the transfer protocol Table 6's (SFEW)."""
    acc = _accuracy(lab).round(2)
    gains = {v: round(float(acc[v] - acc["baseline"]), 2)
             for v in ("fully", "weakly", "hybrid") if v in acc}
    out: dict[str, Any] = {}
    if dataset == "jaffe":
        out |= {f"jaffe_{v}_accuracy": float(acc[v])
                for v in ("baseline", "fully", "weakly", "hybrid") if v in acc}
        if {"weakly", "fully"} <= set(acc.index):
            out["jaffe_weakly_minus_fully"] = round(float(acc["weakly"] - acc["fully"]), 2)
        if gains:
            out["jaffe_min_gain"] = min(gains.values())
        out["jaffe_best_variant"] = best_variant(lab)
    else:
        out["ckplus_baseline_accuracy"] = float(acc["baseline"])
        if "hybrid" in acc:
            out["ckplus_hybrid_accuracy"] = float(acc["hybrid"])
            out["ckplus_hybrid_gain"] = gains["hybrid"]
        out["ckplus_best_variant"] = best_variant(lab)
    if wild is not None:
        wacc = _accuracy(wild).round(2)
        out["sfew_baseline_accuracy"] = float(wacc["baseline"])
        proposed = [v for v in wacc.index if v != "baseline"]
        if proposed:
            best = max(proposed, key=lambda v: wacc[v])
            out["sfew_proposed_accuracy"] = float(wacc[best])
            out["sfew_gain"] = round(float(wacc[best] - wacc["baseline"]), 2)
    return out


def _value(row: pd.Series | None, column: str) -> float | None:
    if row is None or column not in row or pd.isna(row[column]):
        return None
    return float(row[column])


def _figure_pair(results: Results, variant: str, column: str) -> tuple[pd.Series | None,
                                                                      pd.Series | None]:
    """(run with the config's lambda, run with the figure's other lambda) on the figure fold."""
    extra = results.table[(results.table["variant"] == variant) & ~results.table["main"]]
    if extra.empty:
        return None, None
    other = extra.iloc[0]
    main = results.table[(results.table["key"] == f"f{int(other['fold'])}-{variant}")]
    return (None if main.empty else main.iloc[0]), other


def claims(lab: Results, wild: Results | None = None) -> list[Claim]:
    """The paper's claims, each checked on this run (``holds`` None where the run cannot
    test one)."""
    acc = _accuracy(lab)
    have = set(acc.index)
    gains = {v: acc[v] - acc["baseline"] for v in acc.index if v != "baseline"}
    out = [Claim("Every variant of the proposed model outperforms the baseline CNN",
                 "Sec. IV-C (Table 4); Table 5", all(g > 0 for g in gains.values()) if gains
                 else None, ", ".join(f"{v} {g:+.1f}" for v, g in gains.items()) + " points"
                 if gains else "no proposed variant run")]
    best = best_variant(lab)
    out.append(Claim("The hybrid model is the most accurate", "Tables 4-5",
                     best == "hybrid" if "hybrid" in have else None,
                     f"best: {best} ({acc[best]:.1f} %)"))
    pair = {"weakly", "fully"} <= have
    out.append(Claim("The weakly supervised model beats the fully supervised one",
                     "Sec. IV-C; Table 5", bool(acc["weakly"] > acc["fully"]) if pair else None,
                     f"weakly {acc['weakly']:.1f} vs fully {acc['fully']:.1f} %" if pair
                     else "needs both variants"))
    if wild is not None:
        wacc = _accuracy(wild)
        wprop = [v for v in wacc.index if v != "baseline"]
        out.append(Claim("After pre-training, the proposed model beats the baseline on the "
                         "small in-the-wild set", "Sec. IV-E, Table 6",
                         all(wacc[v] > wacc["baseline"] for v in wprop) if wprop else None,
                         ", ".join(f"{v} {wacc[v]:.1f}" for v in wprop)
                         + f" vs baseline {wacc['baseline']:.1f} %"))
    main, other = _figure_pair(lab, "fully", "lambda_fully")
    hi, lo = _value(main, "map_mse"), _value(other, "map_mse")
    out.append(Claim("A smaller lambda lets the fully supervised maps move further from the "
                     "targets", "Fig. 9", None if hi is None or lo is None else lo > hi,
                     "not run" if hi is None or lo is None else
                     f"error to targets {lo:.4f} (lambda {other['lambda_fully']:g}) vs "
                     f"{hi:.4f} (lambda {lab.config.lambda_fully:g})"))
    main, other = _figure_pair(lab, "weakly", "lambda_weakly")
    hi, lo = _value(main, "map_l1"), _value(other, "map_l1")
    out.append(Claim("A larger lambda makes the weakly supervised maps sparser", "Fig. 10",
                     None if hi is None or lo is None else lo < hi,
                     "not run" if hi is None or lo is None else
                     f"mean |x_hat| {lo:.3f} (lambda {other['lambda_weakly']:g}) vs {hi:.3f} "
                     f"(lambda {lab.config.lambda_weakly:g})"))
    hi, lo = _value(main, "map_evidence"), _value(other, "map_evidence")
    out.append(Claim("Over-regularised weakly supervised maps are less well defined around "
                     "the facial components (beyond the paper: a lower evidence score)",
                     "Fig. 10", None if hi is None or lo is None else lo < hi,
                     "not run or no evidence regions" if hi is None or lo is None else
                     f"evidence score {lo:.3f} (lambda {other['lambda_weakly']:g}) vs {hi:.3f}"))
    rows = lab.main[lab.main["variant"] != "baseline"]
    scored = "map_evidence" in rows and rows["map_evidence"].notna().any()
    if scored:
        ev = rows.groupby("variant")[["map_evidence", "chance"]].mean()
        holds, evidence = bool((ev["map_evidence"] > ev["chance"]).all()), \
            ", ".join(f"{v} {r.map_evidence:.2f}" for v, r in ev.iterrows()) \
            + f"; chance {ev['chance'].mean():.2f}"
    else:
        holds, evidence = None, "no relevance maps or no evidence regions"
    out.append(Claim("The relevance maps are strong around the facial components (beyond "
                     "the paper: more of their mass on the evidence regions than chance)",
                     "Sec. IV-B, Figs. 9-10", holds, evidence))
    away = rows.groupby("variant")["map_away"].mean().dropna() if "map_away" in rows \
        else pd.Series(dtype=float)
    pair = {"weakly", "fully"} <= set(away.index)
    out.append(Claim("The weakly supervised maps capture expression wrinkles the landmarks do "
                     "not mark (beyond the paper: more of their mass on evidence away from "
                     "the landmarks than the fully supervised maps)", "Sec. IV-B, IV-C",
                     bool(away["weakly"] > away["fully"]) if pair else None,
                     f"weakly {away['weakly']:.3f} vs fully {away['fully']:.3f} of the map's "
                     f"mass" if pair else "needs weakly and fully runs with evidence regions"))
    cm = confusion(lab, best)
    recall = pd.Series(np.diag(cm.to_numpy()), index=cm.index)
    if "contempt" in recall.index:
        out.append(Claim("Contempt is the hardest expression", "Fig. 11",
                         bool(recall.idxmin() == "contempt"),
                         f"lowest recall: {recall.idxmin()} ({recall.min():.2f}); contempt "
                         f"{recall['contempt']:.2f} ({best})"))
    return out


def config(params: Mapping[str, Any], *, epochs: int | None = None) -> Config:
    """The :class:`Config` a notebook's parameters describe (``epochs`` overrides, e.g. the
    fine-tuning epochs of Table 6)."""
    names = [f for f in Config.__dataclass_fields__ if f in params]
    values = {n: params[n] for n in names}
    if epochs is not None:
        values["epochs"] = epochs
    return Config(**values)
