"""The chapter's parameters (``notebooks/05_faml_t2v.ipynb``), declared once, and the numbers
its prose may write without computing them.

Defaults are the ``cpu`` profile: two regimes on a 2-core CPU in about four and a half minutes.

* The *default* regime is the paper's setting scaled down: synth-wild (RAF-DB's class
  imbalance, pose, occluders, label noise), 48 px, ResNets at an eighth of their width, every
  network fine-tuned from one pre-trained start, ``n_networks`` networks per model.
* The *mechanism* regime builds T2V's condition: blended faces whose second emotion is a
  natural second choice (``blend_pairs="facs"``, most faces blended, weaker intensities, no
  label noise), and members whose confidence differs (each on its own random half of the
  training subjects; plain cross-entropy against the same members trained with label
  smoothing), tested on at least 1,000 faces.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from fernb.data.transforms import AUGMENTATIONS
from fernb.params import (LEARNING_RATE, POSITIVE_INT, ChapterSettings, Choice, Constraint,
                          DatasetName, ListOf, Range, Relation, Unused, dataset_rules, param,
                          relation)

DATASETS = ("synth-wild", "synth-lab", "rafdb", "affectnet", "folder")
PRETRAIN_DATASET = "synth-lab"
MECHANISM_PRESETS = ("synth-lab", "synth-wild")

# Table 6's other basic networks: row name -> torchvision architecture.
TABLE6_BACKBONES: dict[str, str] = {"RI18": "resnet18", "ResNet34": "resnet34",
                                    "VGG16": "vgg16", "DenseNet121": "densenet121"}


class WeightFiles(Constraint):
    """A mapping (possibly empty) from Table 6 row names to weight files that exist."""

    def describe(self) -> str:
        return (f"a mapping from row names ({', '.join(TABLE6_BACKBONES)}) to existing "
                f"weight files, e.g. {{RI18: /weights/resnet18-f37072fd.pth}}")

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, Mapping):
            return self.describe()
        for name, path in value.items():
            if name not in TABLE6_BACKBONES:
                return f"{self.describe()} ({name!r} is not a row name)"
            if not isinstance(path, str) or not Path(path).is_file():
                return f"{self.describe()} (the file {path!r} of {name} does not exist)"
        return None


class WeightsFile(Constraint):
    """``""`` (pre-train on synth-lab) or the path of an existing file."""

    def describe(self) -> str:
        return ("'' (pre-train a ResNet-18 on synth-lab) or the path of a ResNet-18 weights "
                "file, e.g. resnet18_msceleb.pth")

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, str):
            return self.describe()
        if value and not Path(value).is_file():
            return f"{self.describe()} (no file at {value!r})"
        return None


def _pretraining_unused(v: Mapping[str, Any]) -> bool:
    return bool(v["weights"]) and all(b in v["backbone_weights"] for b in v["backbones"])


def _ordered_pair(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 2 and 0 < v[0] <= v[1] <= 1


_RELATIONS, _UNUSED = dataset_rules("dataset", "data_root", ("n_subjects",))


@dataclass(frozen=True)
class Settings(ChapterSettings):
    """The chapter's parameters; defaults are the ``cpu`` profile."""

    # -- the default regime: the paper's setting, scaled down
    dataset: str = param("synth-wild", DatasetName(DATASETS),
                         'or a real dataset, e.g. "rafdb" (set data_root)')
    data_root: str = param("", None, "folder of a real dataset")
    n_subjects: int = param(160, Range(8, 10_000, integer=True),
                            "synthetic subjects (40 images each)")
    image_size: int = param(48, Range(48, 224, integer=True), "paper: 224")
    width: float = param(0.125, Range(0, 4, open_low=True),
                         "channel multiplier of every ResNet, 1.0 is the paper network")
    weights: str = param("", WeightsFile(),
                         'R18\'s weights file (paper: MS-Celeb-1M); "": pre-train on synth-lab')
    backbones: list[str] = param(["ResNet34"], ListOf(Choice(*TABLE6_BACKBONES), min_len=0,
                                                      unique=True),
                                 "other Table 6 rows (paper: RI18, ResNet34, VGG16, "
                                 "DenseNet121)")
    backbone_weights: dict[str, str] = param({}, WeightFiles(), "row -> weights file (paper: "
                                             "ImageNet); rows without one are pre-trained here")
    pretrain_subjects: int = param(40, Range(8, 10_000, integer=True),
                                   "synth-lab subjects of the pre-training")
    pretrain_epochs: int = param(12, POSITIVE_INT,
                                 "epochs of the pre-training (SGD with cosine annealing)")
    pretrain_lr: float = param(0.05, LEARNING_RATE, "SGD learning rate of the pre-training")
    n_networks: int = param(4, Range(2, 16, integer=True), "networks per ensemble (paper: 6)")
    replicates: int = param(1, Range(1, 50, integer=True),
                            "ensembles per model, each of its own networks (paper: 1)")
    fga_generations: int = param(1, Range(1, 10, integer=True),
                                 "FGA generations (paper: not given)")
    lr1: float = param(0.005, LEARNING_RATE, "Lr_1, Adam with cosine annealing (paper: 0.0003)")
    lr2: float = param(1e-05, LEARNING_RATE, "Lr_2, Adam with StepLR (paper: 0.00001)")
    max_epochs1: int = param(3, POSITIVE_INT, "phase 1 ends when the training loss is stable "
                             "or here (paper: stable)")
    epochs2: int = param(1, POSITIVE_INT, "epochs of phase 2 (paper: not given)")
    step_size: int = param(1, POSITIVE_INT, "StepLR step of phase 2 (paper: not given)")
    stable_window: int = param(3, Range(2, 100, integer=True),
                               "epochs over which 'stable' is judged (paper: not given)")
    stable_loss: float = param(0.05, Range(0, 10), "largest training-loss range of a stable "
                               "window (paper: not given)")
    stable_accuracy: float = param(0.01, Range(0, 1), "largest training-accuracy range of a "
                                   "stable window (paper: not given)")
    batch_size: int = param(64, POSITIVE_INT, "paper: 128 on RAF-DB, 256 on AffectNet")
    p_lsr: float = param(0.8, Range(0, 1),
                         "probability of the LSR loss per batch (paper: 0.8 RAF-DB, 0.2 AffectNet)")
    epsilon: float = param(0.1, Range(0, 0.85), "label smoothing, eq. 4 (paper: 0.1)")
    class_weighted: bool = param(False, Choice(True, False),
                                 "weighted cross-entropy (paper: AffectNet only)")
    augment: str = param("flip", Choice(*AUGMENTATIONS),
                         "paper: horizontal flips with probability 0.5")
    alpha: float = param(1.9, Range(0, 100, open_low=True),
                         "T2V weight of a first place (paper: 1.9)")
    beta: float = param(1.0, Range(0, 100), "T2V weight of a second place (paper: 1.0)")
    # -- the mechanism regime: blended faces, members of uneven confidence
    mechanism_preset: str = param("synth-lab", Choice(*MECHANISM_PRESETS),
                                  "faces of the mechanism regime")
    mechanism_subjects: int = param(40, Range(4, 10_000, integer=True),
                                    "training subjects; each member trains on its own half")
    mechanism_test_subjects: int = param(125, Range(2, 10_000, integer=True),
                                         "test subjects (8 faces each on synth-lab, 40 on "
                                         "synth-wild)")
    mechanism_networks: int = param(6, Range(2, 16, integer=True),
                                    "members per ensemble (paper: 6)")
    mechanism_epochs: int = param(10, POSITIVE_INT, "epochs of every member (Adam at lr1, "
                                  "cosine annealing)")
    mechanism_epsilon: float = param(0.3, Range(0, 0.85, open_low=True),
                                     "label smoothing of the calibrated members")
    mechanism_blend: float = param(0.8, Range(0, 1), "share of blended faces")
    mechanism_intensity: list[float] = param([0.3, 0.7], ListOf(Range(0, 1, open_low=True),
                                                                min_len=2, max_len=2),
                                             "range of peak expression intensities")

    RELATIONS: ClassVar[Sequence[Relation]] = (
        *_RELATIONS,
        relation(("step_size", "epochs2"), lambda v: v["step_size"] <= v["epochs2"],
                 lambda v: f"step_size = {v['step_size']} exceeds epochs2 = {v['epochs2']}: "
                           f"phase 2's StepLR would never step; make step_size at most "
                           f"epochs2"),
        relation(("stable_window", "max_epochs1"),
                 lambda v: v["stable_window"] <= v["max_epochs1"],
                 lambda v: f"stable_window = {v['stable_window']} exceeds max_epochs1 = "
                           f"{v['max_epochs1']}: phase 1 could never end on stability"),
        relation(("mechanism_intensity",), lambda v: _ordered_pair(v["mechanism_intensity"]),
                 lambda v: f"mechanism_intensity = {v['mechanism_intensity']} must be "
                           f"[low, high] with low <= high"),
        relation(("backbone_weights", "backbones"),
                 lambda v: set(v["backbone_weights"]) <= set(v["backbones"]),
                 lambda v: f"backbone_weights names rows "
                           f"{sorted(set(v['backbone_weights']) - set(v['backbones']))} that "
                           f"are not in backbones = {v['backbones']}: add them to backbones"),
        relation(("backbone_weights", "width"),
                 lambda v: not v["backbone_weights"] or v["width"] == 1.0,
                 lambda v: f"pre-trained files fit the full networks: width = {v['width']} "
                           f"must be 1.0 with backbone_weights"),
        relation(("weights", "width"), lambda v: not v["weights"] or v["width"] == 1.0,
                 lambda v: f"weights = {v['weights']!r} fits the full ResNet-18: width = "
                           f"{v['width']} must be 1.0"),
    )
    UNUSED: ClassVar[Sequence[Unused]] = (
        *_UNUSED,
        Unused(("pretrain_subjects", "pretrain_epochs", "pretrain_lr"), _pretraining_unused,
               lambda v: "every network starts from a weights file, so nothing is "
                         "pre-trained on synth-lab"),
    )


