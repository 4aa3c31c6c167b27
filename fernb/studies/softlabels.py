"""Soft labels and the gamma-perturbation ensemble (Gan, Chen and Xu, PRL 2019), as chapter 4
runs them.

Three stages, each stored on disk so that an interrupted run resumes where it stopped:

1. :func:`build_soft_labels`, the constructor (Sec. 3.2, Fig. 2 steps 1-2): a VGG16 trained
   with hard labels on the training split predicts the validation split, and eqs. (2)-(3)
   turn its predictions into the C x C matrix D. It is built twice: on ``dataset`` (the
   Table 1 analogue) and on ``source``, the other dataset, because the paper builds D on
   FER-2013 and uses it on SFEW and RAF too (Sec. 4.2).
2. :func:`gamma_sweep` (Sec. 4.3, Fig. 4): one base classifier per perturbation factor of
   ``gamma_grid``, trained on the training split with ``perturb(D, gamma)`` (eqs. 4-5) and
   scored on the validation split; the ensemble's gamma set is the window of ``n_members``
   consecutive values with the best mean validation accuracy
   (:func:`fernb.softlabels.select_gammas`).
3. :func:`compare_ensembles` (Tables 2, 4 and 6): for every repeat (its own seed) four
   ensembles of ``n_members`` networks, each scored on the test split by the unweighted score
   average of eq. (7): hard labels (the paper's VGG-Face baseline), soft labels at one fixed
   gamma, soft labels with the gamma set (the paper's method) and, when ``source`` differs
   from ``dataset``, the gamma set on the other dataset's D. Member k of every ensemble of a
   repeat starts from the same weights and sees the same batch order, so the ensembles differ
   only in their targets (a paired design).

Networks. VGG16 with a C-way last layer (Sec. 3.1; :func:`fernb.models.backbones.vgg16`),
``width`` times the channels. Trained from random initialisation it is ``vgg16_bn`` (plain
VGG16 does not train from scratch); with ``weights`` (a local VGG-Face file converted to a
torchvision state dict, see :mod:`fernb.models.backbones`) it is the paper's plain VGG16 with
VGG-Face's input preparation in front (:class:`fernb.models.backbones.VGGFaceInput`) and RGB
inputs. Every network starts from a common start, as the paper's all start from VGG-Face:
the ``weights`` file, random initialisation, or, with ``pretrain_on_source``, the network
trained on ``source`` (its last layer replaced). Each network's new last layer (and, with
random initialisation, all its weights) is drawn under its own seed.

``finetune`` says what a base classifier trains: ``"all"`` its whole network from the start
(the paper); ``"top"`` only VGG16's fifth convolution block and its three fully connected
layers, drawn under the member's own seed, on top of the first four blocks of the
dataset's constructor, which are frozen and shared (their outputs are computed once). On a
CPU that is the only way to train dozens of base classifiers; it narrows where members can
differ, which the diversity table measures.

Choices where the paper is silent: the networks keep their last weights (the paper trains a
fixed number of iterations; no validation-based selection, so the validation split only
builds D and picks gammas); the learning rate is multiplied by 0.1 once, after
``lr_decay_at`` of each stage's epochs (the paper: after 5K of 8K iterations on FER-2013,
3K of 6K on RAF, never on SFEW); a dataset without a validation part (RAF-DB) gives 20 % of
its training part to validation, as the paper's Sec. 4.3 does.
"""
from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from sklearn.model_selection import train_test_split
from torch import nn
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import TensorDataset

from fernb.data.datasets import FaceDataset
from fernb.data.splits import Split, standard_split
from fernb.data.synthetic import AU_NAMES, PROTOTYPES
from fernb.data.transforms import AUGMENTATIONS, BatchAugmentation
from fernb.ensemble import RULES, diversity
from fernb.evaluate import accuracy, normalized_confusion, paired_ttest, predict
from fernb.io import atomic_savez, atomic_torch_save, atomic_write_json, read_json
from fernb.losses import SoftLabelLoss
from fernb.models.backbones import Backbone, load_weights, vgg16
from fernb.models.softlabels import Network, VGGBase, VGGTop
from fernb.params import (LEARNING_RATE, POSITIVE_INT, ChapterSettings, Choice, Constraint,
                          DatasetName, ListOf, Range, Relation, Unused, dataset_rules, param,
                          relation)
from fernb.report import Claim
from fernb.seeding import derive_seed, seeded
from fernb.softlabels import (TABLE_1, TABLE_1_CLASSES, Violation, compare_soft_labels,
                              construct_soft_labels, diagonal_violations, normalize_rows, perturb,
                              restrict_soft_labels, row_entropy, select_gammas)
from fernb.train import FitConfig, Schedule, adam, fit, sgd

DATASETS = ("synth-lab", "synth-wild", "fer2013", "sfew", "rafdb", "folder")
FINETUNE = ("all", "top")
SOFT_LABEL_SOURCES = ("dataset", "source")
GROUPS = ("hard", "fixed", "perturbed", "transfer")
RULE = RULES["score_average"]  # eq. (7)
MOMENTUM, WEIGHT_DECAY, DROPOUT = 0.9, 0.0005, 0.5  # Sec. 4.2
MAX_FEATURE_BYTES = 2 * 1024**3


class _Text(Constraint):
    """Any string, e.g. a folder; ``""`` for none."""

    def describe(self) -> str:
        return "a string ('' for none)"

    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, str) else self.describe()


class _WeightsPath(Constraint):
    """``""`` (random initialisation) or the path of a local weights file (read, and
    checked, when the study starts: :func:`fernb.models.backbones.load_weights`)."""

    def describe(self) -> str:
        return "'' (random initialisation) or the path of a local weights file"

    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, str) else self.describe()


class _GammaOrBest(Constraint):
    """``"best"`` (the sweep's best single gamma) or a positive number."""

    def describe(self) -> str:
        return "'best' (the sweep's best gamma) or a number in (0, 10]"

    def problem(self, value: Any) -> str | None:
        if value == "best":
            return None
        return Range(0, 10, open_low=True).problem(value) and self.describe()


_DATA_RELATIONS, _DATA_UNUSED = dataset_rules("dataset", "data_root", ("n_subjects",))
_SOURCE_RELATIONS, _SOURCE_UNUSED = dataset_rules("source", "source_root", ("source_subjects",))


def _ascending(values: Sequence[float]) -> bool:
    return all(b > a for a, b in zip(values, values[1:]))


