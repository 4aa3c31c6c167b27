"""Wadhawan and Gandhi's experiments (IEEE TAI 2023), as chapter 3 runs them.

Table I: on an in-the-lab set (CK+ or JAFFE in the paper; synth-lab here) the study trains, for
each subject-independent trial (:func:`fernb.data.splits.esr_subject_folds`: the i-th subject
in id order goes to fold ``i % n_folds``, the paper's "sampling subject IDs in ascending
order"; fold t tests, fold t + 1 validates, the rest train), the three ensembles of
:func:`fernb.models.parts.part_ensemble`: Baseline (direct training), FTL (68-point transfer)
and EL (one transfer network per part), every network with :func:`fernb.transfer.train_members`.
On an in-the-wild set (SFEW; synth-wild) it trains the same three once, on the dataset's own
partition or a subject-independent holdout (:func:`fernb.data.splits.standard_split`), and
tests those wild-trained ensembles on the whole lab set as well (Table III; classes the wild
set lacks, contempt, are left out as the paper does). Ensembles combine their members by
eq. 4 (:class:`fernb.ensemble.SoftmaxSum`). Sec. V-B's landmark errors before and after
fine-tuning come from every transfer network; Sec. IV-C's Grad-CAM maps and Fig. 10's points
are drawn from the stored networks. :func:`schedule` sets Sec. III-D3's epochs and learning
rates beside a run's, with how far each stage lets Adam move a weight, and
:func:`weight_travel` measures how far the weights did move; :func:`paired_tests` compares
two ensembles on the same test faces (exact McNemar test), as one trial has no spread over
folds to test with.

Every finished run is stored (its ``result.json`` written last) and an interrupted study
resumes; a run whose stored artifacts are incomplete is completed from its checkpoints.

Choices where the paper is silent: early stopping watches a validation fold (the paper only
says "validation loss"), so a trial trains on n_folds - 2 folds; member k of the Baseline and
FTL ensembles and EL's k-th part network start from the same extractor draw within a trial, so
the three ensembles differ in training, not in luck of initialisation; the Sec. V-B errors
are measured on the validation images, with a control that puts the stage-1 BatchNorm
statistics back into the fine-tuned network (PyTorch updates them while fine-tuning; the
authors' Keras code, which calls the extractor with ``training=False``, keeps them).
"""
from __future__ import annotations

import copy
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import ClassVar
from pathlib import Path

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fernb.complexity import count_parameters
from fernb.data.datasets import SYNTHETIC, FaceDataset, chapter_dataset
from fernb.data.splits import Split, esr_subject_folds, esr_trials, standard_split
from fernb.data.transforms import detect_landmarks, to_gray
from fernb.device import resolve_device
from fernb.ensemble import SoftmaxSum
from fernb.evaluate import accuracy, predict, to_predictions
from fernb.explain import branch_maps, chance_level, evidence_score, union_map
from fernb.io import atomic_savez, atomic_torch_save, atomic_write_json, \
    atomic_write_text, read_json
from fernb.landmarks import N_LANDMARKS, PART_COLORS
from fernb.models.members import Members
from fernb.models.parts import (ENSEMBLE_PARTS, LANDMARK_SETS, PartNetwork, complexity_summary,
                                expression_network, normalise_landmarks, paper_layers,
                                part_ensemble, pixel_landmarks)
from fernb.params import (LEARNING_RATE, POSITIVE_INT, ChapterSettings, Choice, Constraint,
                          DatasetName, ListOf, Range, Relation, Unused, dataset_rules, param,
                          relation)
from fernb.report import Claim
from fernb.seeding import derive_seed
from fernb.train import History
from fernb.transfer import (Runtime, TransferConfig, TransferResult, equalized, inputs,
                            landmark_errors, paper_augmentation, predict_landmarks,
                            train_members)

LAB_DATASETS = ("synth-lab", "ckplus", "jaffe", "folder")
WILD_DATASETS = ("synth-wild", "sfew", "rafdb", "folder")
KINDS = ("baseline", "ftl", "el")
KIND_NAMES = {"baseline": "Baseline", "ftl": "FTL", "el": "EL"}
AUGMENTS = ("paper", "none")
# Table I's columns, left to right.
COLUMNS = ("Baseline", "FTL", *ENSEMBLE_PARTS, "EL")
# Sec. V-A's order of discriminability, from the AUs each part takes part in.
PAPER_ORDER = ("mouth", "eyes", "eyebrows", "jaw", "nose")

_LAB_RELATIONS, _LAB_UNUSED = dataset_rules("dataset", "data_root", ("n_subjects",))
_WILD_RELATIONS, _WILD_UNUSED = dataset_rules("wild_dataset", "wild_root", ("wild_subjects",))
_BOOL = Choice(True, False)


class Folder(Constraint):
    """A dataset folder: a path as a string, empty for the synthetic sets."""

    def describe(self) -> str:
        return "a folder path as a string ('' for a synthetic set)"

    def problem(self, value: object) -> str | None:
        return None if isinstance(value, str) else self.describe()


