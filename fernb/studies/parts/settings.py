"""Chapter 3's parameters (``notebooks/03_fll_to_fer.ipynb``), declared once, and the constants
its prose may cite without computing them (:data:`PROSE_NUMBERS`)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from fernb.data.synthetic import MOTION_MAX
from fernb.params import (LEARNING_RATE, POSITIVE_INT, ChapterSettings, Choice, Constraint,
                          DatasetName, ListOf, Range, Relation, Unused, dataset_rules, param,
                          relation)
from fernb.transfer import STOP_ON

LAB_DATASETS = ("synth-lab", "ckplus", "jaffe", "folder")
WILD_DATASETS = ("synth-wild", "sfew", "rafdb", "folder")
AUGMENTS = ("paper", "none")

_LAB_RELATIONS, _LAB_UNUSED = dataset_rules("dataset", "data_root", ())
_WILD_RELATIONS, _WILD_UNUSED = dataset_rules("wild_dataset", "wild_root", ("wild_subjects",))
_BOOL = Choice(True, False)


class Folder(Constraint):
    """A dataset folder: a path as a string, empty for the synthetic sets."""

    def describe(self) -> str:
        return "a folder path as a string ('' for a synthetic set)"

    def problem(self, value: object) -> str | None:
        return None if isinstance(value, str) else self.describe()


def held_out_subjects(n_subjects: int, n_folds: int) -> int:
    """Subjects of the test and validation folds when ``n_subjects`` are dealt into
    ``n_folds`` folds in id order (folds 0 and 1 are the largest)."""
    return 2 * math.ceil(n_subjects / n_folds) if n_folds > 1 else n_subjects


def pool_val_subjects(pool_subjects: int) -> int:
    """Landmark-pool subjects kept for stage 1's early stopping: a fifth, at least one."""
    return max(1, pool_subjects // 5)


@dataclass(frozen=True)
class Settings(ChapterSettings):
    """The chapter's parameters; the defaults are the ``cpu`` profile."""

    dataset: str = param("synth-lab", DatasetName(LAB_DATASETS),
                         'lab set; the paper uses "ckplus" or "jaffe" (set data_root)')
    data_root: str = param("", Folder(), "folder of a real lab dataset")
    n_subjects: int = param(40, Range(4, 10_000, integer=True),
                            "synth-lab subjects, both regimes (CK+ has 123)")
    wild_dataset: str = param("synth-wild", DatasetName(WILD_DATASETS),
                              'in-the-wild set; the paper uses "sfew" (set wild_root)')
    wild_root: str = param("", Folder(), "folder of a real in-the-wild dataset")
    wild_subjects: int = param(40, Range(4, 10_000, integer=True),
                               "synth-wild subjects, 40 images each")
    motion: float = param(2.0, Range(0, MOTION_MAX),
                          "landmark motion of the synthetic expressions (generator: 1)")
    image_size: int = param(48, Range(48, 224, integer=True), "paper: 160")
    width: float = param(0.25, Range(0, 4, open_low=True),
                         "channel multiplier, 1.0 is the paper network")
    clahe: bool = param(True, _BOOL, "contrast-limited histogram equalisation (paper: True)")
    n_folds: int = param(5, Range(3, 100, integer=True),
                         "subject-independent folds of the lab set (paper: 10)")
    trials: list[int] = param([0], ListOf(Range(0, integer=True), unique=True),
                              "test folds to run (paper: all ten)")
    n_networks: int = param(3, Range(1, 20, integer=True),
                            "networks of the Baseline and FTL ensembles (paper: 5)")
    epoch_images: int = param(960, POSITIVE_INT,
                              "images per epoch, the training set repeated (paper: 30 x 32)")
    direct_epochs: int = param(20, POSITIVE_INT, "Baseline, at most (paper, CK+: 400)")
    landmark_epochs: int = param(8, POSITIVE_INT, "stage 1, FLL pre-training (paper, CK+: 100)")
    head_epochs: int = param(50, POSITIVE_INT,
                             'stage 2, at most, on cached features (paper: "a few", 10)')
    finetune_epochs: int = param(4, POSITIVE_INT, "stage 3, at most (paper, CK+: 290)")
    wild_direct_epochs: int = param(20, POSITIVE_INT, "the same in the wild (paper, SFEW: 400)")
    wild_landmark_epochs: int = param(16, POSITIVE_INT, "paper, SFEW: 200")
    wild_finetune_epochs: int = param(4, POSITIVE_INT, "paper, SFEW: 190")
    direct_lr: float = param(0.01, LEARNING_RATE, "paper: 1e-2")
    landmark_lr: float = param(0.01, LEARNING_RATE, "paper: 1e-2")
    head_lr: float = param(0.01, LEARNING_RATE, "paper: 1e-2")
    finetune_lrs: list[float] = param([0.0001, 0.001, 0.01],
                                      ListOf(LEARNING_RATE, unique=True),
                                      "rates to measure stage 3's travel at; one: used as is")
    finetune_share: float = param(0.03, Range(0, 1, open_low=True),
                                  "stage 3's travel / stage 1's (paper's lr x steps: 0.029)")
    batch_size: int = param(32, POSITIVE_INT, "paper: 32")
    patience: int = param(5, POSITIVE_INT,
                          'early stopping on the validation loss (paper: "saturation")')
    stop_on: str = param("accuracy", Choice(*STOP_ON),
                         'what early stopping of expression training watches: validation '
                         '"accuracy" or "loss" (the paper)')
    head_patience: int = param(5, POSITIVE_INT,
                               "early stopping of stage 2 (an epoch: every cached copy)")
    augment: str = param("paper", Choice(*AUGMENTS),
                         'flips, rotation, translation moving the landmarks; or "none"')
    standardize: bool = param(True, _BOOL,
                              "standardise stage 2's features (the paper: False)")
    head_augment: bool = param(False, _BOOL,
                               "augment stage 2 too (paper: True); False caches features")
    head_copies: int = param(4, Range(0, 100, integer=True),
                             "augmented copies of the faces whose features stage 2 caches")
    gradcam_images: int = param(24, Range(1, 1000, integer=True),
                                "lab test faces for the Grad-CAM evidence scores")
    pool_subjects: int = param(20, Range(2, 10_000, integer=True),
                               "landmark pool: other synth-lab subjects, every frame")
    pool_epochs: int = param(8, POSITIVE_INT, "stage 1 on the landmark pool")
    curve: list[int] = param([2, 4, 8, 16], ListOf(Range(1, integer=True), unique=True),
                             "expression-labelled subjects at each point")
    curve_seeds: list[int] = param([0], ListOf(Range(0, integer=True), unique=True),
                                   "draws of labelled subjects and weights per point")
    curve_networks: int = param(1, Range(1, 20, integer=True),
                                "Baseline, FTL and control networks per point")

    RELATIONS: ClassVar[Sequence[Relation]] = (
        *_LAB_RELATIONS, *_WILD_RELATIONS,
        relation(("trials", "n_folds"), lambda v: max(v["trials"]) < v["n_folds"],
                 lambda v: f"trials = {v['trials']}: a trial is a test fold, so each must be "
                           f"in 0..{v['n_folds'] - 1} (n_folds = {v['n_folds']})"),
        relation(("n_subjects", "n_folds"), lambda v: v["n_subjects"] >= v["n_folds"],
                 lambda v: f"n_subjects = {v['n_subjects']} cannot fill n_folds = "
                           f"{v['n_folds']} subject-independent folds: use at least "
                           f"{v['n_folds']} subjects"),
        relation(("curve", "n_subjects", "n_folds"),
                 lambda v: max(v["curve"]) <= v["n_subjects"] - held_out_subjects(
                     v["n_subjects"], v["n_folds"]),
                 lambda v: f"curve = {v['curve']}: the learning curve draws its labelled "
                           f"subjects from the "
                           f"{v['n_subjects'] - held_out_subjects(v['n_subjects'], v['n_folds'])}"
                           f" synth-lab subjects outside the test and validation folds "
                           f"(n_subjects = {v['n_subjects']}, n_folds = {v['n_folds']}); "
                           f"lower the curve or raise n_subjects"),
    )
    UNUSED: ClassVar[Sequence[Unused]] = (*_LAB_UNUSED, *_WILD_UNUSED)


# Numbers the chapter's prose cites that are not results of a run: the paper's settings and
# the arithmetic of its equations (Sec. III-C, IV-E; tests/test_parts.py checks each).
PROSE_NUMBERS: dict[str, float] = {
    "extractor filters per block": 16, "second block": 32, "third block": 64,
    "fourth block, feature size": 128, "landmarks of the 68-point layout": 68,
    "eyebrows points": 10, "eyes points": 12, "nose points": 9, "mouth points": 20,
    "jaw points": 17, "paper input side (px)": 160, "half, quarter, eighth, sixteenth": 80,
    "side after two pools": 40, "side after three pools": 20, "side after four pools": 10,
    "3x3 kernels": 3, "kernel area": 9, "max-pool stride": 2,
    "CK+ classes": 8, "SFEW classes": 7,
    "extractor parameters": 294_480, "sub-network parameters": 328_536,
    "ensemble parameters": 1_642_680, "sub-network parameters (Keras)": 329_496,
    "ensemble parameters (Keras)": 1_647_480, "BatchNorm moving statistics": 960,
    "nose landmark head": 18_834, "nose outputs": 18, "68-point outputs": 136,
    "68-point landmark head": 34_056, "eq. 7, the eight convolutions": 670_924_800,
    "eq. 8, the dense layers": 67_584, "eq. 9, the max-pools": 192_000,
    "eqs. 7-9, one sub-network": 671_184_384, "GFLOPs, one sub-network": 0.671,
    "GFLOPs, five": 3.356, "torch's counter": 670_992_384, "conv share (%)": 99.96,
    "'valid' convolutions (GFLOPs)": 0.550, "input side that 0.555 needs": 146,
    "ensemble storage (MiB)": 6.28, "sub-network storage (MiB)": 1.26, "bytes per value": 4,
    "layers: convolutions, BatchNorms": 8, "layers: max-pools": 4, "layers: dense": 3,
    "paper epochs, CK+ Baseline": 400, "paper epochs, CK+ landmarks": 100,
    "paper epochs, CK+ head and fine-tuning": 300, "paper epochs, SFEW landmarks": 200,
    "paper steps per epoch": 30, "paper batch": 32, "paper images per epoch": 960,
    "paper fine-tuning rate": 1e-4, "paper rate": 1e-2,
    "paper fine-tuning lr x steps (290 x 30 x 1e-4)": 0.87,
    "paper pre-training lr x steps (100 x 30 x 1e-2)": 30,
    "the paper's ratio of the two": 0.029,
    "synth-lab images per subject (protocol)": 28, "synth-lab frames per sequence": 10,
    "synth-lab images per subject (every frame)": 70,
    "points no action unit moves": 6, "input range, low end": -1,
    "time the learning objectives take (minutes)": 90,
}