@dataclass(frozen=True)
class Settings(ChapterSettings):
    """The chapter's parameters (``notebooks/04_soft_labels.ipynb``); defaults are the ``cpu``
    profile."""

    dataset: str = param("synth-wild", DatasetName(DATASETS),
                         'or "fer2013", "sfew", "rafdb" (set data_root)')
    data_root: str = param("", _Text(), "folder of a real dataset")
    n_subjects: int = param(120, Range(4, 10_000, integer=True),
                            "synthetic subjects, 40 images each")
    source: str = param("synth-lab", DatasetName(DATASETS),
                        'the other dataset D is built on (paper: "fer2013")')
    source_root: str = param("", _Text(), "its folder, for a real dataset")
    source_subjects: int = param(60, Range(4, 10_000, integer=True),
                                 "synthetic subjects of the source")
    image_size: int = param(48, Range(48, 224, integer=True), "paper: 224")
    width: float = param(0.125, Range(0, 1, open_low=True),
                         "channel multiplier of VGG16 (paper: 1.0)")
    weights: str = param("", _WeightsPath(),
                         'local VGG-Face file (paper); "" is random initialisation')
    pretrain_on_source: bool = param(True, Choice(True, False),
                                     "every network starts from the source network (paper: False)")
    finetune: str = param("top", Choice(*FINETUNE),
                          'what base classifiers train: "top" or "all" (paper: "all")')
    soft_labels_from: str = param("dataset", Choice(*SOFT_LABEL_SOURCES),
                                  'the D the ensembles use: "dataset" or "source" '
                                  '(paper: FER-2013)')
    source_epochs: int = param(30, POSITIVE_INT, "paper: 13 (8K iterations on FER-2013)")
    constructor_epochs: int = param(10, POSITIVE_INT, "paper: 13 (FER-2013), 23 (RAF-DB)")
    epochs: int = param(4, POSITIVE_INT,
                        "per base classifier (paper: 13 FER-2013, 25 SFEW, 23 RAF-DB)")
    optimizer: str = param("adam", Choice("sgd", "adam"),
                           'paper: "sgd" (momentum 0.9, weight decay 0.0005)')
    lr: float = param(0.001, LEARNING_RATE, "paper: 0.01")
    lr_decay_at: float = param(0.6, Range(0, 1, open_low=True),
                               "rate x0.1 after this share of epochs (paper: 0.625 FER-2013)")
    batch_size: int = param(64, POSITIVE_INT, "paper: 48")
    augment: str = param("flip", Choice(*AUGMENTATIONS), "paper: none stated (SFEW is mirrored)")
    gamma_grid: list[float] = param([0.4, 0.8, 1.2, 1.6, 2.0, 2.4, 2.8],
                                    ListOf(Range(0, 10, open_low=True), min_len=1, unique=True),
                                    "paper: 0.4 to 2.8 in steps of 0.2")
    n_members: int = param(3, Range(1, 32, integer=True), "paper: 8 (FER-2013), 6 (SFEW, RAF-DB)")
    fixed_gamma: str | float = param("best", _GammaOrBest(),
                                     '"best" of the sweep, or a number (paper: 1.4, 2.2 and 1.0)')
    repeats: int = param(3, Range(1, 100, integer=True), "seeds of every ensemble (paper: 1)")

    RELATIONS: ClassVar[Sequence[Relation]] = (
        *_DATA_RELATIONS, *_SOURCE_RELATIONS,
        relation(("gamma_grid",), lambda v: _ascending(v["gamma_grid"]),
                 lambda v: f"gamma_grid = {v['gamma_grid']} must be strictly ascending (the "
                           f"gamma set is a window of consecutive values, Sec. 4.3)"),
        relation(("n_members", "gamma_grid"), lambda v: v["n_members"] <= len(v["gamma_grid"]),
                 lambda v: f"n_members = {v['n_members']}: the perturbation ensemble takes "
                           f"one gamma of gamma_grid per member, so n_members must be at most "
                           f"len(gamma_grid) = {len(v['gamma_grid'])}"),
        relation(("dataset", "source"),
                 lambda v: v["dataset"] != "synth-lab" or v["source"] in ("synth-lab", "folder"),
                 lambda v: f"source = {v['source']!r} has no contempt class, which dataset = "
                           f"'synth-lab' needs for its soft labels: use -p source synth-lab "
                           f"or a dataset with 8 classes"),
        relation(("pretrain_on_source", "dataset", "source", "data_root", "source_root"),
                 lambda v: not v["pretrain_on_source"]
                 or (v["dataset"], v["data_root"]) != (v["source"], v["source_root"]),
                 lambda v: "pretrain_on_source = True needs a source other than the dataset "
                           "itself; set -p pretrain_on_source False"),
    )
    UNUSED: ClassVar[Sequence[Unused]] = (
        *_DATA_UNUSED, *_SOURCE_UNUSED,
        Unused(("soft_labels_from",),
               lambda v: (v["dataset"], v["data_root"]) == (v["source"], v["source_root"]),
               lambda v: "source is the dataset itself, so there is one D only"),
    )