@dataclass(frozen=True)
class Settings(ChapterSettings):
    """The chapter's parameters (``notebooks/03_fll_to_fer.ipynb``); defaults are the ``cpu``
    profile."""

    dataset: str = param("synth-lab", DatasetName(LAB_DATASETS),
                         'lab set; the paper uses "ckplus" or "jaffe" (set data_root)')
    data_root: str = param("", Folder(), "folder of a real lab dataset")
    n_subjects: int = param(40, Range(4, 10_000, integer=True), "synth-lab subjects (CK+ has 123)")
    wild_dataset: str = param("synth-wild", DatasetName(WILD_DATASETS),
                              'in-the-wild set; the paper uses "sfew" (set wild_root)')
    wild_root: str = param("", Folder(), "folder of a real in-the-wild dataset")
    wild_subjects: int = param(30, Range(4, 10_000, integer=True),
                               "synth-wild subjects, 40 images each")
    image_size: int = param(48, Range(48, 224, integer=True), "paper: 160")
    width: float = param(0.25, Range(0, 4, open_low=True),
                         "channel multiplier, 1.0 is the paper network")
    clahe: bool = param(True, _BOOL, "contrast-limited histogram equalisation (paper: True)")
    n_folds: int = param(5, Range(3, 100, integer=True),
                         "subject-independent folds of the lab set (paper: 10)")
    trials: list[int] = param([0], ListOf(Range(0, integer=True), unique=True),
                              "test folds to run (paper: all ten)")
    n_networks: int = param(5, Range(1, 20, integer=True),
                            "networks of the Baseline and FTL ensembles (paper: 5)")
    direct_epochs: int = param(10, POSITIVE_INT, "Baseline, expressions (paper, CK+: 400)")
    landmark_epochs: int = param(6, POSITIVE_INT, "stage 1, FLL pre-training (paper, CK+: 100)")
    head_epochs: int = param(2, POSITIVE_INT,
                             'stage 2, head on the frozen extractor (paper: "a few", 10)')
    finetune_epochs: int = param(8, POSITIVE_INT,
                                 "stage 3, fine-tuning (paper, CK+: 290); with stage 2 as direct")
    wild_direct_epochs: int = param(10, POSITIVE_INT,
                                    "the same three budgets in the wild (paper, SFEW: 400)")
    wild_landmark_epochs: int = param(6, POSITIVE_INT, "paper, SFEW: 200")
    wild_finetune_epochs: int = param(8, POSITIVE_INT, "paper, SFEW: 190")
    direct_lr: float = param(0.01, LEARNING_RATE, "paper: 1e-2")
    landmark_lr: float = param(0.01, LEARNING_RATE, "paper: 1e-2")
    head_lr: float = param(0.01, LEARNING_RATE, "paper: 1e-2")
    finetune_lr: float = param(0.005, LEARNING_RATE,
                               'paper: 1e-4 over ~50 times the steps (see "A fair budget")')
    batch_size: int = param(32, POSITIVE_INT, "paper: 32")
    patience: int = param(20, POSITIVE_INT,
                          'early stopping on the validation loss (paper: "saturation")')
    augment: str = param("paper", Choice(*AUGMENTS),
                         'flips, rotation, translation moving the landmarks; or "none"')
    head_augment: bool = param(False, _BOOL,
                               "augment stage 2 too (paper: True); False reuses its features")
    gradcam_images: int = param(48, Range(1, 1000, integer=True),
                                "lab test faces for the Grad-CAM evidence scores")

    RELATIONS: ClassVar[Sequence[Relation]] = (
        *_LAB_RELATIONS, *_WILD_RELATIONS,
        relation(("trials", "n_folds"), lambda v: max(v["trials"]) < v["n_folds"],
                 lambda v: f"trials = {v['trials']}: a trial is a test fold, so each must be "
                           f"in 0..{v['n_folds'] - 1} (n_folds = {v['n_folds']})"),
        relation(("n_subjects", "n_folds", "dataset"),
                 lambda v: v["dataset"] not in SYNTHETIC or v["n_subjects"] >= v["n_folds"],
                 lambda v: f"n_subjects = {v['n_subjects']} cannot fill n_folds = "
                           f"{v['n_folds']} subject-independent folds: use at least "
                           f"{v['n_folds']} subjects"),
    )
    UNUSED: ClassVar[Sequence[Unused]] = (*_LAB_UNUSED, *_WILD_UNUSED)


# ------------------------------------------------------------------------------ the data

def load(name: str, root: str = "", *, size: int, n_subjects: int, seed: int,
         clahe: bool) -> FaceDataset:
    """A chapter dataset as the paper feeds it (Sec. III-A/B): grayscale, CLAHE when
    ``clahe`` (on the face crops; the paper equalises before face detection), and 68
    landmarks (a real set without them gets MediaPipe's, which needs the optional
    ``fernb[landmarks]`` extra; the paper used dlib's ERT model)."""
    data = chapter_dataset(name, root, size=size, n_subjects=n_subjects, seed=seed)
    if data.images.ndim == 4:
        data = replace(data, images=np.stack([to_gray(image) for image in data.images]))
    if data.landmarks is None:
        data = replace(data, landmarks=detect_landmarks(data.images))
    return equalized(data) if clahe else data


def lab_trials(data: FaceDataset, n_folds: int) -> list[Split]:
    """The lab protocol's trials: subject i (in id order) in fold ``i % n_folds``; trial t
    tests fold t, validates on fold t + 1 and trains on the others."""
    folds = esr_subject_folds(data.subjects, n_folds)
    return esr_trials(folds, n_folds - 2)


def wild_split(data: FaceDataset, seed: int) -> Split:
    """The wild protocol's split: the dataset's own partition (SFEW: train, and its
    validation set as the test set), else a subject-independent holdout."""
    return standard_split(data.labels, data.subjects, data.split, seed=seed)


# ------------------------------------------------------------------------------ the study

@dataclass(frozen=True)
class Config:
    """Training settings of every run (paper: width 1.0, five networks, Adam at 1e-2 for
    direct training, FLL pre-training and the head, 1e-4 for fine-tuning, batch 32, epochs
    per dataset as :data:`fernb.transfer.PAPER_EPOCHS`)."""

    width: float = 1.0
    n_networks: int = 5
    direct_epochs: int = 400
    landmark_epochs: int = 100
    head_epochs: int = 10
    finetune_epochs: int = 290
    wild_direct_epochs: int = 400
    wild_landmark_epochs: int = 200
    wild_finetune_epochs: int = 190
    direct_lr: float = 1e-2
    landmark_lr: float = 1e-2
    head_lr: float = 1e-2
    finetune_lr: float = 1e-4
    batch_size: int = 32
    patience: int = 20
    augment: str = "paper"
    head_augment: bool = True
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, got {self.augment!r}")

    def transfer(self, protocol: str) -> TransferConfig:
        """The :class:`~fernb.transfer.TransferConfig` of the ``"lab"`` or ``"wild"`` runs."""
        wild = protocol == "wild"
        return TransferConfig(
            landmark_lr=self.landmark_lr, head_lr=self.head_lr, finetune_lr=self.finetune_lr,
            direct_lr=self.direct_lr, head_epochs=self.head_epochs,
            landmark_epochs=self.wild_landmark_epochs if wild else self.landmark_epochs,
            finetune_epochs=self.wild_finetune_epochs if wild else self.finetune_epochs,
            direct_epochs=self.wild_direct_epochs if wild else self.direct_epochs,
            batch_size=self.batch_size, patience=self.patience,
            head_augment=self.head_augment)


@dataclass(frozen=True)
class Run:
    """One ensemble (``kind``) trained on one protocol's split (``trial``; 0 for wild)."""

    protocol: str
    kind: str
    trial: int = 0

    @property
    def key(self) -> str:
        where = f"lab-t{self.trial}" if self.protocol == "lab" else "wild"
        return f"{where}-{self.kind}"


def plan(trials: Sequence[int]) -> list[Run]:
    """Every run of the study: the three ensembles per lab trial, then in the wild."""
    runs = [Run("lab", kind, t) for t in trials for kind in KINDS]
    return runs + [Run("wild", kind) for kind in KINDS]


def member_names(kind: str, n_networks: int) -> list[str]:
    """Column names of an ensemble's members: the parts for EL, numbered networks else."""
    if kind == "el":
        return list(ENSEMBLE_PARTS)
    return [f"{KIND_NAMES[kind]} {k}" for k in range(1, n_networks + 1)]


def build(run: Run, config: Config, n_classes: int) -> Members:
    """The run's untrained ensemble; member k starts from ``seeded(seed, k)`` with one seed
    per protocol and trial, shared by the three kinds."""
    seed = derive_seed(config.seed, run.protocol, run.trial) % 2**31
    return part_ensemble(run.kind, n_networks=config.n_networks, n_classes=n_classes,
                         width=config.width, seed=seed)


