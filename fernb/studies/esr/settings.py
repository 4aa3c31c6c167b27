"""Chapter 1's parameters (``notebooks/01_esr.ipynb``), declared once, and the constants its
prose may cite without computing them (:data:`PROSE_NUMBERS`)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from fernb.data.transforms import AUGMENTATIONS
from fernb.device import computed_precision
from fernb.params import (LEARNING_RATE, POSITIVE_INT, ChapterSettings, Choice, DatasetName,
                          ListOf, MappingOf, Range, Relation, Unused, dataset_rules, param,
                          relation)
from fernb.train import STRATEGIES

LAB_DATASETS = ("synth-lab", "synth-wild", "ckplus", "jaffe", "folder")
# In-the-wild sets for ESR-9; the affect fine-tuning runs where they have valence/arousal.
WILD_DATASETS = ("synth-wild", "affectnet", "ferplus", "rafdb", "sfew", "fer2013", "folder")
_LAB_RELATIONS, _LAB_UNUSED = dataset_rules("dataset", "data_root", ("n_subjects",))
_WILD_RELATIONS, _WILD_UNUSED = dataset_rules("wild_dataset", "wild_root", ("wild_subjects",))

# Numbers the chapter's prose states that are neither a parameter nor a result: the paper's
# settings and architecture, and the course's time estimate.
PROSE_NUMBERS: Mapping[str, float] = {
    "time to work through the chapter (minutes)": 90,
    "ESR-9: features of a branch's last convolution (paper Fig. 3)": 512,
    "the paper's image size (pixels)": 96,
    "the paper's folds of CK+ (its trials)": 10,
    "significance level of every test": 0.05,
    "coverage of every interval (%)": 95,
}


def _saliency_example(grid: Mapping[str, Sequence[int]]) -> str:
    options = [f"[{s}, {lv[0]}]" for s, lv in grid.items() if s != "interleaved" and lv]
    return options[0] if options else "[varied, 3]"


def _saliency_ok(v: Mapping) -> bool:
    run = v["saliency_run"]
    return (isinstance(run, (list, tuple)) and len(run) == 2 and run[0] != "interleaved"
            and run[1] in v["grid"].get(run[0], ()))


@dataclass(frozen=True)
class Settings(ChapterSettings):
    """The chapter's parameters (``notebooks/01_esr.ipynb``); defaults are the ``cpu``
    profile."""

    dataset: str = param("synth-lab", DatasetName(LAB_DATASETS),
                         'or a real dataset, e.g. "ckplus" (set data_root)')
    data_root: str = param("", None, "folder of a real dataset")
    n_subjects: int = param(40, Range(4, 10_000, integer=True), "synthetic subjects (CK+ has 123)")
    image_size: int = param(48, Range(48, 224, integer=True), "paper: 96")
    width: float = param(0.25, Range(0, 4, open_low=True),
                         "channel multiplier, 1.0 is the paper network")
    n_folds: int = param(6, Range(3, 100, integer=True), "subject-independent folds (paper: 10)")
    n_train_folds: int = param(4, POSITIVE_INT,
                               "training folds per trial (paper: 4), one bag per branch")
    trials: list[int] = param([0, 1, 2], ListOf(Range(0, integer=True), unique=True),
                              "test folds to run (paper: all ten)")
    grid: dict[str, list[int]] = param(
        {"varied": [3, 4, 5], "frozen": [3], "interleaved": [3]},
        MappingOf(Choice(*STRATEGIES), ListOf(Range(1, 5, integer=True), unique=True)),
        "strategy -> branching levels of the ESR-4 runs (paper: every level, varied)")
    epochs: int = param(10, POSITIVE_INT, "epochs per added branch or network")
    lr: float = param(0.05, LEARNING_RATE, "paper: 0.1")
    lr_trained: float = param(0.01, LEARNING_RATE,
                              "trained branches under the varied strategy (paper: 0.02)")
    lr_step: int = param(250, POSITIVE_INT,
                         "epochs between halvings of the learning rate (paper: 250)")
    batch_size: int = param(64, POSITIVE_INT, "mini-batch size (paper: 32)")
    augment: str = param("flip", Choice(*AUGMENTATIONS),
                         '"esr" is the paper augmentation (rotation, scale, jitter, flip)')
    milestones: list[int] = param([1, 3, 6], ListOf(POSITIVE_INT, unique=True),
                                  "epochs of a new branch at which saliency maps are drawn")
    saliency_run: list[str | int] = param(["varied", 3], None,
                                          "[strategy, level] of the ESR whose maps are drawn")
    wild_dataset: str = param("synth-wild", DatasetName(WILD_DATASETS),
                              'ESR-9 data; the paper uses "affectnet" (set wild_root)')
    wild_root: str = param("", None, "folder of the real in-the-wild dataset")
    wild_subjects: int = param(60, Range(4, 10_000, integer=True), "synth-wild subjects for ESR-9")
    wild_size: int = param(64, Range(56, 224, integer=True), "paper: 96")
    wild_width: float = param(0.25, Range(0, 4, open_low=True), "paper: 1.0")
    wild_branches: int = param(4, Range(1, 32, integer=True), "paper: 9")
    wild_per_class: int = param(150, POSITIVE_INT, "balanced subsets of up to this many "
                                "images per class (paper: 5000)")
    wild_epochs_first: int = param(20, POSITIVE_INT,
                                   "epochs of the first branch (authors' code: 50)")
    wild_epochs: int = param(10, POSITIVE_INT, "epochs of each later branch (authors' code: 20)")
    wild_lr: float = param(0.02, LEARNING_RATE, "paper: 0.1, at which a network this small "
                          "does not learn synth-wild")
    wild_lr_trained: float = param(0.01, LEARNING_RATE, "trained branches (paper: 0.01)")
    wild_lr_step: int = param(10, POSITIVE_INT,
                              "epochs between halvings of the learning rate (paper: 10)")
    wild_augment: str = param("flip", Choice(*AUGMENTATIONS), 'paper: "esr"')
    affect_epochs: int = param(2, POSITIVE_INT,
                               "epochs per valence/arousal head (paper: not given)")

    RELATIONS: ClassVar[Sequence[Relation]] = (
        *_LAB_RELATIONS, *_WILD_RELATIONS,
        relation(("n_train_folds", "n_folds"), lambda v: v["n_train_folds"] <= v["n_folds"] - 2,
                 lambda v: f"n_train_folds = {v['n_train_folds']} leaves no test and "
                           f"validation fold out of n_folds = {v['n_folds']}: it must be at "
                           f"most n_folds - 2 = {v['n_folds'] - 2}"),
        relation(("trials", "n_folds"), lambda v: max(v["trials"]) < v["n_folds"],
                 lambda v: f"trials = {v['trials']}: a trial is a test fold, so each must be "
                           f"in 0..{v['n_folds'] - 1} (n_folds = {v['n_folds']})"),
        relation(("n_subjects", "n_folds", "dataset"),
                 lambda v: v["dataset"] not in ("synth-lab", "synth-wild")
                 or v["n_subjects"] >= v["n_folds"],
                 lambda v: f"n_subjects = {v['n_subjects']} cannot fill n_folds = "
                           f"{v['n_folds']} subject-independent folds: use at least "
                           f"{v['n_folds']} subjects"),
        relation(("milestones", "epochs"), lambda v: max(v["milestones"]) <= v["epochs"],
                 lambda v: f"milestones = {v['milestones']} are epochs of a new branch, so "
                           f"each must be in 1..epochs ({v['epochs']})"),
        relation(("saliency_run", "grid"), _saliency_ok,
                 lambda v: f"saliency_run = {v['saliency_run']} must be [strategy, level] of "
                           f"a run in grid = {v['grid']} whose branches are added one at a "
                           f"time (not 'interleaved'), e.g. -p saliency_run "
                           f"\"{_saliency_example(v['grid'])}\""),
    )
    UNUSED: ClassVar[Sequence[Unused]] = (*_LAB_UNUSED, *_WILD_UNUSED)

    @property
    def computed_precision(self) -> str:
        """The precision ``precision`` resolves to on ``device`` here (``"fp32"``, ``"bf16"``
        or ``"fp16-amp"``): what a stored run depends on, where the device does not."""
        return computed_precision(self.precision, self.device)

    @property
    def strategy(self) -> str:
        """The strategy of the ESR rows of Tables 1-2 (the saliency run's)."""
        return str(self.saliency_run[0])

    @property
    def level(self) -> int:
        """The branching level of the saliency run's ESR."""
        return int(self.saliency_run[1])