@dataclass(frozen=True)
class Config:
    """Settings of every stage (paper, Sec. 4.2: SGD, momentum 0.9, weight decay 0.0005, batch
    48, dropout 0.5, lr 0.01, VGG16 from VGG-Face at 224x224)."""

    dataset: str
    source: str
    image_size: int = 224
    width: float = 1.0
    weights: str = ""
    pretrain_on_source: bool = False
    finetune: str = "all"
    soft_labels_from: str = "dataset"
    source_epochs: int = 13
    constructor_epochs: int = 13
    epochs: int = 13
    optimizer: str = "sgd"
    lr: float = 0.01
    lr_decay_at: float = 1.0
    batch_size: int = 48
    augment: str = "none"
    gamma_grid: tuple[float, ...] = (0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2, 2.4,
                                     2.6, 2.8)
    n_members: int = 8
    fixed_gamma: float | str = "best"
    repeats: int = 1
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.finetune not in FINETUNE:
            raise ValueError(f"finetune must be one of {FINETUNE}, got {self.finetune!r}")
        if self.soft_labels_from not in SOFT_LABEL_SOURCES:
            raise ValueError(f"soft_labels_from must be one of {SOFT_LABEL_SOURCES}, got "
                             f"{self.soft_labels_from!r}")
        if not 1 <= self.n_members <= len(self.gamma_grid):
            raise ValueError(f"n_members must be in 1..len(gamma_grid) = "
                             f"{len(self.gamma_grid)}, got {self.n_members}")

    @property
    def channels(self) -> int:
        """VGG-Face takes RGB; from random initialisation grayscale is enough."""
        return 3 if self.weights else 1

    def record(self) -> dict[str, Any]:
        """The settings as stored in ``config.json`` (JSON types: tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))


def _check_config(out_dir: Path, config: Config) -> None:
    stored = read_json(out_dir / "config.json")
    if stored is not None and stored != config.record():
        raise ValueError(f"{out_dir} holds a study made with other settings ({stored}); use "
                         f"another folder or delete it")
    atomic_write_json(out_dir / "config.json", config.record())


# ----------------------------------------------------------------------- data and networks

def split(data: FaceDataset, seed: int = 0) -> Split:
    """The dataset's train/val/test split (:func:`fernb.data.splits.standard_split`); when it
    has no validation part (RAF-DB) a stratified 20 % of its training part validates (Sec.
    4.3), because the constructor needs validation images."""
    s = standard_split(data.labels, data.subjects, data.split, seed=seed)
    if len(s.val):
        return s
    train, val = train_test_split(s.train, test_size=0.2, random_state=seed,
                                  stratify=data.labels[s.train])
    return Split(train=np.sort(train), val=np.sort(val), test=s.test)


def split_sizes(datasets: Sequence[FaceDataset], seed: int = 0) -> pd.DataFrame:
    """Images per split of each dataset (:func:`split`), and its classes."""
    rows = []
    for d in datasets:
        s = split(d, seed)
        rows.append({"dataset": d.name, "classes": len(d.classes), "train": len(s.train),
                     "validation": len(s.val), "test": len(s.test)})
    return pd.DataFrame(rows).drop_duplicates("dataset").set_index("dataset")


def _inputs(data: FaceDataset, config: Config) -> FaceDataset:
    return data.with_options(channels=config.channels)


def _backbone(n_classes: int, config: Config) -> Backbone:
    return vgg16(n_classes=n_classes, in_chans=config.channels, width=config.width,
                 batch_norm=not config.weights, dropout=DROPOUT)


def network(n_classes: int, config: Config, start: Mapping[str, torch.Tensor] | None, *,
            seed: int, member: int = 0) -> Network:
    """A VGG16 drawn under ``seeded(seed, member)``, then loaded with ``start`` (a state dict
    of a torchvision VGG16 of this width) except its last layer, which keeps its own draw."""
    with seeded(seed, member):
        backbone = _backbone(n_classes, config)
    if start is not None:
        own = backbone.net.state_dict()
        keep = {k: v for k, v in start.items() if k not in backbone.head_keys}
        missing = sorted(set(own) - set(keep) - set(backbone.head_keys))
        if missing or set(keep) - set(own):
            raise ValueError(f"the start weights do not fit this VGG16 (missing {missing[:3]}, "
                             f"unexpected {sorted(set(keep) - set(own))[:3]})")
        backbone.net.load_state_dict({**own, **keep})
    return Network(backbone, face_input=bool(config.weights))


def start_weights(config: Config) -> dict[str, torch.Tensor] | None:
    """The ``weights`` file as a state dict of a torchvision VGG16, or None."""
    if not config.weights:
        return None
    backbone = _backbone(2, config)
    load_weights(backbone, config.weights)
    return backbone.net.state_dict()


def _fit_config(config: Config, epochs: int, **changes: Any) -> FitConfig:
    step = round(config.lr_decay_at * epochs)
    schedule = (Schedule("StepLR", step_size=max(1, step), gamma=0.1)
                if config.lr_decay_at < 1 and step < epochs else None)
    optimizer = (sgd(config.lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
                 if config.optimizer == "sgd" else adam(config.lr, weight_decay=WEIGHT_DECAY))
    return FitConfig(epochs=epochs, optimizer=optimizer, batch_size=config.batch_size,
                     schedule=schedule, device=config.device, precision=config.precision,
                     **changes)


def _load_npz(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path) as stored:
            return dict(stored)
    except (OSError, ValueError):
        return None


def _stored(out: Path, artifacts: Sequence[str]) -> dict | None:
    """A run's result if it and every artifact exist, else None."""
    result = read_json(out / "result.json")
    if result is None or any(not (out / a).exists() for a in artifacts):
        return None
    return result


def _restart(out: Path) -> None:
    (out / "result.json").unlink(missing_ok=True)


# ----------------------------------------------------------------------- stage 1: D

@dataclass
class Constructor:
    """The hard-label network of one dataset and the soft labels D it gives (eqs. 2-3).

    Attributes:
        name: the dataset's name.
        classes: its classes (rows and columns of ``soft_labels``).
        soft_labels: (C, C) D, row j the soft label of class j.
        violations: rows whose maximum is off their own class (Sec. 3.2 requires none).
        val_accuracy, test_accuracy: of the hard-label network (%).
        seconds: training time.
        network: the trained network.
    """

    name: str
    classes: tuple[str, ...]
    soft_labels: np.ndarray
    violations: list[Violation]
    val_accuracy: float
    test_accuracy: float
    seconds: float
    network: Network = field(repr=False)

    def frame(self, classes: Sequence[str] | None = None) -> pd.DataFrame:
        """D as a table (rows: true class, columns: soft label), in ``classes`` order."""
        order = list(classes or self.classes)
        d = restrict_soft_labels(self.soft_labels, self.classes, order)
        return pd.DataFrame(d, index=pd.Index(order, name="true class"),
                            columns=pd.Index(order, name="soft label"))


def _constructor(data: FaceDataset, s: Split, config: Config,
                 start: Mapping[str, torch.Tensor] | None, epochs: int, out: Path
                 ) -> Constructor:
    data = _inputs(data, config)
    net = network(data.n_classes, config, start, seed=config.seed)
    result = _stored(out, ("network.pt", "predictions.npz"))
    stored = _load_npz(out / "predictions.npz") if result is not None else None
    if stored is None:
        _restart(out)
        t0 = time.perf_counter()
        augment = BatchAugmentation(config.augment, config.image_size)
        fit(net, data.subset(s.train), None, _fit_config(
            config, epochs, seed=config.seed,
            augment=None if config.augment == "none" else augment), checkpoint=out / "ckpt")
        val = predict(net, data.subset(s.val), device=config.device,
                      precision=config.precision)[:, 0].numpy()
        test = predict(net, data.subset(s.test), device=config.device,
                       precision=config.precision)[:, 0].numpy()
        atomic_torch_save(net.state_dict(), out / "network.pt")
        atomic_savez(out / "predictions.npz", val=val, test=test)
        result = {"dataset": data.name, "classes": list(data.classes),
                  "seconds": round(time.perf_counter() - t0, 1)}
        atomic_write_json(out / "result.json", result)  # last: the stage is complete
        shutil.rmtree(out / "ckpt", ignore_errors=True)
        stored = {"val": val, "test": test}
    else:
        net.load_state_dict(torch.load(out / "network.pt", map_location="cpu",
                                       weights_only=True))
    probs = torch.from_numpy(stored["val"]).double().softmax(1).numpy()
    d = construct_soft_labels(probs, data.labels[s.val], on_violation="ignore")
    return Constructor(
        name=data.name, classes=data.classes, soft_labels=d,
        violations=diagonal_violations(d),
        val_accuracy=100 * accuracy(stored["val"], data.labels[s.val]),
        test_accuracy=100 * accuracy(stored["test"], data.labels[s.test]),
        seconds=float(result["seconds"]), network=net.cpu().eval())