@dataclass
class StudyResults:
    """Per-run accuracies (``table``), test logits and labels, the wild runs' logits on the
    lab set (``cross``), Sec. V-B landmark errors, per-member histories and where the
    trained networks are stored."""

    table: pd.DataFrame
    logits: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    cross: dict[str, tuple[np.ndarray, np.ndarray]]
    errors: pd.DataFrame
    histories: dict[str, pd.DataFrame]
    out_dir: Path
    config: Config
    n_classes: dict[str, int]


ARTIFACTS = ("test.npz", "model.pt", "history.csv")


def _complete(out: Path, run: Run) -> dict | None:
    """The stored result of a run if every artifact it needs is on disk, else None."""
    result = read_json(out / "result.json")
    needed = ARTIFACTS + (("cross.npz",) if run.protocol == "wild" else ())
    if result is None or any(not (out / name).exists() for name in needed):
        return None
    return result


def _history(results: list[TransferResult | History], names: Sequence[str]) -> pd.DataFrame:
    frames = []
    for name, result in zip(names, results):
        stages = ({"direct": result} if isinstance(result, History) else
                  {"landmarks": result.landmarks, "head": result.head,
                   "finetune": result.finetune})
        for stage, history in stages.items():
            frames.append(history.to_frame().reset_index().assign(member=name, stage=stage))
    return pd.concat(frames, ignore_index=True)


def _stage1_bn_errors(network: PartNetwork, state: Mapping[str, torch.Tensor],
                      data: FaceDataset) -> dict[str, float]:
    """Landmark errors of the fine-tuned network with the BatchNorm statistics it had after
    stage 1 put back (its weights stay fine-tuned)."""
    probe = copy.deepcopy(network)
    buffers = {k: v for k, v in state.items() if "running_" in k}
    probe.load_state_dict({**probe.state_dict(), **buffers})
    return landmark_errors(probe, data)


def _cpu(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in state.items()}


def _fit_run(run: Run, data: FaceDataset, split: Split, config: Config, out: Path,
             cross: tuple[torch.Tensor, np.ndarray] | None) -> dict:
    """Train one run's ensemble, store its artifacts and return its result record (written
    last, as ``result.json``)."""
    train, val, test = (data.subset(i) for i in (split.train, split.val, split.test))
    model = build(run, config, train.n_classes)
    augment = (functools.partial(paper_augmentation, train.image_size[0])
               if config.augment == "paper" else None)
    run_on = dict(device=config.device, precision=config.precision)
    trained = train_members(model, train, val, config=config.transfer(run.protocol),
                            checkpoint=out / "ckpt", augment=augment, seed=config.seed,
                            runtime=Runtime(**run_on))
    test_logits = predict(model, inputs(test), **run_on).numpy()  # (N, M, C)
    atomic_savez(out / "test.npz", logits=test_logits, labels=test.labels)
    if cross is not None:
        atomic_savez(out / "cross.npz", logits=predict(model, cross[0], **run_on).numpy(),
                     labels=cross[1])
    atomic_torch_save({"final": _cpu(model.state_dict()),
                       "stage1": [_cpu(r.landmark_state) if isinstance(r, TransferResult)
                                  else {} for r in trained]}, out / "model.pt")
    names = member_names(run.kind, config.n_networks)
    history = _history(trained, names)
    atomic_write_text(out / "history.csv", history.to_csv(index=False))
    errors = []
    for name, result, network in zip(names, trained, model.networks):
        if isinstance(result, TransferResult):
            control = _stage1_bn_errors(network, result.landmark_state, val)
            errors += [{"member": name, "part": part, "before": before,
                        "after": result.error_after[part], "after_stage1_bn": control[part]}
                       for part, before in result.error_before.items()]
    record = {**asdict(run), "key": run.key, "members": names,
              "accuracy": accuracy(test_logits, test.labels, rule=SoftmaxSum()),
              "member_accuracy": (test_logits.argmax(-1) == test.labels[:, None])
              .mean(0).tolist(),
              "params": count_parameters(expression_network(model)),
              "train_seconds": round(float(history["seconds"].sum()), 1),
              "errors": errors}
    atomic_write_json(out / "result.json", record)  # last: the run is complete
    return record


TABLE_COLUMNS = ["key", "protocol", "trial", "kind", "members", "accuracy", "member_accuracy",
                 "params", "train_seconds"]
ERROR_COLUMNS = ["key", "protocol", "trial", "kind", "member", "part", "before", "after",
                 "after_stage1_bn"]


def run_study(lab: FaceDataset, wild: FaceDataset, lab_splits: Sequence[Split],
              wild_split: Split, trials: Sequence[int], config: Config,
              out_dir: str | Path) -> StudyResults:
    """Train and test every run of :func:`plan`, or load it when ``out_dir`` holds it.

    Args:
        lab, wild: the two datasets at one image size, as :func:`load` gives them.
        lab_splits: the lab trials (:func:`lab_trials`); ``trials`` picks which run.
        wild_split: the wild train/validation/test split (:func:`wild_split`).
        config: training settings.
        out_dir: one folder per run (result.json, test logits, networks, histories,
            checkpoints); an interrupted study resumes from its last finished epoch, and a
            run whose artifacts are incomplete is completed from its checkpoints.
    """
    if lab.image_size != wild.image_size:
        raise ValueError(f"the lab and wild images must have one size (Table III tests the "
                         f"wild-trained networks on the lab set); got {lab.image_size} and "
                         f"{wild.image_size}")
    if tuple(lab.classes[:wild.n_classes]) != tuple(wild.classes):
        raise ValueError(f"the wild classes {wild.classes} must be the first classes of the "
                         f"lab set {lab.classes} (fernb's canonical order)")
    bad = sorted(t for t in trials if not 0 <= t < len(lab_splits))
    if bad:
        raise ValueError(f"trials {bad} do not exist: there are {len(lab_splits)} folds, so "
                         f"trials 0..{len(lab_splits) - 1}")
    out_dir = Path(out_dir)
    record = {**asdict(config), "lab": [lab.name, len(lab), list(lab.image_size)],
              "wild": [wild.name, len(wild), list(wild.image_size)]}
    stored = read_json(out_dir / "config.json")
    if stored is not None and stored != record:
        raise ValueError(f"{out_dir} holds a study made with other settings ({stored}); use "
                         f"another folder or delete it")
    atomic_write_json(out_dir / "config.json", record)
    keep = np.flatnonzero(lab.labels < wild.n_classes)  # Table III: the wild set's classes
    cross = (inputs(lab.subset(keep)), lab.labels[keep])
    rows, logits, labels, cross_logits, histories, errors = [], {}, {}, {}, {}, []
    for run in plan(trials):
        wild_run = run.protocol == "wild"
        out = out_dir / run.key
        result = _complete(out, run)
        if result is None:
            (out / "result.json").unlink(missing_ok=True)
            data, split = (wild, wild_split) if wild_run else (lab, lab_splits[run.trial])
            result = _fit_run(run, data, split, config, out, cross if wild_run else None)
        stored_test = np.load(out / "test.npz")
        logits[run.key], labels[run.key] = stored_test["logits"], stored_test["labels"]
        if wild_run:
            stored_cross = np.load(out / "cross.npz")
            cross_logits[run.key] = (stored_cross["logits"], stored_cross["labels"])
        histories[run.key] = pd.read_csv(out / "history.csv")
        errors += [{"key": run.key, "protocol": run.protocol, "trial": run.trial,
                    "kind": run.kind, **e} for e in result["errors"]]
        rows.append(result)
    return StudyResults(pd.DataFrame(rows)[TABLE_COLUMNS], logits, labels, cross_logits,
                        pd.DataFrame(errors, columns=ERROR_COLUMNS), histories, out_dir,
                        config, {"lab": lab.n_classes, "wild": wild.n_classes})


