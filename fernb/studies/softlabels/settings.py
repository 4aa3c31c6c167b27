"""Chapter 4's parameters, declared once, and the constants its prose may cite.

The defaults are the ``cpu`` profile: the paper's protocol (Gan, Chen and Xu, Sec. 4.2)
scaled down to a 2-core CPU; ``book/profiles/paper.yaml`` restores the paper's values.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from fernb.data.datasets import SYNTHETIC
from fernb.data.transforms import AUGMENTATIONS
from fernb.params import (LEARNING_RATE, POSITIVE_INT, ChapterSettings, Choice, Constraint,
                          DatasetName, ListOf, Range, Relation, Unused, dataset_rules, param,
                          relation)
from fernb.softlabels import TABLE_1

DATASETS = ("synth-wild", "synth-lab", "fer2013", "sfew", "rafdb", "folder")
SOFT_LABEL_SOURCES = ("source", "dataset")


class _Text(Constraint):
    """Any string, e.g. a folder; ``""`` for none."""

    def describe(self) -> str:
        return "a string ('' for none)"

    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, str) else self.describe()


class _WeightsPath(_Text):
    """``""`` (random initialisation) or the path of a local weights file (read, and
    checked, when the first network is built: :func:`fernb.models.backbones.load_weights`)."""

    def describe(self) -> str:
        return "'' (random initialisation) or the path of a local weights file"


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


def _same_source(v: Any) -> bool:
    return (v["dataset"], v["data_root"]) == (v["source"], v["source_root"])


@dataclass(frozen=True)
class Settings(ChapterSettings):
    """The chapter's parameters (``notebooks/04_soft_labels.ipynb``); defaults are the ``cpu``
    profile."""

    dataset: str = param("synth-wild", DatasetName(DATASETS),
                         'or "fer2013", "sfew", "rafdb" (set data_root)')
    data_root: str = param("", _Text(), "folder of a real dataset")
    n_subjects: int = param(64, Range(4, 10_000, integer=True),
                            "synthetic subjects, 40 images each")
    source: str = param("synth-lab", DatasetName(DATASETS),
                        'the other dataset, where D is built (paper: "fer2013")')
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
    soft_labels_from: str = param("source", Choice(*SOFT_LABEL_SOURCES),
                                  'where D is built: "source" (paper) or "dataset"')
    source_epochs: int = param(20, POSITIVE_INT, "paper: 13 (8K iterations on FER-2013)")
    epochs: int = param(6, POSITIVE_INT,
                        "every network on the dataset (paper: 13 FER-2013, 25 SFEW, 23 RAF-DB)")
    optimizer: str = param("adam", Choice("sgd", "adam"),
                           'paper: "sgd" (momentum 0.9, weight decay 0.0005)')
    lr: float = param(0.001, LEARNING_RATE, "paper: 0.01")
    lr_decay_at: float = param(0.6, Range(0, 1, open_low=True),
                               "rate x0.1 after this share of epochs, 1 never (paper: 0.5 RAF-DB)")
    batch_size: int = param(32, POSITIVE_INT, "paper: 48")
    augment: str = param("flip", Choice(*AUGMENTATIONS),
                         "every network (paper: none stated, SFEW is mirrored)")
    gamma_grid: list[float] = param([0.4, 1.0, 1.6, 2.2, 2.8],
                                    ListOf(Range(0, 10, open_low=True), min_len=1, unique=True),
                                    "paper: 0.4 to 2.8 in steps of 0.2")
    n_members: int = param(3, Range(1, 32, integer=True), "paper: 8 (FER-2013), 6 (SFEW, RAF-DB)")
    fixed_gamma: str | float = param("best", _GammaOrBest(),
                                     '"best" of the sweep, or a number (paper: 1.4, 2.2 and 1.0)')
    repeats: int = param(1, Range(1, 100, integer=True), "seeds of every ensemble (paper: 1)")
    other_d_ensemble: bool = param(False, Choice(True, False),
                                   "also an ensemble with the other D (paper: no)")
    mechanism: bool = param(True, Choice(True, False),
                            "run the mechanism regime (structured blends, mixture labels)")
    mechanism_blend_prob: float = param(0.3, Range(0, 1, open_low=True),
                                        "share of blended faces in the mechanism regime")

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
                 lambda v: not v["pretrain_on_source"] or not _same_source(v),
                 lambda v: "pretrain_on_source = True needs a source other than the dataset "
                           "itself; set -p pretrain_on_source False"),
        relation(("mechanism", "dataset"),
                 lambda v: not v["mechanism"] or v["dataset"] in SYNTHETIC,
                 lambda v: f"mechanism = True generates its faces with the synthetic "
                           f"generator's knobs, which dataset = {v['dataset']!r} does not "
                           f"have; set -p mechanism False"),
    )
    UNUSED: ClassVar[Sequence[Unused]] = (
        *_DATA_UNUSED, *_SOURCE_UNUSED,
        Unused(("soft_labels_from", "other_d_ensemble"), _same_source,
               lambda v: "source is the dataset itself, so there is one D only"),
        Unused(("mechanism_blend_prob",), lambda v: not v["mechanism"],
               lambda v: "mechanism = False runs no mechanism regime"),
    )

    @property
    def channels(self) -> int:
        """VGG-Face takes RGB; from random initialisation grayscale is enough."""
        return 3 if self.weights else 1

    @property
    def same_source(self) -> bool:
        """The source is the dataset itself: one D, no pretraining on another dataset."""
        return _same_source(self.as_dict())

    @property
    def decay_epoch(self) -> int | None:
        """The epoch after which the learning rate is multiplied by 0.1 (None: never)."""
        return decay_epoch(self.lr_decay_at, self.epochs)


def decay_epoch(share: float, epochs: int) -> int | None:
    """The epoch after which ``lr_decay_at = share`` multiplies the rate by 0.1, or None when
    it never does within ``epochs`` (``share`` = 1, or a step past the last epoch)."""
    step = max(1, round(share * epochs))
    return step if share < 1 and step < epochs else None


# Numbers the chapter's prose may write without computing them (tests/test_prose.py): the
# paper's settings and arithmetic on its printed values.
PROSE_NUMBERS: dict[str, float] = {
    "entropy of a uniform row over 7 classes, ln 7 (nats)": math.log(7),
    "Table 1's anger column sum (its rows sum to 1)": float(TABLE_1["anger"].sum()),
    "uniform soft label over 7 classes, 1/7": 1 / 7,
    "perturb(TABLE_1, 0.01) is within this of 1/7": 0.01,
    "gamma of the limit exercise, large": 50,
    "paper: VGG16 parameters (millions)": 138,
    "paper: input side (pixels)": 224,
    "paper: batch size": 48,
    "paper: momentum": 0.9,
    "paper: weight decay": 0.0005,
    "paper: dropout": 0.5,
    "paper: learning rate": 0.01,
    "paper: FER-2013 iterations (thousands)": 8,
    "paper: FER-2013 decay after (thousand iterations)": 5,
    "paper: RAF-DB iterations (thousands)": 6,
    "paper: RAF-DB decay after (thousand iterations)": 3,
    "paper: SFEW iterations": 500,
    "paper: ensemble sizes": 8,
    "paper: ensemble size on SFEW and RAF-DB": 6,
    "paper: grid step of gamma": 0.2,
    "paper: gamma grid, 13 values": 13,
    "paper: RAF-DB gamma window": 1.8,
    "paper: FER-2013 gamma window start": 0.6,
    "paper: FER-2013 gamma window end": 2.0,
    "paper: SFEW gamma window start": 1.6,
    "paper: SFEW gamma window end": 2.6,
    "paper: RAF-DB fixed gamma": 2.2,
    "paper: FER-2013 fixed gamma": 1.4,
    "paper: share of RAF-DB training images kept for training (%)": 80,
    "paper: share of RAF-DB training images validating (%)": 20,
    "paper: FER-2013 constructor's validation accuracy range, low (%)": 67,
    "paper: FER-2013 constructor's test accuracy range, high (%)": 69,
    "synthetic generator: images per synth-wild subject": 40,
    "synthetic generator: largest weight of a blend's second emotion": 0.45,
    "synthetic generator: default share of blended synth-wild faces": 0.3,
    "a share of blended faces to try in an exercise": 0.6,
    "a tenth, the step decay's factor": 0.1,
    "time to work through the chapter (minutes)": 75,
}
