"""The chapter's parameters, declared once (:class:`Settings`), the variants it compares and
the constants its prose cites (:data:`PROSE_NUMBERS`)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from fernb.data.datasets import SYNTHETIC
from fernb.models.relevance import GATES, MAP_ACTIVATIONS
from fernb.params import (LEARNING_RATE, POSITIVE_INT, ChapterSettings, Choice, Constraint,
                          DatasetName, ListOf, Range, Relation, Unused, dataset_rules, param,
                          relation)

# The compared models: the baseline CNN, the proposed network with each facial-parts loss of
# Table 4, and (beyond the paper) the proposed network whose map no loss guides.
VARIANTS = ("baseline", "unguided", "fully", "sparsity", "contiguity", "weakly", "hybrid")
LABELS = {"baseline": "Baseline CNN", "unguided": "Map without a map loss (lambda = 0)",
          "fully": "Fully supervised (eq. 4)", "sparsity": "Weakly, sparsity only (eq. 6)",
          "contiguity": "Weakly, contiguity only (eq. 7)", "weakly": "Weakly supervised (eq. 5)",
          "hybrid": "Hybrid (eqs. 4 + 5)"}
NEEDS_LANDMARKS = ("fully", "hybrid")
WITH_MAP = tuple(v for v in VARIANTS if v != "baseline")
# Datasets whose readers give 68 landmarks for the target maps of eq. (4).
LANDMARK_DATASETS = ("synth-lab", "synth-wild", "ckplus", "affectnet")
LAB_DATASETS = ("synth-lab", "synth-wild", "ckplus", "jaffe", "folder")
WILD_DATASETS = ("synth-wild", "sfew", "folder")
PRETRAIN_DATASETS = ("synth-wild", "fer2013", "folder")
PAPER_SIZE = 120                  # the paper's faces and relevance maps: 120 x 120
WEAK_REDUCTIONS = ("sum", "mean")
REP_BLOCKS = 3                    # conv-conv-pool blocks of the representation component
VAL_FRACTION = 0.2                # of each training split, by subject (Sec. IV-C)

# Numbers the prose may state without computing them: the paper's settings and equation
# arithmetic (tests/test_prose.py).
PROSE_NUMBERS: dict[str, float] = {
    "CK+ images (Sec. IV-C)": 1308, "JAFFE images": 213, "FER-2013 images": 35887,
    "SFEW training images": 891, "CK+ subjects": 123, "JAFFE subjects": 10,
    "paper image side": PAPER_SIZE, "pixels of a 120 x 120 map": PAPER_SIZE**2,
    "dense layers": 512, "Adam batch (Sec. IV-A)": 50, "learning rate decay": 0.99,
    "lambda of Fig. 10 summed over 120 x 120": 1e-4 * PAPER_SIZE**2,
    "lambda of Fig. 10, bottom row, summed": 1e-2 * PAPER_SIZE**2,
    "cross-entropy of 8 classes at chance, ln 8": 2.08, "paper's translations (px)": 5,
    "fine-tuning epochs on SFEW": 25, "paper's folds": 10, "representation blocks": REP_BLOCKS,
    "validation share (%)": 100 * VAL_FRACTION, "training share (%)": 100 * (1 - VAL_FRACTION),
    "alpha of the tests (%)": 5, "alpha of the tests": 0.05, "landmarks per face": 68,
    "study time of the chapter (minutes)": 90, "confidence of the intervals (%)": 95,
    "exercise: a weaker cue": 0.5, "exercise: three times the cpu profile's epochs": 30,
}


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


def _with_baseline(name: str, allow_empty: bool = False) -> Relation:
    return relation(
        (name,), lambda v: "baseline" in v[name] or (allow_empty and not v[name]),
        lambda v: f"{name} = {v[name]} must include 'baseline': every variant is compared with "
                  f"it" + (" (or be [] to skip)" if allow_empty else ""))


_LAB_RELATIONS, _LAB_UNUSED = dataset_rules("dataset", "data_root", ("n_subjects",))
_WILD_RELATIONS, _WILD_UNUSED = dataset_rules("wild_dataset", "wild_root", ("wild_subjects",))
_PRE_RELATIONS, _PRE_UNUSED = dataset_rules("pretrain_dataset", "pretrain_root",
                                            ("pretrain_subjects",))
_VARIANT_LIST = ListOf(Choice(*VARIANTS), unique=True)


@dataclass(frozen=True)
class Settings(ChapterSettings):
    """The parameters of ``notebooks/02_relevance_maps.ipynb``; defaults are the ``cpu``
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
                                 "hybrid"], _VARIANT_LIST, "the compared models of Tables 4-5")
    epochs: int = param(10, POSITIVE_INT, "training epochs per fold (paper: not printed)")
    batch_size: int = param(32, POSITIVE_INT, "paper: 50")
    lr: float = param(0.001, LEARNING_RATE, "Adam learning rate (paper: grid search)")
    lr_decay: float = param(0.99, Range(0, 1, open_low=True),
                            "learning rate x 0.99 after every epoch (paper)")
    weight_decay: float = param(0.0001, Range(0, 1), "l2 coefficient (paper: grid search)")
    patience: int = param(0, Range(0, integer=True), "early stopping after this many epochs "
                          "without a lower validation cross-entropy (0: off)")
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
    gate: str = param("mean", Choice(*GATES),
                      'e-blocks multiply by the map over its mean magnitude; "literal": eq. 1')
    gate_contrast: list[str] = param(["fully"], ListOf(Choice(*VARIANTS[1:]), min_len=0,
                                                       unique=True),
                                     "variants also trained with the other gate on fold 0")
    map_start: float = param(0.1, Range(0, open_low=True),
                             "x_hat everywhere at the start (the literal gate's runs: 1)")
    map_activation: str = param("linear", Choice(*MAP_ACTIVATIONS),
                                "last layer of the facial-parts component (paper: linear)")
    n_eblocks: int = param(2, Range(1, 8, integer=True), "e-blocks (paper: not printed)")
    eblock_after: int = param(REP_BLOCKS, Range(1, REP_BLOCKS, integer=True),
                              "the conv-conv-pool block the e-blocks follow (3: the last)")
    skip_connections: bool = param(False, Choice(True, False),
                                   "U-Net skips in the facial-parts component (paper: none)")
    cue_strength: float = param(0.9, Range(0, 1),
                                "mechanism regime: P(the corner cue shows the training label)")
    mechanism_variants: list[str] = param(["baseline", "unguided", "fully", "weakly", "hybrid"],
                                          ListOf(Choice(*VARIANTS), min_len=0, unique=True),
                                          "mechanism regime's models ([]: skip it)")
    n_show: int = param(6, Range(1, 12, integer=True), "test faces in the relevance-map figures")
    cam_faces: int = param(64, Range(0, integer=True),
                           "test faces per fold scored by Grad-CAM (0: all)")
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
    wild_variants: list[str] = param([],
                                     ListOf(Choice(*VARIANTS), min_len=0, unique=True),
                                     "Table 6's models, e.g. [baseline, hybrid] ([]: not run)")
    pretrain_epochs: int = param(6, POSITIVE_INT, "epochs of the pre-training")
    finetune_epochs: int = param(5, POSITIVE_INT,
                                 "paper: about 25, until the validation loss rises")

    RELATIONS: ClassVar[Sequence[Relation]] = (
        *_LAB_RELATIONS, *_WILD_RELATIONS, *_PRE_RELATIONS,
        relation(("image_size",), lambda v: v["image_size"] % 8 == 0,
                 lambda v: f"image_size = {v['image_size']} must be divisible by 8: the "
                           f"facial-parts encoder halves it three times and its decoder must "
                           f"come back to the input's size (e.g. 48, 64, 96, 120)"),
        _with_baseline("variants"),
        _with_baseline("mechanism_variants", allow_empty=True),
        _with_baseline("wild_variants", allow_empty=True),
        relation(("mechanism_variants", "dataset"),
                 lambda v: not v["mechanism_variants"] or v["dataset"] in SYNTHETIC,
                 lambda v: f"mechanism_variants = {v['mechanism_variants']} needs a synthetic "
                           f"dataset, whose generator paints the distractor cue; dataset = "
                           f"{v['dataset']!r} is read from disk: set mechanism_variants []"),
        relation(("map_start", "map_activation"),
                 lambda v: v["map_activation"] != "sigmoid" or v["map_start"] < 1,
                 lambda v: f"map_start = {v['map_start']} must lie below 1 for "
                           f"map_activation = 'sigmoid', whose map lies in (0, 1)"),
        _landmarks_ok("variants", "dataset"),
        _landmarks_ok("mechanism_variants", "dataset"),
        _landmarks_ok("wild_variants", "wild_dataset"),
        _landmarks_ok("wild_variants", "pretrain_dataset"),
        _folds_ok("n_folds", "n_subjects", "dataset"),
        _folds_ok("wild_folds", "wild_subjects", "wild_dataset"),
    )
    UNUSED: ClassVar[Sequence[Unused]] = (
        *_LAB_UNUSED, *_WILD_UNUSED, *_PRE_UNUSED,
        Unused(("cue_strength",), lambda v: not v["mechanism_variants"],
               lambda v: "mechanism_variants = [] skips the mechanism regime"),
        Unused(("wild_subjects", "pretrain_subjects", "wild_folds", "pretrain_epochs",
                "finetune_epochs"), lambda v: not v["wild_variants"],
               lambda v: "wild_variants = [] skips Table 6"),
    )