# ---------------------------------------------------------------------- stored networks

def _run(results: StudyResults, key: str) -> Run:
    row = results.table.set_index("key").loc[key]
    return Run(row["protocol"], row["kind"], int(row["trial"]))


def _stored(results: StudyResults, key: str) -> dict:
    return torch.load(results.out_dir / key / "model.pt", map_location="cpu",
                      weights_only=True)


def load_model(results: StudyResults, key: str) -> Members:
    """The trained ensemble of run ``key``, in eval mode, on the study's device."""
    run = _run(results, key)
    model = build(run, results.config, results.n_classes[run.protocol])
    model.load_state_dict(_stored(results, key)["final"])
    return model.to(resolve_device(results.config.device)).eval()


def load_stage1(results: StudyResults, key: str) -> Members:
    """Run ``key``'s transfer networks as they were after FLL pre-training (stage 1)."""
    run = _run(results, key)
    if run.kind == "baseline":
        raise ValueError("the Baseline networks have no FLL pre-training (stage 1)")
    model = build(run, results.config, results.n_classes[run.protocol])
    for network, state in zip(model.networks, _stored(results, key)["stage1"]):
        network.load_state_dict(state)
    return model.to(resolve_device(results.config.device)).eval()


# -------------------------------------------------------------------- the training budget

# The authors' notebook makes an epoch 30 steps of 32 images (fernb.transfer's notes).
PAPER_STEPS_PER_EPOCH = 30
PAPER_NAMES = {"ckplus": "CK+", "jaffe": "JAFFE", "sfew": "SFEW"}
SCHEDULE_COLUMNS = ["paper epochs", "paper lr", "paper lr x steps", "epochs", "lr",
                    "lr x steps"]


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Adam steps of one epoch: mini-batches of ``batch_size`` over ``n_train`` images."""
    return math.ceil(n_train / batch_size)


def _stages(config: TransferConfig) -> dict[str, tuple[int, float]]:
    return {"Baseline: expressions": (config.direct_epochs, config.direct_lr),
            "transfer 1: landmarks": (config.landmark_epochs, config.landmark_lr),
            "transfer 2: head": (config.head_epochs, config.head_lr),
            "transfer 3: fine-tuning": (config.finetune_epochs, config.finetune_lr)}


def schedule(config: Config, splits: Mapping[str, Split], names: Mapping[str, str],
             lab_paper: str = "ckplus") -> pd.DataFrame:
    """Every stage's budget in the paper and in this run: epochs, learning rate and
    ``lr x steps``, the farthest Adam can move one weight in the stage (an Adam step is at
    most about ``lr`` long). The paper's columns are ``lab_paper`` (CK+ or JAFFE) for the lab
    protocol and SFEW in the wild, at :data:`PAPER_STEPS_PER_EPOCH`; the last row of each
    protocol adds up the transfer networks' expression epochs (stages 2 and 3), to compare
    with the Baseline's.

    Args:
        splits: the split of each protocol (``"lab"``: a lab trial, ``"wild"``), whose
            training set makes this run's steps per epoch (:func:`steps_per_epoch`).
        names: row label of each protocol, e.g. ``{"lab": "synth-lab"}``.
    """
    if lab_paper not in ("ckplus", "jaffe"):
        raise ValueError(f"lab_paper must be 'ckplus' or 'jaffe', got {lab_paper!r}")
    rows = {}
    for protocol, paper_set in (("lab", lab_paper), ("wild", "sfew")):
        if protocol not in splits:
            continue
        steps = steps_per_epoch(len(splits[protocol].train), config.batch_size)
        paper = _stages(TransferConfig.for_dataset(paper_set))
        ours = _stages(config.transfer(protocol))
        where = f"{names.get(protocol, protocol)} (paper: {PAPER_NAMES[paper_set]})"
        for stage, (epochs, lr) in ours.items():
            paper_epochs, paper_lr = paper[stage]
            rows[(where, stage)] = [
                paper_epochs, paper_lr,
                round(paper_epochs * PAPER_STEPS_PER_EPOCH * paper_lr, 2),
                epochs, lr, round(epochs * steps * lr, 2)]
        expression = [sum(paper[s][0] for s in ("transfer 2: head", "transfer 3: fine-tuning")),
                      sum(ours[s][0] for s in ("transfer 2: head", "transfer 3: fine-tuning"))]
        rows[(where, "transfer 2 + 3: expressions")] = [expression[0], np.nan, np.nan,
                                                       expression[1], np.nan, np.nan]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=SCHEDULE_COLUMNS)
    table.index = pd.MultiIndex.from_tuples(table.index, names=["protocol", "stage"])
    return table


def _conv_weights(state: Mapping[str, torch.Tensor], prefix: str = "") -> torch.Tensor:
    """The extractor's convolution kernels in a state dict, as one vector."""
    return torch.cat([v.detach().float().flatten() for k, v in state.items()
                      if k.startswith(f"{prefix}features.") and v.ndim == 4])


def _relative_change(start: torch.Tensor, end: torch.Tensor) -> float:
    return float((end - start).norm() / start.norm())