@dataclass
class SoftLabels:
    """Stage 1: the constructors of the dataset and of the source (None when the source is
    the dataset itself), the D the ensembles use (``main``) and the other one
    (``other``, both in the dataset's class order)."""

    dataset: Constructor
    source: Constructor | None
    main: np.ndarray
    other: np.ndarray | None
    main_from: str


def _same(data: FaceDataset, source: FaceDataset) -> bool:
    return data.name == source.name and len(data) == len(source) and \
        np.array_equal(data.labels, source.labels)


def build_soft_labels(data: FaceDataset, source: FaceDataset, config: Config,
                      out_dir: str | Path) -> SoftLabels:
    """Sec. 3.2 on both datasets: train the hard-label network on the training split, predict
    the validation split, fuse the predictions into D (eqs. 2-3). The source's network comes
    first, since with ``pretrain_on_source`` it is the start of the dataset's."""
    out_dir = Path(out_dir)
    _check_config(out_dir, config)
    start = start_weights(config)
    src = None
    if not _same(data, source):
        src = _constructor(source, split(source, config.seed), config, start,
                           config.source_epochs, out_dir / "constructor_source")
        if config.pretrain_on_source:
            start = src.network.backbone.net.state_dict()
    own = _constructor(data, split(data, config.seed), config, start, config.constructor_epochs,
                       out_dir / "constructor")
    transferred = (None if src is None
                   else restrict_soft_labels(src.soft_labels, src.classes, data.classes))
    if config.soft_labels_from == "source" and transferred is not None:
        return SoftLabels(own, src, transferred, own.soft_labels, "source")
    return SoftLabels(own, src, own.soft_labels, transferred, "dataset")


def start_state(soft: SoftLabels, config: Config) -> dict[str, torch.Tensor] | None:
    """What every base classifier starts from with ``finetune="all"``: the source's network
    (``pretrain_on_source``), else the ``weights`` file, else nothing (random)."""
    if config.pretrain_on_source and soft.source is not None:
        return soft.source.network.backbone.net.state_dict()
    return start_weights(config)


def _constructors(soft: SoftLabels) -> list[Constructor]:
    return [c for c in (soft.dataset, soft.source) if c is not None]


def constructor_table(soft: SoftLabels) -> pd.DataFrame:
    """Each constructor's hard-label network: validation and test accuracy (%), the rows of
    its D that peak on another class, and its training time."""
    return pd.DataFrame([{"D built on": c.name, "validation accuracy (%)": c.val_accuracy,
                          "test accuracy (%)": c.test_accuracy,
                          "rows peaking elsewhere": len(c.violations),
                          "training seconds": c.seconds} for c in _constructors(soft)]
                        ).set_index("D built on")


def table1_frames(soft: SoftLabels) -> dict[str, pd.DataFrame]:
    """The soft-label matrices to draw next to each other: this run's D on the dataset and on
    the source, and the paper's Table 1 (FER-2013), in the dataset's class order where the
    classes allow it."""
    order = list(soft.dataset.classes)
    frames = {f"D built on {c.name} (this run)": c.frame(order if set(order) <= set(c.classes)
                                                          else None)
              for c in _constructors(soft)}
    paper = Constructor("paper", TABLE_1_CLASSES, TABLE_1.to_numpy(), [], np.nan, np.nan,
                        0.0, network=None)
    frames["Gan et al., Table 1 (FER-2013)"] = paper.frame(
        order if set(order) <= set(TABLE_1_CLASSES) else None)
    return frames


def reference_frames(soft: SoftLabels, data: FaceDataset, seed: int = 0
                     ) -> dict[str, pd.DataFrame]:
    """The dataset's D next to the generator's structures (:func:`mixture_reference`,
    :func:`prototype_reference`), as tables in the dataset's class order."""
    classes = list(data.classes)
    index = pd.Index(classes, name="true class")
    columns = pd.Index(classes, name="soft label")
    frames = {f"D built on {data.name}": soft.dataset.frame()}
    mix = mixture_reference(data, split(data, seed))
    if mix is not None:
        frames["mean true mixture"] = pd.DataFrame(mix, index=index, columns=columns)
    frames["action-unit overlap"] = pd.DataFrame(prototype_reference(classes), index=index,
                                                 columns=columns)
    return frames


def diagonal_table(soft: SoftLabels) -> pd.DataFrame:
    """Sec. 3.2's requirement per row of each D: its own entry, its largest other entry and
    whether the row peaks on its own class."""
    rows = []
    for c in (soft.dataset, soft.source):
        if c is None:
            continue
        for j, cls in enumerate(c.classes):
            row = c.soft_labels[j]
            other = int(np.argmax(np.where(np.arange(len(row)) == j, -1, row)))
            rows.append({"D built on": c.name, "class": cls, "own entry": row[j],
                         "largest other": c.classes[other], "its entry": row[other],
                         "peaks on own class": "yes" if row[j] >= row.max() else "no"})
    return pd.DataFrame(rows).set_index(["D built on", "class"])


def mixture_reference(data: FaceDataset, s: Split) -> np.ndarray | None:
    """The generator's answer to eqs. (2)-(3): the mean *true* emotion mixture of the
    validation images of each class (``data.mixtures``), or None for data without them."""
    if data.mixtures is None:
        return None
    return construct_soft_labels(data.mixtures[s.val], data.labels[s.val],
                                 on_violation="ignore")


def prototype_reference(classes: Sequence[str]) -> np.ndarray:
    """Which expressions *look* alike: the EMFACS prototypes of the classes
    (:data:`fernb.data.synthetic.PROTOTYPES`, action-unit intensities) compared by a Gaussian
    kernel exp(-d^2 / (2 s^2)) of their Euclidean distance d, with s the median distance
    between two different classes, each row normalised to sum 1. Neutral is the prototype
    without action units."""
    protos = np.array([[PROTOTYPES[c].get(au, 0.0) for au in AU_NAMES] for c in classes])
    dist = np.linalg.norm(protos[:, None] - protos[None], axis=-1)
    scale = np.median(dist[~np.eye(len(classes), dtype=bool)])
    return normalize_rows(np.exp(-dist**2 / (2 * scale**2)))


def reference_table(soft: SoftLabels, data: FaceDataset, source: FaceDataset, seed: int = 0
                    ) -> pd.DataFrame:
    """How close each D is to the generator's structure: the true mixtures (where the
    dataset has them) and the EMFACS prototype overlap (:func:`prototype_reference`);
    columns from :func:`fernb.softlabels.compare_soft_labels`."""
    rows = []
    for c, d in ((soft.dataset, data), (soft.source, source)):
        if c is None:
            continue
        mix = mixture_reference(d, split(d, seed))
        refs = {"true mixtures": mix, "action-unit overlap": prototype_reference(c.classes)}
        for name, ref in refs.items():
            if ref is not None:
                rows.append({"D built on": c.name, "reference": name,
                             **compare_soft_labels(c.soft_labels, ref)})
    if soft.source is not None:
        rows.append({"D built on": soft.dataset.name, "reference": f"D built on "
                     f"{soft.source.name}", **compare_soft_labels(
                         soft.dataset.soft_labels, restrict_soft_labels(
                             soft.source.soft_labels, soft.source.classes,
                             soft.dataset.classes))})
    return pd.DataFrame(rows).set_index(["D built on", "reference"])