# Numbers the chapter's prose writes that are neither run results nor parameters: the
# paper's worked arithmetic and settings, and the arithmetic of T2V's weights.
PROSE_NUMBERS: dict[str, float] = {
    "T2V score of AN on Table 3, 3 x 1.9 + 3 x 1.0": 8.7,
    "T2V score of HA on Table 3, 3 x 1.9 + 2 x 1.0": 7.7,
    "first places of each of AN and HA on Table 3": 3,
    "second places of HA on Table 3": 2,
    "networks of Table 3": 6,
    "Table 3 networks whose Class column says FE": 3,
    "paper's beta / alpha, 1.0 / 1.9, rounded": 0.53,
    "two second places against one first place": 2,
    "exercise: beta = 0.5 gives AN 3 x 1.9 + 3 x 0.5": 7.2,
    "exercise: beta = 0.5 gives HA 3 x 1.9 + 2 x 0.5": 6.7,
    "exercise: beta = 0.5": 0.5,
    "exercise: six networks at beta 0.5, 6 x 0.5": 3.0,
    "exercise: top-two memberships of AN, HA, SA on Table 3": 5,
    "Table 1: R18+FAML's errors, 100 - 90.32": 9.68,
    "classes of RAF-DB": 7,
    "RAF-DB test images": 3068,
    "exponent of RAF-DB's class frequencies in synth-wild": 0.6,
    "faces per synth-wild subject": 40,
    "faces per synth-lab test subject: one per sequence": 8,
    "lab sequences per subject": 7,
    "a rank correlation needs at least this many points": 5,
    "significance level": 0.05,
    "uniform share of errors ranked second, 100 / 6": 16.7,
    "mechanism regime: at least this many test faces": 1000,
    "attention blocks after the first residual stages": 3,
    "default ImageNet / MS-Celeb-1M image size of the paper": 224,
}