def weight_travel(results: StudyResults, key: str) -> pd.DataFrame:
    """How far training moved the extractors of trial ``key`` (``"lab-t0"``, ``"wild"``): the
    relative change ``||w1 - w0|| / ||w0||`` (%) of a network's convolution kernels, mean over an
    ensemble's networks, during landmark pre-training (from the initial draw to the end of
    stage 1) and during expression training (from there to the end of stage 3; for the
    Baseline from its initial draw to the end of its direct training). Rows: Baseline,
    FTL, EL."""
    rows = {}
    for kind in KINDS:
        run = _run(results, f"{key}-{kind}")
        start = build(run, results.config, results.n_classes[run.protocol])
        stored = _stored(results, f"{key}-{kind}")
        pretrain, expression = [], []
        for m, network in enumerate(start.networks):
            w0 = _conv_weights(network.state_dict())
            final = _conv_weights(stored["final"], f"networks.{m}.")
            if kind == "baseline":
                expression.append(_relative_change(w0, final))
            else:
                w1 = _conv_weights(stored["stage1"][m])
                pretrain.append(_relative_change(w0, w1))
                expression.append(_relative_change(w1, final))
        rows[KIND_NAMES[kind]] = {
            "landmark pre-training (%)": 100 * float(np.mean(pretrain)) if pretrain else np.nan,
            "expression training (%)": 100 * float(np.mean(expression))}
    return pd.DataFrame.from_dict(rows, orient="index")


# ------------------------------------------------------------------------------ Table I, III

def _percent(values: Sequence[float]) -> float:
    return 100 * float(np.mean(values))


def accuracy_long(results: StudyResults) -> pd.DataFrame:
    """One row per run and column of Table I (Baseline, FTL, the five parts alone, EL):
    protocol, trial, column and test accuracy (%). The Baseline and FTL rows are their
    five-network ensembles (eq. 4), as in the paper."""
    rows = []
    for _, run in results.table.iterrows():
        where = {"protocol": run["protocol"], "trial": run["trial"]}
        rows.append({**where, "column": KIND_NAMES[run["kind"]],
                     "accuracy": 100 * run["accuracy"]})
        if run["kind"] == "el":
            rows += [{**where, "column": part, "accuracy": 100 * acc}
                     for part, acc in zip(run["members"], run["member_accuracy"])]
    return pd.DataFrame(rows)


def table1(results: StudyResults, names: Mapping[str, str]) -> pd.DataFrame:
    """Table I: accuracy (%) of each column, mean over trials (± std where there are
    several), one row per protocol named by ``names`` (e.g. ``{"lab": "synth-lab"}``)."""
    long = accuracy_long(results)
    table = {}
    for protocol, frame in long.groupby("protocol", sort=False):
        stats = frame.groupby("column")["accuracy"].agg(["mean", "std", "count"])
        table[names.get(protocol, protocol)] = {
            c: (f"{stats.at[c, 'mean']:.1f}" + (f" ± {stats.at[c, 'std']:.1f}"
                                                 if stats.at[c, "count"] > 1 else ""))
            for c in COLUMNS}
    return pd.DataFrame.from_dict(table, orient="index")[list(COLUMNS)]


def means(results: StudyResults, protocol: str) -> dict[str, float]:
    """Mean accuracy (%) over trials of every Table I column for one protocol."""
    long = accuracy_long(results)
    frame = long[long["protocol"] == protocol]
    return {c: float(frame.loc[frame["column"] == c, "accuracy"].mean()) for c in COLUMNS}


def cross_means(results: StudyResults) -> dict[str, float]:
    """Table III: the wild-trained ensembles and EL's parts, tested on the lab set (%)."""
    values: dict[str, float] = {}
    for kind in KINDS:
        logits, labels = results.cross[f"wild-{kind}"]
        values[KIND_NAMES[kind]] = 100 * accuracy(logits, labels, rule=SoftmaxSum())
        if kind == "el":
            values |= {part: 100 * float((logits[:, m].argmax(-1) == labels).mean())
                       for m, part in enumerate(ENSEMBLE_PARTS)}
    return {c: values[c] for c in COLUMNS}


def table3(results: StudyResults, wild_name: str, lab_name: str) -> pd.DataFrame:
    """Table III: train in the wild, test on the wild test set and on the lab set."""
    rows = {(wild_name, f"{wild_name} (test)"): means(results, "wild"),
            (wild_name, lab_name): cross_means(results)}
    table = pd.DataFrame.from_dict(rows, orient="index").round(1)
    table.index = pd.MultiIndex.from_tuples(table.index, names=["train", "test"])
    return table[list(COLUMNS)]


# Table I's and Table III's comparisons of two ensembles: (better, worse) as the paper has it.
COMPARISONS = (("FTL", "Baseline"), ("EL", "FTL"))
PROTOCOL_NAMES = {"lab": "lab test", "wild": "wild test", "cross": "wild-trained, lab set"}


def _correct(results: StudyResults, protocol: str, column: str) -> np.ndarray:
    """Whether the ensemble ``column`` ("Baseline", "FTL", "EL") is right on each test face of
    ``protocol`` ("lab", pooled over trials; "wild"; "cross": the wild runs on the lab set)."""
    kind = {name: k for k, name in KIND_NAMES.items()}[column]
    if protocol == "cross":
        outputs = [results.cross[f"wild-{kind}"]]
    else:
        table = results.table
        keys = table.loc[(table["protocol"] == protocol) & (table["kind"] == kind), "key"]
        outputs = [(results.logits[k], results.labels[k]) for k in keys]
    return np.concatenate([to_predictions(logits, SoftmaxSum()) == labels
                           for logits, labels in outputs])


def paired_tests(results: StudyResults) -> pd.DataFrame:
    """Each comparison of :data:`COMPARISONS` on the same test faces (every lab trial's test
    fold pooled, the wild test set, the lab set for the wild-trained ensembles): both
    accuracies (%), the faces only one of the two gets right, and the exact McNemar test's
    two-sided p (a binomial test on those faces): the chance of a split at least this uneven
    if both ensembles were equally accurate."""
    rows = {}
    for protocol, where in PROTOCOL_NAMES.items():
        for a, b in COMPARISONS:
            right_a, right_b = _correct(results, protocol, a), _correct(results, protocol, b)
            only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
            discordant = only_a + only_b
            rows[(where, f"{a} vs {b}")] = {
                "faces": len(right_a), "first (%)": 100 * float(right_a.mean()),
                "second (%)": 100 * float(right_b.mean()), "only the first right": only_a,
                "only the second right": only_b,
                "McNemar p": (float(stats.binomtest(only_a, discordant).pvalue)
                              if discordant else 1.0)}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["test", "comparison"])
    return table


def in_words(tests: pd.DataFrame, test: str, comparison: str, *, alpha: float = 0.05
             ) -> str:
    """One row of :func:`paired_tests` (e.g. ``"lab test"``, ``"FTL vs Baseline"``) as a
    phrase: both accuracies and whether the McNemar test at ``alpha`` tells them apart."""
    row = tests.loc[(test, comparison)]
    a, b = comparison.split(" vs ")
    first, second, p = row["first (%)"], row["second (%)"], row["McNemar p"]
    words = f"{a} {first:.1f}% against {b} {second:.1f}%"
    if p >= alpha:
        return f"{words}, a difference this test set cannot tell from chance (McNemar p = {p:.2f})"
    better = a if first > second else b
    return f"{words}: {better} is more accurate (McNemar p = {p:.2g})"