def heatmaps(frames: Mapping[str, pd.DataFrame]) -> Figure:
    """Annotated heat-maps of soft-label matrices side by side (rows sum to 1)."""
    fig, axes = plt.subplots(1, len(frames), figsize=(4.6 * len(frames), 4.4), squeeze=False)
    for ax, (title, frame) in zip(axes.flat, frames.items()):
        sns.heatmap(frame, annot=True, fmt=".2f", cmap="Blues", vmin=0, vmax=1, square=True,
                    cbar=False, ax=ax, annot_kws={"fontsize": 7})
        ax.set(title=title, xlabel=frame.columns.name or "", ylabel=frame.index.name or "")
    fig.tight_layout()
    return fig


def order_kept(d: np.ndarray, gammas: Sequence[float]) -> bool:
    """Eq. (4) keeps the order of every row's entries, for every gamma (ties stay ties)."""
    rank = np.argsort(np.argsort(-d, axis=1, kind="stable"), axis=1, kind="stable")
    return all(np.array_equal(np.argsort(np.argsort(-perturb(d, g), axis=1, kind="stable"),
                                         axis=1, kind="stable"), rank) for g in gammas)


def perturbation_table(d: np.ndarray, classes: Sequence[str], gammas: Sequence[float],
                       row: str) -> pd.DataFrame:
    """One row of D after eq. (4) for each gamma, with the row's entropy (nats)."""
    j = list(classes).index(row)
    table = pd.DataFrame([perturb(d, g)[j] for g in gammas], columns=list(classes),
                         index=pd.Index(list(gammas), name="gamma"))
    table["entropy"] = [float(row_entropy(perturb(d, g))[j]) for g in gammas]
    return table


# ----------------------------------------------------------------------- members

@dataclass
class _Inputs:
    """What base classifiers train on: images, or the frozen base's outputs (``"top"``)."""

    train: Any
    val: Any
    test: Any
    n_classes: int


def _features(base: nn.Module, data: FaceDataset, config: Config) -> torch.Tensor:
    return predict(base, data, device=config.device, precision=config.precision,
                   batch_size=256)  # (N, K, h, w)


def inputs(data: FaceDataset, soft: SoftLabels, config: Config) -> _Inputs:
    """The training/validation/test inputs of the base classifiers: images for
    ``finetune="all"``; for ``"top"`` the outputs of the constructor's first four
    convolution blocks, computed once (they are frozen)."""
    data = _inputs(data, config)
    s = split(data, config.seed)
    parts = [data.subset(i) for i in (s.train, s.val, s.test)]
    if config.finetune == "all":
        return _Inputs(*parts, data.n_classes)
    base = VGGBase(soft.dataset.network)
    with torch.no_grad():
        probe = base.eval()(parts[0].tensors(np.arange(1))[0])
    n_bytes = probe[0].numel() * 4 * len(data)
    if n_bytes > MAX_FEATURE_BYTES:
        raise ValueError(f"finetune='top' would store {n_bytes / 1024**3:.1f} GiB of features "
                         f"for {len(data)} images at {config.image_size} px; use "
                         f"finetune='all' (or a smaller image_size or width)")
    tensors = [TensorDataset(_features(base, p, config).cpu(),
                             torch.as_tensor(p.labels)) for p in parts]
    return _Inputs(*tensors, data.n_classes)


def _member_network(n_classes: int, config: Config, start: Mapping[str, torch.Tensor] | None,
                    seed: int, k: int) -> nn.Module:
    if config.finetune == "top":
        with seeded(seed, k):
            return VGGTop(_backbone(n_classes, config))
    return network(n_classes, config, start, seed=seed, member=k)


def _member(x: _Inputs, d: np.ndarray | None, config: Config,
            start: Mapping[str, torch.Tensor] | None, seed: int, k: int, out: Path
            ) -> dict[str, Any]:
    """Train base classifier k of an ensemble (hard labels when ``d`` is None, else eq. 5
    with the soft labels ``d``), store its validation and test logits; or load them."""
    result = _stored(out, ("logits.npz",))
    stored = _load_npz(out / "logits.npz") if result is not None else None
    if stored is not None:
        return {**result, **stored}
    _restart(out)
    net = _member_network(x.n_classes, config, start, seed, k)
    t0 = time.perf_counter()
    images = isinstance(x.train, FaceDataset)
    augment = (BatchAugmentation(config.augment, config.image_size)
               if images and config.augment != "none" else None)
    history = fit(net, x.train, None, _fit_config(
        config, config.epochs, loss=None if d is None else SoftLabelLoss(d),
        seed=derive_seed(seed, "fit", k), augment=augment), checkpoint=out / "ckpt")
    logits = {part: predict(net, getattr(x, part), device=config.device,
                            precision=config.precision)[:, 0].numpy()
              for part in ("val", "test")}
    atomic_savez(out / "logits.npz", **logits)
    result = {"seconds": round(time.perf_counter() - t0, 2),
              "train_loss": float(history.to_frame()["train_loss"].iloc[-1])}
    atomic_write_json(out / "result.json", result)  # last: the member is complete
    shutil.rmtree(out / "ckpt", ignore_errors=True)
    return {**result, **logits}


# ----------------------------------------------------------------------- stage 2: gamma sweep

def member_key(repeat: int, k: int, target: str, gamma: float | None = None) -> str:
    """The folder of one stored base classifier: repeat, member index and target (``hard``,
    or ``main``/``other`` D at ``gamma``). Runs with equal keys are the same computation
    (same start, batch order and targets), so the sweep's network at a gamma is member 0
    of repeat 0 of an ensemble that uses that gamma first."""
    return f"r{repeat}-k{k}-{target}" + ("" if gamma is None else f"-gamma{gamma:g}")


@dataclass
class Sweep:
    """Stage 2: validation (and test) accuracy (%) of one base classifier per gamma, the
    gamma set of the perturbation ensemble, the fixed gamma, and the accuracies of the same
    network trained with hard labels."""

    table: pd.DataFrame
    gammas: tuple[float, ...]
    fixed_gamma: float
    hard_val_accuracy: float
    hard_test_accuracy: float