# ---------------------------------------------------------- what the landmarks tell (V-A)

def part_displacements(data: FaceDataset) -> pd.DataFrame:
    """How far each expression moves each part's landmarks (pixels): per subject, the
    distance between a part's mean points on the emotion's images and on the neutral ones,
    averaged over the part's points and over subjects. Rows: emotions; columns: parts."""
    if "neutral" not in data.classes:
        raise ValueError(f"part_displacements needs neutral faces; {data.name!r} has classes "
                         f"{data.classes}")
    neutral = data.classes.index("neutral")
    rows = {}
    for c, emotion in enumerate(data.classes):
        if c == neutral:
            continue
        per_subject = []
        for s in np.unique(data.subjects):
            a = data.landmarks[(data.subjects == s) & (data.labels == c)]
            b = data.landmarks[(data.subjects == s) & (data.labels == neutral)]
            if len(a) and len(b):
                per_subject.append(np.linalg.norm(np.nanmean(a, 0) - np.nanmean(b, 0), axis=-1))
        if per_subject:
            shift = np.nanmean(np.stack(per_subject), axis=0)  # (68,)
            rows[emotion] = {p: float(shift[list(LANDMARK_SETS[p])].mean())
                             for p in ENSEMBLE_PARTS}
    return pd.DataFrame.from_dict(rows, orient="index")


def probe_accuracy(train_points: np.ndarray, train_labels: np.ndarray,
                   test_points: np.ndarray, test_labels: np.ndarray) -> float:
    """Test accuracy of a logistic regression (standardised inputs) from landmark
    coordinates to expressions; rows with missing points are left out."""
    fit_rows = np.isfinite(train_points).all(1)
    test_rows = np.isfinite(test_points).all(1)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    probe.fit(train_points[fit_rows], train_labels[fit_rows])
    return float(probe.score(test_points[test_rows], test_labels[test_rows]))


def landmark_probe(results: StudyResults, data: FaceDataset, split: Split, key: str
                   ) -> pd.DataFrame:
    """What each part's landmarks tell about the expression (Sec. V-A, made measurable): a
    linear probe's test accuracy (%) from the part's true landmarks, and from the landmarks
    this run's stage-1 networks (EL's parts, FTL's first network for all 68) predict, next to
    their localisation error and the expression's mean displacement of the part (pixels)."""
    el, ftl = load_stage1(results, f"{key}-el"), load_stage1(results, f"{key}-ftl")
    networks = dict(zip(ENSEMBLE_PARTS, el.networks)) | {"full": ftl.networks[0]}
    x = inputs(data)
    size = data.image_size[0]
    shift = part_displacements(data) if "neutral" in data.classes else None
    rows = {}
    for part, network in networks.items():
        truth = normalise_landmarks(data.landmarks, data.image_size, part)
        guess = predict_landmarks(network, x).numpy()
        error = np.nanmean(np.abs(guess - truth)[split.test])
        rows[part] = {
            "true landmarks (%)": 100 * probe_accuracy(truth[split.train],
                                                       data.labels[split.train],
                                                       truth[split.test], data.labels[split.test]),
            "predicted landmarks (%)": 100 * probe_accuracy(
                guess[split.train], data.labels[split.train], guess[split.test],
                data.labels[split.test]),
            "localisation error (px)": float(error * size),
            "expression shift (px)": (float(shift[part].mean()) if shift is not None and
                                      part in shift else np.nan),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.loc["full", "expression shift (px)"] = (float(shift.to_numpy().mean())
                                                  if shift is not None else np.nan)
    return table


# -------------------------------------------------------------------- V-B: landmark errors

def error_table(results: StudyResults, protocol: str, size: int) -> pd.DataFrame:
    """Sec. V-B: mean absolute landmark error (pixels at ``size``) of each part before and
    after fine-tuning with the localisation head fixed, and after with the stage-1
    BatchNorm statistics put back; EL's part networks and FTL's 68-point networks (mean over
    its networks and trials)."""
    frame = results.errors[results.errors["protocol"] == protocol]
    frame = frame[frame["part"] != "full"].copy()
    frame["network"] = frame["kind"].map({"el": "EL part network", "ftl": "FTL (68 points)"})
    cols = ["before", "after", "after_stage1_bn"]
    table = frame.groupby(["network", "part"], sort=False)[cols].mean() * size
    table["change"] = table["after"] - table["before"]
    table = table.rename(columns={"after_stage1_bn": "after, stage-1 BN statistics"})
    networks = [n for n in ("EL part network", "FTL (68 points)")
                if n in table.index.unique("network")]
    order = pd.MultiIndex.from_product([networks, ENSEMBLE_PARTS])
    return table.reindex([row for row in order if row in table.index])


def landmark_pairs(results: StudyResults, key: str, x: torch.Tensor
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Fig. 10: the 68 points EL's part networks of run ``key`` predict for images ``x``
    before and after fine-tuning (the stage-1 localisation heads throughout), (N, 68, 2)
    pixels each."""
    size = x.shape[-2:]
    pairs = []
    for model in (load_stage1(results, f"{key}-el"), load_model(results, f"{key}-el")):
        points = np.full((len(x), N_LANDMARKS, 2), np.nan, dtype=np.float32)
        for part, network in zip(ENSEMBLE_PARTS, model.networks):
            points[:, list(LANDMARK_SETS[part])] = pixel_landmarks(
                predict_landmarks(network, x), tuple(size))
        pairs.append(points)
    return pairs[0], pairs[1]


def landmark_figure(images: np.ndarray, before: np.ndarray, after: np.ndarray) -> Figure:
    """Fig. 10: each face twice, points before fine-tuning (top) and after (bottom),
    coloured by part."""
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(1.9 * n, 4.0), squeeze=False)
    for row, (points, title) in enumerate(((before, "before"), (after, "after"))):
        for i in range(n):
            ax = axes[row, i]
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
            for part in ENSEMBLE_PARTS:
                idx = list(LANDMARK_SETS[part])
                ax.scatter(points[i, idx, 0], points[i, idx, 1], s=6, c=PART_COLORS[part],
                           label=part)
            ax.set_axis_off()
            ax.set_title(f"{title} fine-tuning", fontsize=8)
    axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7,
                       frameon=False)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ IV-C, V-C: Grad-CAM

# How each part's evidence region is drawn from its landmarks: a filled hull per group of
# points, or a thick line along them (the jaw is a line around the face).
_REGIONS: dict[str, tuple[str, tuple[tuple[int, ...], ...]]] = {
    "eyebrows": ("line", (tuple(range(17, 22)), tuple(range(22, 27)))),
    "eyes": ("hull", (tuple(range(36, 42)), tuple(range(42, 48)))),
    "nose": ("hull", (tuple(range(27, 36)),)),
    "mouth": ("hull", (tuple(range(48, 60)),)),
    "jaw": ("line", (tuple(range(0, 17)),)),
}


def part_masks(landmarks: np.ndarray, size: tuple[int, int], *, margin: float = 0.06
               ) -> dict[str, np.ndarray]:
    """Binary (N, H, W) region of each part around its landmarks: the eyes', nose's and
    mouth's hulls and lines along the eyebrows and the jaw, widened by ``margin`` of the
    image side on every side."""
    points = np.asarray(landmarks, dtype=np.float32)
    if points.ndim != 3 or points.shape[1:] != (N_LANDMARKS, 2):
        raise ValueError(f"expected (N, {N_LANDMARKS}, 2) landmarks, got {points.shape}")
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), got {margin}")
    h, w = size
    grow = max(1, round(margin * max(h, w)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    masks = {}
    for part, (shape, groups) in _REGIONS.items():
        out = np.zeros((len(points), h, w), dtype=np.uint8)
        for i, face in enumerate(points):
            if not np.isfinite(face).all():
                continue
            for group in groups:
                pts = np.round(face[list(group)]).astype(np.int32)
                if shape == "hull":
                    cv2.fillConvexPoly(out[i], cv2.convexHull(pts), 1)
                else:
                    cv2.polylines(out[i], [pts], False, 1, thickness=1)
            out[i] = cv2.dilate(out[i], kernel)
        masks[part] = out
    return masks


def gradcam_maps(results: StudyResults, key: str, x: torch.Tensor, targets: np.ndarray
                 ) -> dict[str, np.ndarray]:
    """Grad-CAM maps (B, H, W) explaining the ``targets`` classes (Sec. IV-C, eqs. 5-6, at
    each network's last convolution): one per EL part network, and the union (pixel-wise
    maximum) of the five maps of the Baseline and of the FTL ensemble, as Fig. 11."""
    maps: dict[str, np.ndarray] = {}
    targets = np.asarray(targets, dtype=np.int64)
    x = x.to(resolve_device(results.config.device))
    for kind in ("baseline", "ftl"):
        model = load_model(results, f"{key}-{kind}")
        maps[KIND_NAMES[kind]] = union_map(branch_maps(model, x, targets=targets))
    el = load_model(results, f"{key}-el")
    el_maps = branch_maps(el, x, targets=targets)
    maps |= {f"EL {part}": part_maps for part, part_maps in zip(ENSEMBLE_PARTS, el_maps)}
    return maps


def evidence_table(maps: Mapping[str, np.ndarray], regions: Mapping[str, np.ndarray]
                   ) -> pd.DataFrame:
    """Share of each map's mass inside each region (mean over the images; Grad-CAM maps with
    no mass are left out) and, last row, each region's share of the image (what a uniform
    map scores)."""
    rows = {}
    for name, cams in maps.items():
        row = {}
        for region, masks in regions.items():
            scores = np.asarray(evidence_score(cams, masks), dtype=float)
            scores = scores[np.isfinite(scores)]
            row[region] = float(scores.mean()) if len(scores) else np.nan
        rows[name] = row
    rows["chance (area share)"] = {region: float(np.mean(chance_level(masks)))
                                   for region, masks in regions.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def own_part_lift(evidence: pd.DataFrame) -> pd.Series:
    """For each EL part network: its map's share in its own part's region divided by that
    region's chance share (1 = no preference)."""
    chance = evidence.loc["chance (area share)"]
    return pd.Series({part: evidence.at[f"EL {part}", part] / chance[part]
                      for part in ENSEMBLE_PARTS}, name="lift")


def gradcam_picks(data: FaceDataset, test: np.ndarray,
                  emotions: Sequence[str] = ("surprise", "disgust", "happiness")) -> np.ndarray:
    """Indices of one test face per emotion of Fig. 11 (surprise, disgust, happiness), the
    first of each with landmarks; falls back to the first test faces."""
    finite = np.isfinite(data.landmarks[test]).all(axis=(1, 2))
    picks = []
    for emotion in emotions:
        if emotion in data.classes:
            hits = test[(data.labels[test] == data.classes.index(emotion)) & finite]
            if len(hits):
                picks.append(hits[0])
    return np.array(picks or test[finite][:3])


# --------------------------------------------------------------------- Table II, Sec. IV-E

def complexity(n_classes: int = 8, image_size: int = 160) -> pd.DataFrame:
    """Sec. III-C and IV-E at the paper's input (160x160x3) and width, for CK+'s 8 classes
    (the worst case the paper reports): :func:`fernb.models.parts.complexity_summary`."""
    return complexity_summary(n_classes=n_classes, image_size=image_size)


def _conv_share(n_classes: int = 8, image_size: int = 160) -> float:
    from fernb.complexity import flops_per_layer
    layers = flops_per_layer(expression_network(PartNetwork(part=None, n_classes=n_classes)),
                             (3, image_size, image_size))
    return 100 * float(layers.loc[layers["kind"] == "conv", "flops"].sum()
                       / layers["flops"].sum())


# ------------------------------------------------------------------------ paper vs this book

REAL_LAB = ("ckplus", "jaffe")


def real_data(dataset: str, wild_dataset: str) -> bool:
    """Whether both sets are real, so that accuracies compare with the paper's in value."""
    return dataset not in SYNTHETIC and wild_dataset not in SYNTHETIC


def _ranked(values: Mapping[str, float]) -> list[str]:
    return sorted(ENSEMBLE_PARTS, key=lambda p: -values[p])


def _millions(count: float) -> float:
    return round(float(count) / 1e6, 4)