def gamma_sweep(data: FaceDataset, soft: SoftLabels, config: Config, out_dir: str | Path,
                x: _Inputs | None = None) -> Sweep:
    """Sec. 4.3, Fig. 4: one base classifier per gamma of ``gamma_grid`` on ``perturb(D,
    gamma)``, all starting like member 0 of an ensemble (same weights, same batch order),
    scored on the validation split, and the same network with hard labels for reference."""
    out_dir = Path(out_dir)
    _check_config(out_dir, config)
    x = x or inputs(data, soft, config)
    s = split(data, config.seed)
    start = start_state(soft, config)
    members = out_dir / "members"
    hard = _member(x, None, config, start, config.seed, 0, members / member_key(0, 0, "hard"))
    rows = []
    for g in config.gamma_grid:
        d = perturb(soft.main, g)
        run = _member(x, d, config, start, config.seed, 0, members / member_key(0, 0, "main", g))
        rows.append({"gamma": g,
                     "val accuracy": 100 * accuracy(run["val"], data.labels[s.val]),
                     "test accuracy": 100 * accuracy(run["test"], data.labels[s.test]),
                     "mean entropy": float(row_entropy(d).mean()),
                     "mean own entry": float(np.diag(d).mean()), "seconds": run["seconds"]})
    table = pd.DataFrame(rows)
    gammas = select_gammas(table["gamma"], table["val accuracy"], config.n_members)
    fixed = (float(table.loc[table["val accuracy"].idxmax(), "gamma"])
             if config.fixed_gamma == "best" else float(config.fixed_gamma))
    return Sweep(table, gammas, fixed, 100 * accuracy(hard["val"], data.labels[s.val]),
                 100 * accuracy(hard["test"], data.labels[s.test]))


def sweep_figure(sweep: Sweep, hard_val: float | None = None) -> Figure:
    """Validation accuracy against gamma (Fig. 4), the chosen set shaded, the fixed gamma
    marked, and the hard-label network's validation accuracy as a dashed line."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    t = sweep.table
    ax.axvspan(min(sweep.gammas) - 0.05, max(sweep.gammas) + 0.05, color="C2", alpha=0.15,
               label="chosen gamma set")
    ax.plot(t["gamma"], t["val accuracy"], marker="o", label="soft labels, one network")
    ax.axvline(sweep.fixed_gamma, color="C1", ls=":", label=f"fixed gamma {sweep.fixed_gamma:g}")
    if hard_val is not None:
        ax.axhline(hard_val, color="gray", ls="--", label="hard labels")
    ax.set(xlabel="perturbation factor gamma", ylabel="validation accuracy (%)")
    ax.legend(fontsize=8)
    return fig


# ----------------------------------------------------------------------- stage 3: ensembles

def group_names(soft: SoftLabels) -> dict[str, str]:
    """The ensembles' names, with the dataset each D was built on."""
    main = soft.dataset.name if soft.main_from == "dataset" else soft.source.name
    names = {"hard": "Hard labels", "fixed": f"Soft labels ({main}), fixed gamma",
             "perturbed": f"Soft labels ({main}), gamma perturbation"}
    if soft.source is not None:
        other = soft.source.name if soft.main_from == "dataset" else soft.dataset.name
        names["transfer"] = f"Soft labels ({other}), gamma perturbation"
    return names


@dataclass
class Comparison:
    """Stage 3: per-member runs (``runs``: repeat, group, member, gamma, seconds, val and test
    accuracy in %), the test logits (N, M, C) of every ensemble by (repeat, group), the test
    labels and the classes."""

    runs: pd.DataFrame
    logits: dict[tuple[int, str], np.ndarray]
    val_logits: dict[tuple[int, str], np.ndarray]
    labels: np.ndarray
    val_labels: np.ndarray
    classes: tuple[str, ...]
    names: dict[str, str]

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(self.names)

    def ensemble_accuracy(self, group: str) -> np.ndarray:
        """(repeats,) test accuracy (%) of the ensemble of ``group`` under eq. (7)."""
        keys = sorted(k for k in self.logits if k[1] == group)
        return np.array([100 * accuracy(self.logits[k], self.labels, rule=RULE) for k in keys])

    def single_accuracy(self, group: str) -> np.ndarray:
        """(repeats,) mean test accuracy (%) of the group's single networks."""
        runs = self.runs[self.runs["group"] == group]
        return runs.groupby("repeat")["test accuracy"].mean().to_numpy()


def repeat_seed(seed: int, repeat: int) -> int:
    """The seed of repeat ``repeat``: repeat 0 is the sweep's seed itself."""
    return seed if repeat == 0 else derive_seed(seed, "repeat", repeat)


def compare_ensembles(data: FaceDataset, soft: SoftLabels, sweep: Sweep, config: Config,
                      out_dir: str | Path, x: _Inputs | None = None) -> Comparison:
    """Tables 2, 4 and 6: per repeat, the ensembles of ``n_members`` base classifiers with
    hard labels, with the fixed gamma, with the gamma set, and with the gamma set on the
    other dataset's D (when there is one); each member stored as it finishes."""
    out_dir = Path(out_dir)
    _check_config(out_dir, config)
    x = x or inputs(data, soft, config)
    s = split(data, config.seed)
    start = start_state(soft, config)
    n = config.n_members
    plans: dict[str, list[tuple[str, float | None, np.ndarray | None]]] = {
        "hard": [("hard", None, None)] * n,
        "fixed": [("main", sweep.fixed_gamma, perturb(soft.main, sweep.fixed_gamma))] * n,
        "perturbed": [("main", g, perturb(soft.main, g)) for g in sweep.gammas],
    }
    if soft.other is not None:
        plans["transfer"] = [("other", g, perturb(soft.other, g)) for g in sweep.gammas]
    rows, logits, val_logits = [], {}, {}
    for r in range(config.repeats):
        seed = repeat_seed(config.seed, r)
        for group, members in plans.items():
            test_parts, val_parts = [], []
            for k, (target, g, d) in enumerate(members):
                run = _member(x, d, config, start, seed, k,
                              out_dir / "members" / member_key(r, k, target, g))
                test_parts.append(run["test"])
                val_parts.append(run["val"])
                rows.append({"repeat": r, "group": group, "member": k,
                             "gamma": np.nan if g is None else g, "seconds": run["seconds"],
                             "val accuracy": 100 * accuracy(run["val"], data.labels[s.val]),
                             "test accuracy": 100 * accuracy(run["test"], data.labels[s.test])})
            logits[(r, group)] = np.stack(test_parts, axis=1)  # (N, M, C)
            val_logits[(r, group)] = np.stack(val_parts, axis=1)  # (N, M, C)
    return Comparison(pd.DataFrame(rows), logits, val_logits, data.labels[s.test],
                      data.labels[s.val], data.classes, group_names(soft))