def measured(results: StudyResults, cost: pd.DataFrame, dataset: str) -> dict:
    """This run's values for :func:`fernb.report.paper_vs_book` ("fll_to_fer"): Table I for
    the lab set (under CK+'s keys, JAFFE's when ``dataset`` is ``"jaffe"``) and the wild set
    (SFEW's keys), Table III, and the Table II / Sec. IV-E complexity of ``cost``
    (:func:`complexity`)."""
    lab_key = "jaffe" if dataset == "jaffe" else "ckplus"
    lab, wild, cross = means(results, "lab"), means(results, "wild"), cross_means(results)
    values: dict = {}
    for prefix, m in ((lab_key, lab), ("sfew", wild)):
        values |= {f"{prefix}_baseline_accuracy": round(m["Baseline"], 2),
                   f"{prefix}_ftl_accuracy": round(m["FTL"], 2),
                   f"{prefix}_el_accuracy": round(m["EL"], 2),
                   f"{prefix}_parts_accuracy": [round(m[p], 2) for p in ENSEMBLE_PARTS]}
    values["sfew_el_gain_over_parts_mean"] = round(
        wild["EL"] - float(np.mean([wild[p] for p in ENSEMBLE_PARTS])), 2)
    values[f"cross_sfew_to_{lab_key}"] = round(cross["EL"], 2)
    for prefix, m in (("lab", lab), ("wild", wild), ("cross", cross)):
        values[f"{prefix}_ftl_minus_baseline"] = round(m["FTL"] - m["Baseline"], 2)
        values[f"{prefix}_el_minus_ftl"] = round(m["EL"] - m["FTL"], 2)
    for prefix, m in (("lab", lab), ("wild", wild)):
        values[f"{prefix}_el_minus_best_part"] = round(
            m["EL"] - max(m[p] for p in ENSEMBLE_PARTS), 2)
        values[f"{prefix}_best_part"] = _ranked(m)[0]
        values[f"{prefix}_worst_part"] = _ranked(m)[-1]
    values["cross_el_minus_wild_el"] = round(cross["EL"] - wild["EL"], 2)
    values |= {
        "extractor_params_millions": _millions(cost.at["extractor", "params"]),
        "subnetwork_params_millions": _millions(cost.at["sub-network", "params"]),
        "el_params_millions": _millions(cost.at["ensemble", "params"]),
        "el_params_keras_millions": _millions(cost.at["ensemble", "params_keras"]),
        "expression_head_params_millions": _millions(cost.at["expression head", "params"]),
        "landmark_head_nose_params_millions": _millions(cost.at["landmark head (nose)",
                                                                "params"]),
        "landmark_head_full_params_millions": _millions(cost.at["landmark head (full)",
                                                                "params"]),
        "subnetwork_gflops": round(float(cost.at["sub-network", "flops_formula"]) / 1e9, 4),
        "el_gflops": round(float(cost.at["ensemble", "flops_formula"]) / 1e9, 4),
        "conv_flops_share": round(_conv_share(), 2),
        "subnetwork_storage_mb": round(float(cost.at["sub-network", "storage_mb"]), 2),
        "el_storage_mb": round(float(cost.at["ensemble", "storage_mb"]), 2),
        "paper_layers": paper_layers(PartNetwork()),
    }
    return values


def claims(results: StudyResults, probe: pd.DataFrame, errors: pd.DataFrame,
           evidence: pd.DataFrame) -> list[Claim]:
    """The paper's claims, each checked on this run.

    Args:
        probe: :func:`landmark_probe` of the lab set.
        errors: :func:`error_table` of the wild set (the paper's Sec. V-B uses SFEW).
        evidence: :func:`evidence_table` of the lab maps (with an ``expression`` column when
            the dataset has evidence masks).
    """
    lab, wild, cross = means(results, "lab"), means(results, "wild"), cross_means(results)
    p_values = paired_tests(results)["McNemar p"]

    def trio(m: Mapping[str, float]) -> str:
        return f"Baseline {m['Baseline']:.1f}, FTL {m['FTL']:.1f}, EL {m['EL']:.1f}"

    def tested(test: str, comparison: str) -> str:
        return f"McNemar p = {p_values[(test, comparison)]:.2g}"

    def parts(m: Mapping[str, float]) -> str:
        return ", ".join(f"{p} {m[p]:.1f}" for p in _ranked(m))

    el_errors = errors.xs("EL part network", level="network")
    change = el_errors["change"]
    lift = own_part_lift(evidence)
    truth = probe.loc[list(ENSEMBLE_PARTS), "true landmarks (%)"]
    expression = "expression" in evidence.columns and evidence["expression"].notna().all()
    return [
        Claim("transfer from landmarks beats direct training (FTL > Baseline)", "Table I",
              lab["FTL"] > lab["Baseline"] and wild["FTL"] > wild["Baseline"],
              f"lab: {trio(lab)} ({tested('lab test', 'FTL vs Baseline')}); wild: "
              f"{trio(wild)} ({tested('wild test', 'FTL vs Baseline')})"),
        Claim("the part-based ensemble beats the FTL ensemble (EL > FTL)", "Table I",
              lab["EL"] > lab["FTL"] and wild["EL"] > wild["FTL"],
              f"lab EL {lab['EL']:.1f} vs FTL {lab['FTL']:.1f} "
              f"({tested('lab test', 'EL vs FTL')}); "
              f"wild EL {wild['EL']:.1f} vs FTL {wild['FTL']:.1f} "
              f"({tested('wild test', 'EL vs FTL')})"),
        Claim("EL beats its best sub-network (the parts are complementary)", "Sec. V-A",
              lab["EL"] > max(lab[p] for p in ENSEMBLE_PARTS)
              and wild["EL"] > max(wild[p] for p in ENSEMBLE_PARTS),
              f"lab EL {lab['EL']:.1f} vs best part {max(lab[p] for p in ENSEMBLE_PARTS):.1f}; "
              f"wild EL {wild['EL']:.1f} vs {max(wild[p] for p in ENSEMBLE_PARTS):.1f}"),
        Claim("the mouth sub-network is the most accurate and the nose the least", "Table I",
              all(_ranked(m)[0] == "mouth" and _ranked(m)[-1] == "nose" for m in (lab, wild)),
              f"lab: {parts(lab)}; wild: {parts(wild)}"),
        Claim("the parts' landmarks order as the AUs suggest: mouth, eyes, eyebrows, jaw, nose",
              "Sec. V-A", list(truth.sort_values(ascending=False).index) == list(PAPER_ORDER),
              "true-landmark probe: " + ", ".join(
                  f"{p} {v:.1f}" for p, v in truth.sort_values(ascending=False).items())),
        Claim("fine-tuning lowers the mouth's and eyes' landmark error and raises the nose's",
              "Sec. V-B", bool(change["mouth"] < 0 and change["eyes"] < 0
                               and change["nose"] > 0),
              "change (px): " + ", ".join(f"{p} {change[p]:+.2f}" for p in ENSEMBLE_PARTS)),
        Claim("each EL sub-network looks at its own part", "Sec. V-C, Fig. 11",
              bool((lift > 1).all()),
              "own-region share / chance: " + ", ".join(f"{p} {v:.2f}" for p, v in lift.items())),
        Claim("FTL's maps fall on the expression's regions more than the Baseline's",
              "Sec. V-C, Fig. 11",
              bool(evidence.at["FTL", "expression"] > evidence.at["Baseline", "expression"])
              if expression else None,
              f"FTL {evidence.at['FTL', 'expression']:.2f}, Baseline "
              f"{evidence.at['Baseline', 'expression']:.2f}" if expression else
              "the dataset has no evidence masks"),
        Claim("across datasets EL generalises best, then FTL, then the Baseline", "Table III",
              cross["EL"] > cross["FTL"] > cross["Baseline"],
              f"{trio(cross)} (EL vs FTL: {tested(PROTOCOL_NAMES['cross'], 'EL vs FTL')}; FTL "
              f"vs Baseline: {tested(PROTOCOL_NAMES['cross'], 'FTL vs Baseline')})"),
        Claim("the wild-trained EL is more accurate on the lab set than on its own test set",
              "Table III", cross["EL"] > wild["EL"],
              f"lab {cross['EL']:.1f} vs wild test {wild['EL']:.1f}"),
    ]