def training_seconds(out_dir: str | Path) -> float:
    """Seconds spent training and predicting with every network stored in ``out_dir``
    (each counted once, as first trained)."""
    results = [read_json(p) for p in Path(out_dir).glob("*/result.json")]
    results += [read_json(p) for p in Path(out_dir).glob("members/*/result.json")]
    return float(sum(r["seconds"] for r in results if r))


def _spread(values: np.ndarray) -> str:
    if len(values) < 2:
        return f"{values.mean():.1f}"
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"


def accuracy_table(comparison: Comparison, sweep: Sweep) -> pd.DataFrame:
    """Tables 2, 4 and 6: test accuracy (%) of each ensemble (eq. 7) and of its single
    networks (mean over members), mean ± std over the repeats."""
    names = comparison.names
    gammas = {"hard": "-", "fixed": f"{sweep.fixed_gamma:g}",
              "perturbed": ", ".join(f"{g:g}" for g in sweep.gammas),
              "transfer": ", ".join(f"{g:g}" for g in sweep.gammas)}
    rows = [{"method": names[g], "gamma": gammas[g],
             "ensemble": _spread(comparison.ensemble_accuracy(g)),
             "single network": _spread(comparison.single_accuracy(g)),
             "members": int(((comparison.runs["group"] == g)
                             & (comparison.runs["repeat"] == 0)).sum())}
            for g in comparison.groups]
    return pd.DataFrame(rows).set_index("method")


def _paired_p(a: np.ndarray, b: np.ndarray) -> float | None:
    """Two-sided paired t-test p of two series over the repeats; None when the test is
    undefined (fewer than two repeats, or differences that do not vary)."""
    diff = np.asarray(a, float) - np.asarray(b, float)
    if len(diff) < 2 or np.allclose(diff, diff[0], rtol=0, atol=1e-9):
        return None
    return paired_ttest(a, b).p


def ttests(comparison: Comparison) -> pd.DataFrame:
    """Paired t-tests over the repeats of the ensembles' test accuracies: the perturbation
    ensemble against each other ensemble (empty with one repeat)."""
    if comparison.runs["repeat"].nunique() < 2:
        return pd.DataFrame()
    ours = comparison.ensemble_accuracy("perturbed")
    rows = []
    for g in comparison.groups:
        if g == "perturbed":
            continue
        other = comparison.ensemble_accuracy(g)
        p = _paired_p(ours, other)
        rows.append({"comparison": f"{comparison.names['perturbed']} vs {comparison.names[g]}",
                     "mean difference": float((ours - other).mean()),
                     "p": "-" if p is None else f"{p:.3f}",
                     "significant": "-" if p is None else ("✓" if p < 0.05 else "✗")})
    return pd.DataFrame(rows).set_index("comparison")


def diversity_table(comparison: Comparison) -> pd.DataFrame:
    """Mean pairwise diversity of each ensemble's members on the test split over the
    repeats (disagreement, Q-statistic, double fault; Kuncheva & Whitaker) and its oracle
    accuracy; "-" where undefined (one member, or a Q-statistic without shared errors)."""
    rows = []
    for (r, g), z in comparison.logits.items():
        if z.shape[1] < 2:
            continue
        rows.append({"ensemble": comparison.names[g], **diversity(z, comparison.labels)})
    if not rows:
        return pd.DataFrame({"ensemble": [], "disagreement": []}).set_index("ensemble")
    table = pd.DataFrame(rows).groupby("ensemble", sort=False).mean()
    return table.round(3).astype(object).where(table.notna(), "-")


def pooled(comparison: Comparison, group: str) -> tuple[np.ndarray, np.ndarray]:
    """Test logits and labels of one group's ensembles, all repeats together."""
    keys = sorted(k for k in comparison.logits if k[1] == group)
    return (np.concatenate([comparison.logits[k] for k in keys]),
            np.concatenate([comparison.labels] * len(keys)))


def confusion(comparison: Comparison, group: str = "perturbed") -> pd.DataFrame:
    """Row-normalised confusion matrix (%) of a group's ensembles (eq. 7), repeats pooled
    (Tables 3, 5 and 7)."""
    z, y = pooled(comparison, group)
    return 100 * normalized_confusion(z, y, comparison.classes, rule=RULE)


# The paper's remarks on its confusion matrices (Secs. 4.4-4.6): (true class, the classes it is
# said to be mistaken for, where).
OBSERVATIONS = (
    ("disgust", ("anger",), "Sec. 4.4, Table 3"),
    ("anger", ("sadness",), "Sec. 4.4, Table 3"),
    ("fear", ("sadness", "surprise"), "Secs. 4.4 and 4.6, Tables 3 and 7"),
)


def observations(cm: pd.DataFrame) -> pd.DataFrame:
    """Each remark checked on a confusion matrix: the class a true class is most often
    mistaken for, its share (%), the share of the class(es) the paper names, and whether the
    most frequent mistake is one of them; no rows when the classes lack the remarked ones
    (e.g. a folder dataset of other expressions)."""
    columns = ["true class", "paper: mistaken for", "where", "share named (%)",
               "most frequent mistake", "its share (%)", "holds"]
    rows = []
    for true, named, where in OBSERVATIONS:
        if true not in cm.index or any(c not in cm.columns for c in named):
            continue
        row = cm.loc[true].drop(true)
        top = str(row.idxmax())
        rows.append({"true class": true, "paper: mistaken for": " or ".join(named),
                     "where": where, "share named (%)": float(row[list(named)].max()),
                     "most frequent mistake": top, "its share (%)": float(row.max()),
                     "holds": "yes" if top in named else "no"})
    return pd.DataFrame(rows, columns=columns).set_index("true class")


# ----------------------------------------------------------------------- paper vs this book

# Which dataset's rows of paper_results.yaml a run fills: synth-wild imitates RAF-DB.
PAPER_KEYS = {"fer2013": "fer2013", "sfew": "sfew", "rafdb": "raf", "synth-wild": "raf",
              "synth-lab": "raf", "folder": "raf"}
FER_ORDER = TABLE_1_CLASSES


def _gain(a: np.ndarray, b: np.ndarray) -> float:
    return round(float(a.mean() - b.mean()), 2)


def _rate(cm: pd.DataFrame, true: str, pred: str) -> float | None:
    if true in cm.index and pred in cm.columns:
        return round(float(cm.loc[true, pred]), 2)
    return None


def measured(soft: SoftLabels, sweep: Sweep, comparison: Comparison, dataset: str
             ) -> dict[str, Any]:
    """This run's values for :func:`fernb.report.paper_vs_book` ("soft_labels")."""
    c = soft.dataset
    key = PAPER_KEYS[dataset]
    values: dict[str, Any] = {
        "constructor_val_accuracy": round(c.val_accuracy, 2),
        "constructor_test_accuracy": round(c.test_accuracy, 2),
        "table1_violations": len(c.violations),
        "perturbation_keeps_order": order_kept(c.soft_labels, sweep.table["gamma"]),
    }
    if all(cls in c.classes for cls in FER_ORDER):
        d = restrict_soft_labels(c.soft_labels, c.classes, FER_ORDER)
        values["table1_diagonal"] = [round(float(v), 4) for v in np.diag(d)]
    hard_e, hard_s = comparison.ensemble_accuracy("hard"), comparison.single_accuracy("hard")
    fixed_e, fixed_s = comparison.ensemble_accuracy("fixed"), comparison.single_accuracy("fixed")
    pert_e, pert_s = (comparison.ensemble_accuracy("perturbed"),
                      comparison.single_accuracy("perturbed"))
    values |= {f"{key}_ensemble_accuracy": round(float(pert_e.mean()), 2),
               f"{key}_single_accuracy": round(float(fixed_s.mean()), 2),
               f"{key}_fixed_gamma_ensemble_accuracy": round(float(fixed_e.mean()), 2),
               f"{key}_hard_accuracy": [round(float(hard_s.mean()), 2),
                                        round(float(hard_e.mean()), 2)],
               "perturbation_gain": _gain(pert_e, fixed_e),
               "ensemble_gain_over_single": _gain(pert_e, pert_s),
               "soft_label_gain_single": _gain(fixed_s, hard_s),
               "ensemble_gain_over_hard": _gain(pert_e, hard_e)}
    if sweep.fixed_gamma == 1.0:
        values[f"{key}_gamma1_accuracy"] = [round(float(fixed_s.mean()), 2),
                                            round(float(fixed_e.mean()), 2)]
    if "transfer" in comparison.groups:
        values["transfer_gain_over_hard"] = _gain(comparison.ensemble_accuracy("transfer"),
                                                  hard_e)
    cm = confusion(comparison)
    for name, (true, pred) in {"disgust_as_anger": ("disgust", "anger"),
                               "anger_as_sadness": ("anger", "sadness"),
                               "fear_as_sadness": ("fear", "sadness"),
                               "fear_as_surprise": ("fear", "surprise"),
                               "happiness_recall": ("happiness", "happiness")}.items():
        rate = _rate(cm, true, pred)
        if rate is not None:
            values[name] = rate
    return values


def claims(soft: SoftLabels, sweep: Sweep, comparison: Comparison) -> list[Claim]:
    """The paper's claims, each checked on this run."""
    c = soft.dataset
    bad = ", ".join(f"{c.classes[v.row]} peaks on {c.classes[v.argmax]}" for v in c.violations)
    hard_e, hard_s = comparison.ensemble_accuracy("hard"), comparison.single_accuracy("hard")
    fixed_e, fixed_s = comparison.ensemble_accuracy("fixed"), comparison.single_accuracy("fixed")
    pert_e = comparison.ensemble_accuracy("perturbed")
    p = _paired_p(pert_e, fixed_e)
    div = diversity_table(comparison)
    names = comparison.names
    dis = {g: div.loc[names[g], "disagreement"] for g in ("fixed", "perturbed")
           if names[g] in div.index}
    t = sweep.table.sort_values("gamma")
    low, best = t.iloc[0], t.loc[t["val accuracy"].idxmax()]
    cm = confusion(comparison)
    recall = pd.Series(np.diag(cm), index=cm.index)
    out = [
        Claim(f"every row of D peaks on its own class (D on {c.name})", "Sec. 3.2",
              not c.violations, f"{len(c.violations)} of {len(c.classes)} rows do not"
              + (f": {bad}" if bad else "")),
        Claim("eq. (4) keeps each row's order for every gamma of the grid", "Sec. 3.2",
              order_kept(c.soft_labels, t["gamma"]), f"{len(t)} gammas"),
        Claim(f"the smallest gamma ({low['gamma']:g}) is too smooth: below the best gamma",
              "Sec. 4.3, Fig. 4", bool(low["val accuracy"] < best["val accuracy"]),
              f"{low['val accuracy']:.1f} at {low['gamma']:g} vs {best['val accuracy']:.1f} at "
              f"{best['gamma']:g}"),
        Claim("soft labels beat hard labels (single networks)", "Tables 2, 4, 6",
              bool(fixed_s.mean() > hard_s.mean()),
              f"{fixed_s.mean():.1f} (gamma {sweep.fixed_gamma:g}) vs {hard_s.mean():.1f}"),
        Claim("an ensemble at a fixed gamma beats its single networks", "Tables 2, 4, 6",
              bool(fixed_e.mean() > fixed_s.mean()),
              f"{fixed_e.mean():.1f} vs {fixed_s.mean():.1f}"),
        Claim("the gamma-perturbation ensemble beats the fixed-gamma ensemble of the same size",
              "Tables 2, 4, 6", bool(pert_e.mean() > fixed_e.mean()),
              f"{pert_e.mean():.1f} vs {fixed_e.mean():.1f}"
              + ("" if p is None else f", paired t-test p = {p:.3f} ({len(pert_e)} repeats)")),
        Claim("the gamma-perturbation ensemble beats the hard-label ensemble", "Tables 2, 4, 6",
              bool(pert_e.mean() > hard_e.mean()), f"{pert_e.mean():.1f} vs {hard_e.mean():.1f}"),
        Claim("perturbing gamma makes the members more diverse", "Sec. 3.4",
              None if len(dis) < 2 else bool(dis["perturbed"] > dis["fixed"]),
              "" if len(dis) < 2 else
              f"disagreement {dis['perturbed']:.3f} vs {dis['fixed']:.3f} at a fixed gamma"),
    ]
    if "transfer" in comparison.groups:
        tr = comparison.ensemble_accuracy("transfer")
        src = soft.source.name if soft.main_from == "dataset" else soft.dataset.name
        out.append(Claim(f"soft labels built on another dataset ({src}) beat hard labels",
                         "Secs. 4.2, 4.5, 4.6", bool(tr.mean() > hard_e.mean()),
                         f"ensemble {tr.mean():.1f} vs {hard_e.mean():.1f}"))
    else:
        out.append(Claim("soft labels built on another dataset beat hard labels",
                         "Secs. 4.2, 4.5, 4.6", None, "the source is the dataset itself"))
    for _, row in observations(cm).reset_index().iterrows():
        out.append(Claim(f"{row['true class']} is most often mistaken for "
                         f"{row['paper: mistaken for']}", row["where"], row["holds"] == "yes",
                         f"most often {row['most frequent mistake']} "
                         f"({row['its share (%)']:.1f} %)"))
    if "happiness" in recall.index:
        out.append(Claim("happiness is the best-recognised class", "Sec. 4.6",
                         bool(recall.idxmax() == "happiness"),
                         f"happiness {recall['happiness']:.1f} %, best {recall.idxmax()} "
                         f"{recall.max():.1f} %"))
    return out
