"""Zhou, Xie & Tian's experiments (R18+FAML, FGA, T2V), as chapter 5 runs them.

Every network starts from one *shared start*, as in the paper, where all networks are the
same pre-trained ResNet-18 and differ only by "random loss, initial weights of FC,
data-flipping" (Sec. 3.3): a pre-trained R18 (the paper's MS-Celeb-1M file when ``weights``
names one; otherwise a narrow R18 pre-trained here on ``synth-lab``), to which R18+FA and FAML
add their facial-area convolutions (copies of the first convolution) and one common draw of
the attention blocks. Only the classifier of each network is its own draw. Eq. (9) needs this:
averaging the kernels of networks from independent random starts mixes unrelated channels.

The study trains, per *replicate* (a repetition with other classifier draws, batch orders,
flips and loss draws on the same split), an ensemble of ``n_networks`` R18 networks
(cross-entropy), of FAML networks (the multiple losses) and of every extra backbone of Table 6.
The first ``ablation_replicates`` replicates also train R18+FA (Table 2), R18 from scratch (a
control: what the shared pre-trained start is worth) and FGA (Algorithm 1) on the FAML
population. Every network is stored (weights, test logits, history, ``result.json`` last), so
an interrupted study resumes; a network whose artifacts are incomplete is trained again.

Choices beyond the paper, each a parameter: the book's stand-in for the MS-Celeb-1M
pre-training is supervised training on ``synth-lab`` (SGD, lr ``pretrain_lr``, momentum 0.9,
weight decay 5e-4, cosine annealing, horizontal flips), the only face data a CPU run has.
Single-model rows (R18, R18+FA, FAML, FAML-FGA) give the mean accuracy of the networks of a
model, not the best one, so that the rows compare like with like. Grad-CAM maps come from each
network's ``cam_layer`` at the input's size (:meth:`fernb.models.faml.FAML.cam_layer`:
``layer4`` at the paper's 224 px, as the paper; ``layer2`` at 48 px, where ``layer4`` is 2 x 2).
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from scipy import stats
from torch import nn

from fernb.data.datasets import FaceDataset, chapter_dataset
from fernb.data.splits import standard_split
from fernb.data.transforms import AUGMENTATIONS, BatchAugmentation
from fernb.ensemble import (ZHOU_RULES, TopTwoVote, label_rank_distribution, t2v_sweep,
                            t2v_votes, top_two_counts)
from fernb.evaluate import normalized_confusion, paired_ttest, predict
from fernb.explain import chance_level, evidence_score, gradcam
from fernb.fga import TwoPhase, fga, shared_start, train_two_phase
from fernb.io import atomic_savez, atomic_torch_save, atomic_write_json, \
    atomic_write_text, read_json
from fernb.losses import MultiLoss, balanced_class_weights
from fernb.models.backbones import build_backbone
from fernb.models.faml import FAML, r18_faml
from fernb.params import (LEARNING_RATE, POSITIVE_INT, ChapterSettings, Choice, Constraint,
                          DatasetName, ListOf, Range, Relation, Unused, dataset_rules, param,
                          relation)
from fernb.report import Claim
from fernb.seeding import derive_seed, seeded
from fernb.train import FitConfig, Schedule, adam, fit, sgd

DATASETS = ("synth-wild", "synth-lab", "rafdb", "affectnet", "folder")
PRETRAIN_DATASET = "synth-lab"

# Table 6's other basic networks: row name -> torchvision architecture.
TABLE6_BACKBONES: dict[str, str] = {"RI18": "resnet18", "ResNet34": "resnet34",
                                    "VGG16": "vgg16", "DenseNet121": "densenet121"}

# Table 2's rows: (model whose networks are used, decision) -> FA, loss, FGA, T2V marks.
ABLATION_ROWS: dict[str, tuple[str, str | None]] = {
    "R18": ("R18", None), "R18+FA": ("R18+FA", None), "FAML": ("FAML", None),
    "FAML-FGA": ("FAML-FGA", None), "FAML-T2V": ("FAML", "T2V"),
    "FAML-FGA-T2V": ("FAML-FGA", "T2V"),
}

# Table 3 (Zhou et al.): six R18+FAML networks on one "Anger" RAF-DB image; classes in the
# paper's order. Its T2V row is [8.7, 0, 0, 7.7, 0, 1, 0] and the decision AN.
TABLE3_CLASSES = ("AN", "DI", "FE", "HA", "NE", "SA", "SU")
TABLE3_LOGITS = np.array([
    [0.295, 0.138, -1.331, 0.917, -1.429, -0.502, -0.712],
    [0.312, 0.058, -1.383, 0.888, -1.426, -0.547, -0.495],
    [0.187, -0.119, -0.835, 1.715, -1.240, -0.118, -1.127],
    [1.518, -0.168, -1.641, 0.489, -1.482, -0.985, -0.491],
    [0.798, -0.210, -1.823, 0.753, -1.308, -0.582, -1.493],
    [0.403, -0.433, -1.392, -0.637, -0.493, -0.131, -1.072],
])
TABLE3_CLASS_COLUMN = ("FE", "FE", "FE", "AN", "AN", "AN")

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


def _pretraining_unused(v: Mapping[str, Any]) -> bool:
    return bool(v["weights"]) and all(b in v["backbone_weights"] for b in v["backbones"])


class _WeightsFile(Constraint):
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


_RELATIONS, _UNUSED = dataset_rules("dataset", "data_root", ("n_subjects",))

@dataclass(frozen=True)
class Settings(ChapterSettings):
    """The chapter's parameters (``notebooks/05_faml_t2v.ipynb``); defaults are the ``cpu``
    profile."""

    dataset: str = param("synth-wild", DatasetName(DATASETS),
                         'or a real dataset, e.g. "rafdb" (set data_root)')
    data_root: str = param("", None, "folder of a real dataset")
    n_subjects: int = param(60, Range(8, 10_000, integer=True),
                            "synthetic subjects (40 images each)")
    image_size: int = param(48, Range(48, 224, integer=True), "paper: 224")
    width: float = param(0.125, Range(0, 4, open_low=True),
                         "channel multiplier of every ResNet, 1.0 is the paper network")
    weights: str = param("", _WeightsFile(),
                         'R18\'s weights file (paper: MS-Celeb-1M); "": pre-train on synth-lab')
    backbones: list[str] = param([], ListOf(Choice(*TABLE6_BACKBONES), min_len=0, unique=True),
                                 'extra Table 6 rows, e.g. ["ResNet34"] (paper: RI18, '
                                 'ResNet34, VGG16, DenseNet121)')
    backbone_weights: dict[str, str] = param({}, WeightFiles(), "row -> weights file (paper: "
                                             "ImageNet); rows without one are pre-trained here")
    pretrain_subjects: int = param(40, Range(8, 10_000, integer=True),
                                   "synth-lab subjects of the pre-training")
    pretrain_epochs: int = param(12, POSITIVE_INT,
                                 "epochs of the pre-training (SGD with cosine annealing)")
    pretrain_lr: float = param(0.05, LEARNING_RATE, "SGD learning rate of the pre-training")
    n_networks: int = param(4, Range(2, 16, integer=True), "networks per ensemble (paper: 6)")
    replicates: int = param(3, Range(1, 50, integer=True),
                            "ensembles per basic network, other draws (paper: 1)")
    ablation_replicates: int = param(1, Range(0, 50, integer=True),
                                     "replicates that also train R18+FA, R18 from scratch and FGA")
    fa_networks: int = param(2, Range(1, 16, integer=True),
                             "networks of R18+FA and of R18 from scratch per such replicate")
    fga_generations: int = param(1, Range(1, 10, integer=True),
                                 "FGA generations (paper: not given)")
    lr1: float = param(0.001, LEARNING_RATE, "Lr_1, Adam with cosine annealing (paper: 0.0003)")
    lr2: float = param(1e-05, LEARNING_RATE, "Lr_2, Adam with StepLR (paper: 0.00001)")
    max_epochs1: int = param(4, POSITIVE_INT, "phase 1 ends when the training loss is stable "
                             "or here (paper: stable)")
    epochs2: int = param(1, POSITIVE_INT, "epochs of phase 2 (paper: not given)")
    step_size: int = param(5, POSITIVE_INT, "StepLR step of phase 2 (paper: not given)")
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

    RELATIONS: ClassVar[Sequence[Relation]] = (
        *_RELATIONS,
        relation(("ablation_replicates", "replicates"),
                 lambda v: v["ablation_replicates"] <= v["replicates"],
                 lambda v: f"ablation_replicates = {v['ablation_replicates']} cannot exceed "
                           f"replicates = {v['replicates']} (they are the first replicates)"),
        relation(("fa_networks", "n_networks"), lambda v: v["fa_networks"] <= v["n_networks"],
                 lambda v: f"fa_networks = {v['fa_networks']} must be at most n_networks = "
                           f"{v['n_networks']}"),
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


# ----------------------------------------------------------------------------- data

@dataclass
class Splits:
    """Training and test parts of one dataset (3 channels)."""

    train: FaceDataset
    test: FaceDataset

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes

    @property
    def image_size(self) -> int:
        return self.train.image_size[0]


def _split(data: FaceDataset, seed: int) -> Splits:
    split = standard_split(data.labels, data.subjects, data.split, seed=seed)
    return Splits(data.subset(np.sort(np.concatenate([split.train, split.val]))),
                  data.subset(split.test))


def load_data(dataset: str, data_root: str, config: Config, *, n_subjects: int,
              image_size: int, pretrain_subjects: int) -> tuple[Splits, Splits | None]:
    """The chapter's dataset and, when ``config`` needs pre-training, the synth-lab set, each
    split by subject (a real dataset's own partition where it has one;
    :func:`fernb.data.splits.standard_split`) into training and test parts, as 3-channel
    images. Nothing is selected on validation data (the paper trains until the training loss
    is stable), so the validation subjects of the split train too."""
    data = chapter_dataset(dataset, data_root, size=image_size, n_subjects=n_subjects,
                           seed=config.seed).with_options(channels=3)
    if not config.needs_pretraining:
        return _split(data, config.seed), None
    lab = chapter_dataset(PRETRAIN_DATASET, size=image_size, n_subjects=pretrain_subjects,
                          seed=config.seed).with_options(channels=3)
    return _split(data, config.seed), _split(lab, config.seed)


# ----------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class Config:
    """Training settings shared by every network (paper: Adam, Lr_1 = 3e-4 with cosine
    annealing until the training loss is stable, then Lr_2 = 1e-5 with StepLR; batch 128 on
    RAF-DB; ML with 80 % LSR, epsilon 0.1; flips; alpha 1.9, beta 1.0; six networks)."""

    width: float = 1.0
    weights: str = ""
    backbones: tuple[str, ...] = ()
    backbone_weights: Mapping[str, str] = field(default_factory=dict)
    pretrain_epochs: int = 12
    pretrain_lr: float = 0.05
    n_networks: int = 6
    replicates: int = 1
    ablation_replicates: int = 1
    fa_networks: int = 6
    fga_generations: int = 1
    lr1: float = 3e-4
    lr2: float = 1e-5
    max_epochs1: int = 40
    epochs2: int = 10
    step_size: int = 5
    batch_size: int = 128
    p_lsr: float = 0.8
    epsilon: float = 0.1
    class_weighted: bool = False
    augment: str = "flip"
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [b for b in self.backbones if b not in TABLE6_BACKBONES]
        if unknown:
            raise ValueError(f"backbones {unknown} are not Table 6 rows; choose from "
                             f"{list(TABLE6_BACKBONES)}")
        if self.ablation_replicates > self.replicates:
            raise ValueError(f"ablation_replicates={self.ablation_replicates} exceeds "
                             f"replicates={self.replicates}")

    @property
    def needs_pretraining(self) -> bool:
        """Whether some start has no weights file, so synth-lab pre-training is needed."""
        return not self.weights or any(not self.backbone_weights.get(b)
                                       for b in self.backbones)

    @property
    def phases(self) -> TwoPhase:
        return TwoPhase(lr1=self.lr1, lr2=self.lr2, max_epochs1=self.max_epochs1,
                        epochs2=self.epochs2, step_size=self.step_size)

    def record(self) -> dict[str, Any]:
        """The settings as stored in ``config.json``."""
        record = asdict(self)
        record["backbones"] = list(self.backbones)
        record["backbone_weights"] = dict(self.backbone_weights)
        return record


@dataclass(frozen=True)
class Model:
    """One kind of network of the study: how it is built and trained."""

    name: str
    arch: str  # "resnet18" for R18, R18+FA and FAML; a torchvision builder otherwise
    fusion: bool = False
    attention: bool = False
    multi_loss: bool = False
    pretrained: bool = True


MODELS: dict[str, Model] = {
    "R18": Model("R18", "resnet18"),
    "R18 (scratch)": Model("R18 (scratch)", "resnet18", pretrained=False),
    "R18+FA": Model("R18+FA", "resnet18", fusion=True, attention=True),
    "FAML": Model("FAML", "resnet18", fusion=True, attention=True, multi_loss=True),
}


def _model(name: str) -> Model:
    if name in MODELS:
        return MODELS[name]
    if name == "FAML-FGA":
        return MODELS["FAML"]
    return Model(name, TABLE6_BACKBONES[name])


def _build(model: Model, n_classes: int, width: float, weights: str | None = None
           ) -> nn.Module:
    """A fresh network of ``model`` (weights loaded from a file when given)."""
    if model.arch == "resnet18" and model.name in MODELS:
        return r18_faml(n_classes=n_classes, width=width, fusion=model.fusion,
                        attention=model.attention, weights=weights or None)
    return build_backbone(model.arch, n_classes=n_classes, width=width, weights=weights or None)


def _head_keys(net: nn.Module) -> tuple[str, ...]:
    if isinstance(net, FAML):
        return ("net.fc.weight", "net.fc.bias")
    return tuple(f"net.{k}" for k in net.head_keys)


# ----------------------------------------------------------------------------- storage

ARTIFACTS = ("weights.pt", "test.npz", "history.csv")


def _complete(folder: Path) -> dict | None:
    """The stored result of a network if every artifact is on disk, else None."""
    result = read_json(folder / "result.json")
    if result is None or any(not (folder / a).exists() for a in ARTIFACTS):
        return None
    return result


def _discard(folder: Path) -> None:
    """Forget an incomplete network: its result record (its checkpoints resume training)."""
    (folder / "result.json").unlink(missing_ok=True)


class _Trainer:
    """``train(model, name) -> training loss`` (the form :func:`fernb.fga.fga` calls):
    both learning-rate phases of Sec. 3.1 through :func:`fernb.fga.train_two_phase`, each
    network stored in ``folder/name``; a stored network is loaded instead of trained."""

    def __init__(self, folder: Path, data: Splits, config: Config, model: Model,
                 replicate: int) -> None:
        self.folder, self.data, self.config, self.model = folder, data, config, model
        self.replicate = replicate
        self.trained = 0  # networks trained (not loaded) by this trainer

    def loss(self) -> MultiLoss:
        c = self.config
        weights = (balanced_class_weights(self.data.train.labels, len(self.data.classes))
                   if c.class_weighted else None)
        return MultiLoss(p_lsr=c.p_lsr if self.model.multi_loss else 0.0, epsilon=c.epsilon,
                         class_weights=weights)

    def __call__(self, net: nn.Module, name: str) -> float:
        out = self.folder / name
        result = _complete(out)
        if result is not None:
            net.load_state_dict(torch.load(out / "weights.pt", map_location="cpu",
                                           weights_only=True))
            return float(result["training_loss"])
        _discard(out)
        c = self.config
        augment = None if c.augment == "none" else BatchAugmentation(c.augment,
                                                                     self.data.image_size)
        fit_config = FitConfig(epochs=1, optimizer=adam(c.lr1), loss=self.loss(),
                               batch_size=c.batch_size, augment=augment, device=c.device,
                               precision=c.precision,
                               seed=derive_seed(c.seed, "train", self.replicate, name))
        run = train_two_phase(net, self.data.train, None, fit_config, phases=c.phases,
                              checkpoint=out / "ckpt")
        logits = predict(net, self.data.test, device=c.device, precision=c.precision).numpy()
        frame = run.to_frame()
        atomic_write_text(out / "history.csv", frame.to_csv())
        atomic_torch_save({k: v.detach().cpu() for k, v in net.state_dict().items()},
                          out / "weights.pt")
        atomic_savez(out / "test.npz", logits=logits)
        accuracy = float((logits[:, 0].argmax(-1) == self.data.test.labels).mean())
        atomic_write_json(out / "result.json", {  # last: the network is complete
            "name": name, "training_loss": run.training_loss, "switch_epoch": run.switch_epoch,
            "stable": run.stable, "epochs": len(frame), "accuracy": accuracy,
            "train_seconds": round(float(frame["seconds"].sum()), 1)})
        self.trained += 1
        return run.training_loss


# ----------------------------------------------------------------------------- the study

@dataclass
class StudyResults:
    """Every network (``networks``: one row each), the test logits of every model's
    networks per replicate (``logits[(replicate, model)]``: (N, M, C)), the test labels, the
    FGA lineage per replicate, and the pre-trained networks' logits on the pre-training test
    set (``contrast``: arch -> (logits, labels))."""

    networks: pd.DataFrame
    logits: dict[tuple[int, str], np.ndarray]
    labels: np.ndarray
    classes: tuple[str, ...]
    lineage: dict[int, pd.DataFrame]
    contrast: dict[str, tuple[np.ndarray, np.ndarray]]
    config: Config
    folder: Path
    dataset: str
    trained: int = 0  # networks (and pre-trainings) trained, not loaded, by this call

    def models(self) -> list[str]:
        """Model names in the order they were trained."""
        return list(dict.fromkeys(m for _, m in self.logits))

    def replicates(self, model: str) -> list[int]:
        return sorted(r for r, m in self.logits if m == model)


def _pretrain(arch: str, lab: Splits, config: Config, folder: Path) -> tuple[str, bool]:
    """Pre-train ``arch`` on synth-lab (stored); returns the path of its torchvision weights
    and whether it was trained now."""
    out = folder / "pretrain" / arch
    weights = out / "weights.pt"
    if read_json(out / "result.json") is not None and weights.exists() and \
            (out / "test.npz").exists():
        return str(weights), False
    (out / "result.json").unlink(missing_ok=True)
    model = Model(arch, arch) if arch != "resnet18" else MODELS["R18"]
    with seeded(config.seed, "pretrain", arch):
        net = _build(model, len(lab.classes), config.width)
    augment = None if config.augment == "none" else BatchAugmentation(config.augment,
                                                                      lab.image_size)
    history = fit(net, lab.train, None, FitConfig(
        epochs=config.pretrain_epochs, optimizer=sgd(config.pretrain_lr, weight_decay=5e-4),
        batch_size=config.batch_size,
        schedule=Schedule("CosineAnnealingLR", T_max=config.pretrain_epochs),
        device=config.device, precision=config.precision,
        seed=derive_seed(config.seed, "pretrain", arch), augment=augment),
        checkpoint=out / "ckpt")
    logits = predict(net, lab.test, device=config.device, precision=config.precision).numpy()
    atomic_savez(out / "test.npz", logits=logits, labels=lab.test.labels)
    atomic_torch_save({k: v.detach().cpu() for k, v in net.net.state_dict().items()}, weights)
    atomic_write_json(out / "result.json", {
        "arch": arch, "epochs": len(history),
        "accuracy": float((logits[:, 0].argmax(-1) == lab.test.labels).mean())})
    return str(weights), True


def _start(model: Model, n_classes: int, config: Config, weights: str | None
           ) -> Callable[[], nn.Module]:
    """The builder of ``model``'s networks: the shared start (pre-trained weights plus one
    common draw of every other part) with the classifier drawn per network; from scratch
    when ``model.pretrained`` is False."""
    build = partial(_build, model, n_classes, config.width)
    if not model.pretrained:
        return build
    with seeded(config.seed, "start", model.name):
        start = _build(model, n_classes, config.width, weights)
    return shared_start(build, start.state_dict(), own=_head_keys(start))


def _plan(config: Config) -> list[tuple[int, str, int]]:
    """(replicate, model, networks) to train, in order; FGA follows FAML in its replicates."""
    plan = []
    for r in range(config.replicates):
        plan.append((r, "R18", config.n_networks))
        if r < config.ablation_replicates:
            plan += [(r, "R18 (scratch)", config.fa_networks), (r, "R18+FA", config.fa_networks)]
        plan.append((r, "FAML", config.n_networks))
        plan += [(r, b, config.n_networks) for b in config.backbones]
    return plan


def run_study(data: Splits, lab: Splits | None, config: Config, out_dir: str | Path
              ) -> StudyResults:
    """Train (or load) every network of the study and return the test logits.

    Args:
        data: the chapter's dataset, split by subject.
        lab: the synth-lab pre-training set; unused (may be None) when every network starts
            from a weights file.
        config: the settings.
        out_dir: one folder per network; an interrupted study resumes, a network whose stored
            artifacts are incomplete is trained again.
    """
    out_dir = Path(out_dir)
    stored = read_json(out_dir / "config.json")
    if stored is not None and stored != config.record():
        raise ValueError(f"{out_dir} holds a study made with other settings ({stored}); use "
                         f"another folder or delete it")
    atomic_write_json(out_dir / "config.json", config.record())
    n = len(data.classes)
    # Each start (R18's, shared by R18+FA and FAML, and each Table 6 row's) is a weights file
    # or, without one, the architecture pre-trained here on synth-lab.
    files = {"R18": config.weights, **{b: config.backbone_weights.get(b, "")
                                       for b in config.backbones}}
    arch = {"R18": "resnet18", **{b: TABLE6_BACKBONES[b] for b in config.backbones}}
    pretrained, contrast, trained = {}, {}, 0
    for a in sorted({arch[s] for s, f in files.items() if not f}):
        if lab is None:
            raise ValueError(f"{a} has no weights file, so it is pre-trained on synth-lab: "
                             f"pass lab")
        pretrained[a], now = _pretrain(a, lab, config, out_dir)
        trained += now
        stored_test = np.load(out_dir / "pretrain" / a / "test.npz")
        contrast[a] = (stored_test["logits"], stored_test["labels"])
    files = {s: f or pretrained[arch[s]] for s, f in files.items()}
    rows, logits, lineage = [], {}, {}
    for r, name, count in _plan(config):
        model = _model(name)
        build = _start(model, n, config, files["R18" if name in MODELS else name])
        trainer = _Trainer(out_dir / f"r{r}" / name, data, config, model, r)
        names = [f"m{k}" for k in range(1, count + 1)]
        nets, losses = [], []
        for k, network in enumerate(names, start=1):
            with seeded(config.seed, "member", r, k):
                net = build()
            losses.append(trainer(net, network))
            nets.append(net)
        trained += trainer.trained
        logits[(r, name)] = _stack(trainer.folder, names)
        rows += _rows(trainer.folder, r, name, names)
        if name == "FAML" and r < config.ablation_replicates:
            fga_trainer = _Trainer(out_dir / f"r{r}" / "FAML-FGA", data, config, model, r)
            result = fga(nets, losses, builder=build, train=fga_trainer,
                         generations=config.fga_generations,
                         seed=derive_seed(config.seed, "fga", r))
            trained += fga_trainer.trained
            lineage[r] = _lineage(result.lineage, names)
            last = list(lineage[r].loc[lineage[r]["generation"] == config.fga_generations,
                                       "network"])
            logits[(r, "FAML-FGA")] = _stack(fga_trainer.folder, last)
            rows += _rows(fga_trainer.folder, r, "FAML-FGA", last)
    return StudyResults(pd.DataFrame(rows), logits, data.test.labels, data.classes, lineage,
                        contrast, config, out_dir, data.test.name, trained)


def _lineage(lineage: pd.DataFrame, inputs: Sequence[str]) -> pd.DataFrame:
    """FGA's lineage with each network's name and its parents by name (generation 0: the
    trained FAML networks)."""
    names = {0: list(inputs)}
    rows = []
    for _, row in lineage.iterrows():
        g = int(row["generation"])
        network = names[0][len(rows)] if g == 0 else row["name"]
        if g > 0:
            names.setdefault(g, []).append(network)
        parents = ", ".join(names[g - 1][p] for p in row["parents"]) if g > 0 else ""
        rows.append({"generation": g, "network": network, "kind": row["kind"],
                     "parents": parents or "-", "training loss": row["loss"]})
    return pd.DataFrame(rows)


def _stack(folder: Path, names: Sequence[str]) -> np.ndarray:
    return np.concatenate([np.load(folder / n / "test.npz")["logits"] for n in names], axis=1)


def _rows(folder: Path, replicate: int, model: str, names: Sequence[str]) -> list[dict]:
    return [{"replicate": replicate, "model": model, "network": n,
             **read_json(folder / n / "result.json")} for n in names]


def load_network(results: StudyResults, replicate: int, model: str, network: str
                 ) -> nn.Module:
    """A stored network, rebuilt and loaded (e.g. for Grad-CAM)."""
    kind = _model(model)
    net = _build(kind, len(results.classes), results.config.width)
    path = results.folder / f"r{replicate}" / model / network / "weights.pt"
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net


# ----------------------------------------------------------------------------- reports

def architectures(width: float, n_classes: int = 7, image_size: int = 224) -> pd.DataFrame:
    """Parameters of R18, R18+FA (= R18+FAML's network) and their parts, at the paper's
    width and at ``width``, and the attention blocks' token grids at ``image_size``."""
    rows = []
    for name, fusion, attention in (("R18", False, False), ("R18 + facial-area fusion", True,
                                                            False),
                                    ("R18+FA = R18+FAML's network", True, True)):
        paper = r18_faml(n_classes=n_classes, fusion=fusion, attention=attention)
        narrow = r18_faml(n_classes=n_classes, width=width, fusion=fusion, attention=attention)
        rows.append({"network": name,
                     "parameters (width 1.0)": sum(p.numel() for p in paper.parameters()),
                     f"parameters (width {width:g})": sum(p.numel()
                                                         for p in narrow.parameters())})
    return pd.DataFrame(rows).set_index("network")


def network_summary(results: StudyResults) -> pd.DataFrame:
    """Per model: networks trained, mean test accuracy (%), epochs and training seconds."""
    frame = results.networks.assign(accuracy=lambda d: 100 * d["accuracy"])
    table = frame.groupby("model", sort=False).agg(
        networks=("network", "size"), replicates=("replicate", "nunique"),
        accuracy=("accuracy", "mean"), epochs=("epochs", "mean"),
        seconds=("train_seconds", "sum"))
    return table.rename(columns={"accuracy": "mean test accuracy (%)",
                                 "epochs": "epochs per network",
                                 "seconds": "training seconds (all networks)"})


def baselines(results: StudyResults) -> dict[str, float]:
    """Reference accuracies (%): guessing, always the most frequent test class, the mean
    network of R18 and of R18 from scratch, and the pre-trained R18 on its own test set; the
    spread (standard deviation, points) between networks of one model in one replicate."""
    values = {"chance": 100 / len(results.classes),
              "majority": float(100 * np.bincount(results.labels).max() / len(results.labels))}
    acc = accuracies(results)
    for model in ("R18", "R18 (scratch)"):
        if model in set(acc["model"]):
            values[model] = float(acc.loc[acc["model"] == model, "Origin"].mean())
    if "resnet18" in results.contrast:
        z, y = results.contrast["resnet18"]
        values["pre-trained"] = float(100 * (z[:, 0].argmax(-1) == y).mean())
    spread = results.networks.groupby(["replicate", "model"])["accuracy"].std().dropna()
    values["spread"] = float(100 * spread.mean()) if len(spread) else float("nan")
    return values


def row_means(results: StudyResults, *, alpha: float = 1.9, beta: float = 1.0) -> pd.Series:
    """Mean accuracy (%) of every Table 2 row (and the from-scratch control)."""
    return _means(results, alpha=alpha, beta=beta)


def fga_losses(results: StudyResults) -> dict[str, float]:
    """Mean training loss of FGA's fused and new networks of the last generation."""
    frames = [f[f["generation"] == f["generation"].max()] for f in results.lineage.values()]
    if not frames:
        return {}
    last = pd.concat(frames)
    return {kind: float(v) for kind, v in last.groupby("kind")["training loss"].mean().items()}


def ensemble_gains(results: StudyResults, *, alpha: float = 1.9, beta: float = 1.0
                   ) -> tuple[float, float]:
    """The smallest and largest gain (points) of any rule over its basic network (Table 6)."""
    t6 = table6(results, alpha=alpha, beta=beta)
    gains = t6[["T2V gain", "Bagging gain", "NOI gain"]].to_numpy()
    return float(gains.min()), float(gains.max())


def plot_gains(table: pd.DataFrame) -> Figure:
    """Fig. 7: each rule's gain over the mean single network against that accuracy."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for column, label, marker in (("T2V gain", "T2V", "o"), ("Bagging gain", "bagging (T1V)",
                                                            "s"), ("NOI gain", "NOI", "^")):
        ax.plot(table["Origin"], table[column], marker=marker, ls="none", label=label)
    for name, row in table.iterrows():
        ax.annotate(name, (row["Origin"], row["T2V gain"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    ax.axhline(0, c="gray", lw=0.8)
    ax.set(xlabel="accuracy of the basic network (%)", ylabel="gain of the ensemble (points)")
    ax.legend(fontsize=8)
    return fig


def plot_sweep(table: pd.DataFrame, alpha: float = 1.9, beta: float = 1.0) -> Figure:
    """T2V's accuracy and agreement with T1V and NOI against beta / alpha."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    x = table.index.to_numpy()
    left.plot(x, table["accuracy"], marker="o", label="T2V")
    left.axhline(table["T1V"].iloc[0], ls="--", c="gray", label="T1V")
    left.axhline(table["NOI"].iloc[0], ls=":", c="black", label="NOI")
    left.set(xlabel="beta / alpha", ylabel="test accuracy (%)")
    right.plot(x, table["agree_t1v"], marker="o", label="same decision as T1V")
    right.plot(x, table["agree_noi"], marker="s", label="same decision as NOI")
    right.set(xlabel="beta / alpha", ylabel="share of test images (%)")
    for ax in (left, right):
        ax.axvline(beta / alpha, c="red", lw=0.8)
        ax.legend(fontsize=8)
    return fig


def saliency_grid(test: FaceDataset, images: np.ndarray, maps: Mapping[str, np.ndarray]
                  ) -> Figure:
    """Fig. 8 analogue: the input faces (first row) and each model's map on them."""
    from fernb.explain import overlay
    from fernb.figures import image_grid
    gray = test.images[images]
    tiles = [g for g in gray]
    titles = [test.classes[c] for c in test.labels[images]]
    for row, m in maps.items():
        tiles += [overlay(g, cam) for g, cam in zip(gray, m)]
        titles += [(row if i == 0 else "") + (" (empty)" if cam.max() == 0 else "")
                   for i, cam in enumerate(m)]
    return image_grid(tiles, titles, ncols=len(images))


# ----------------------------------------------------------------------------- Table 3

def table3() -> pd.DataFrame:
    """Zhou Table 3 recomputed: each network's output, its first and second class (eq. 10),
    the class the paper prints, and the T2V row (eq. 12, alpha 1.9, beta 1.0)."""
    z = torch.from_numpy(TABLE3_LOGITS).unsqueeze(0)  # (1, 6, 7)
    order = np.argsort(-TABLE3_LOGITS, axis=1, kind="stable")
    rows = [{"model": f"S_N {i + 1}", "output": ", ".join(f"{v:.3f}" for v in out),
             "first": TABLE3_CLASSES[order[i, 0]], "second": TABLE3_CLASSES[order[i, 1]],
             "class printed": TABLE3_CLASS_COLUMN[i]}
            for i, out in enumerate(TABLE3_LOGITS)]
    scores = TopTwoVote(1.9, 1.0).scores(z)[0].tolist()
    decision = TABLE3_CLASSES[int(TopTwoVote(1.9, 1.0)(z))]
    rows.append({"model": "T2V", "output": ", ".join(f"{v:g}" for v in scores),
                 "first": decision, "second": "-", "class printed": "AN"})
    return pd.DataFrame(rows).set_index("model")


def table3_rules() -> pd.DataFrame:
    """The decision of every rule on Table 3's image (true class AN), with its scores."""
    z = torch.from_numpy(TABLE3_LOGITS).unsqueeze(0)
    rows = []
    for name, rule in ZHOU_RULES.items():
        scores = rule.scores(z)[0].tolist()
        rows.append({"rule": name, "scores": ", ".join(f"{v:.4g}" for v in scores),
                     "decision": TABLE3_CLASSES[int(rule(z))]})
    return pd.DataFrame(rows).set_index("rule")


# ----------------------------------------------------------------------------- reading

def _accuracy(logits: np.ndarray, labels: np.ndarray, rule: str | None) -> float:
    """Accuracy (%) of one decision over (N, M, C) logits; ``None``: the mean over the
    networks (a single model's accuracy)."""
    if rule is None:
        return float(100 * (logits.argmax(-1) == labels[:, None]).mean())
    predicted = ZHOU_RULES[rule](torch.from_numpy(logits)).numpy()
    return float(100 * (predicted == labels).mean())


def rule_for(alpha: float, beta: float) -> dict[str, Any]:
    """Zhou's three rules with this run's T2V weights."""
    return {"T2V": TopTwoVote(alpha, beta), "T1V": ZHOU_RULES["T1V"], "NOI": ZHOU_RULES["NOI"]}


def accuracies(results: StudyResults, *, alpha: float = 1.9, beta: float = 1.0
               ) -> pd.DataFrame:
    """One row per (replicate, model): the mean single-network accuracy ("Origin") and the
    accuracy of T2V, T1V (bagging) and NOI over its networks, in %."""
    rules = rule_for(alpha, beta)
    rows = []
    for (r, model), z in results.logits.items():
        row = {"replicate": r, "model": model, "networks": z.shape[1],
               "Origin": _accuracy(z, results.labels, None)}
        for name, rule in rules.items():
            row[name] = float(100 * (rule(torch.from_numpy(z)).numpy() == results.labels).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def _mean_std(values: pd.Series) -> str:
    if len(values) < 2:
        return f"{values.mean():.1f}"
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"


def _row_values(results: StudyResults, *, alpha: float, beta: float
                ) -> dict[str, pd.Series]:
    """Per Table 2 row (and the from-scratch control), its accuracy (%) in each replicate
    that trained it."""
    acc = accuracies(results, alpha=alpha, beta=beta)
    rows = {"R18 (scratch)": ("R18 (scratch)", None), **ABLATION_ROWS}
    values = {}
    for row, (model, rule) in rows.items():
        picked = acc.loc[acc["model"] == model, rule or "Origin"]
        if len(picked):
            values[row] = picked.reset_index(drop=True)
    return values


def ablation(results: StudyResults, *, alpha: float = 1.9, beta: float = 1.0) -> pd.DataFrame:
    """Table 2: each row's accuracy (%), mean ± std over the replicates that trained it
    (single models: the mean over their networks), with R18 from scratch as a control."""
    rows = []
    for row, values in _row_values(results, alpha=alpha, beta=beta).items():
        model = ABLATION_ROWS.get(row, (row, None))[0]
        rows.append({"model": "R18 from scratch (control)" if row == "R18 (scratch)" else row,
                     "FA": "✓" if "FA" in model else "",
                     "loss": "LSR+CE" if "FAML" in model else "CE",
                     "FGA": "✓" if "FGA" in model else "", "T2V": "✓" if "T2V" in row else "",
                     "networks": int(results.logits[(0, model)].shape[1])
                     if (0, model) in results.logits else "-",
                     "accuracy (%)": _mean_std(values), "replicates": len(values)})
    return pd.DataFrame(rows).set_index("model")


def _means(results: StudyResults, *, alpha: float, beta: float) -> pd.Series:
    return pd.Series({row: float(v.mean()) for row, v in
                      _row_values(results, alpha=alpha, beta=beta).items()})


def by_networks(results: StudyResults, *, alpha: float = 1.9, beta: float = 1.0
                ) -> pd.DataFrame:
    """Table 4: T2V accuracy (%) with k = 2..M networks, the mean over every k-subset of a
    replicate's networks and over replicates, for FAML-FGA (the paper's) and FAML."""
    rule = TopTwoVote(alpha, beta)
    rows = []
    for model in ("FAML-FGA", "FAML"):
        for r in results.replicates(model):
            z = results.logits[(r, model)]
            for k in range(2, z.shape[1] + 1):
                scores = [float(100 * (rule(torch.from_numpy(z[:, list(s)])).numpy()
                                       == results.labels).mean())
                          for s in itertools.combinations(range(z.shape[1]), k)]
                rows.append({"model": f"{model}-T2V", "replicate": r, "networks": k,
                             "accuracy": float(np.mean(scores))})
    table = pd.DataFrame(rows).groupby(["model", "networks"], sort=False)["accuracy"].mean()
    return table.unstack("networks")


def table6(results: StudyResults, *, alpha: float = 1.9, beta: float = 1.0) -> pd.DataFrame:
    """Table 6: per basic network, the mean single-network accuracy (Origin) and that of T2V,
    bagging (T1V) and NOI, mean over replicates (%), with the gains over Origin."""
    acc = accuracies(results, alpha=alpha, beta=beta)
    order = [m for m in (*TABLE6_BACKBONES, "R18", "FAML", "FAML-FGA")
             if m in set(acc["model"])]
    acc = acc[acc["model"].isin(order)]
    table = acc.groupby("model")[["Origin", "T2V", "T1V", "NOI"]].mean().loc[order]
    table.index = [_row_name(m) for m in table.index]
    table.index.name = "basic network"
    for rule in ("T2V", "T1V", "NOI"):
        table[f"{rule} gain"] = table[rule] - table["Origin"]
    table["replicates"] = acc.groupby("model").size().loc[order].to_numpy()
    return table.rename(columns={"T1V": "Bagging (T1V)", "T1V gain": "Bagging gain"})


# Models trained with fa_networks networks in the ablation replicates only: not basic networks
# of Table 6.
CONTROLS = ("R18+FA", "R18 (scratch)")


def _row_name(model: str) -> str:
    return {"FAML": "R18+FAML", "FAML-FGA": "R18+FAML-FGA"}.get(model, model)


def _basic_ensembles(results: StudyResults) -> Iterator[tuple[int, str, np.ndarray]]:
    """(replicate, model, logits) of every basic network's ensemble (the controls left out)."""
    return ((r, model, z) for (r, model), z in results.logits.items() if model not in CONTROLS)


def paired_rules(results: StudyResults, a: str = "T2V", b: str = "NOI", *,
                 alpha: float = 1.9, beta: float = 1.0) -> pd.DataFrame:
    """Rule ``a`` against rule ``b`` on every (basic network, replicate) ensemble: both
    accuracies (%), their difference, and the test images only one of them gets right."""
    rules = rule_for(alpha, beta)
    rows = []
    for r, model, z in _basic_ensembles(results):
        t = torch.from_numpy(z)
        ra, rb = (rules[x](t).numpy() == results.labels for x in (a, b))
        rows.append({"basic network": _row_name(model), "replicate": r,
                     a: 100 * ra.mean(), b: 100 * rb.mean(),
                     f"{a} - {b}": 100 * (ra.mean() - rb.mean()),
                     f"only {a} right": int((ra & ~rb).sum()),
                     f"only {b} right": int((rb & ~ra).sum())})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison of two rules over ensembles: mean difference (points), how many
    ensembles favour each, the paired t-test and the exact McNemar test on pooled images."""

    a: str
    b: str
    units: int
    mean_difference: float
    wins: int
    losses: int
    ties: int
    p_ttest: float | None
    only_a: int
    only_b: int
    p_mcnemar: float

    def row(self) -> dict[str, Any]:
        return {"comparison": f"{self.a} vs {self.b}", "ensembles": self.units,
                "mean difference (points)": round(self.mean_difference, 2),
                "ensembles better / worse / tied": f"{self.wins} / {self.losses} / {self.ties}",
                "paired t-test p": "-" if self.p_ttest is None else round(self.p_ttest, 3),
                "images only the first / only the second gets right":
                    f"{self.only_a} / {self.only_b}",
                "McNemar p": round(self.p_mcnemar, 3)}


def paired_tests(results: StudyResults, *, alpha: float = 1.9, beta: float = 1.0
                 ) -> pd.DataFrame:
    """T2V against NOI and against T1V (:func:`paired_test`), one row each."""
    return pd.DataFrame([paired_test(results, "T2V", other, alpha=alpha, beta=beta).row()
                         for other in ("NOI", "T1V")]).set_index("comparison")


def paired_test(results: StudyResults, a: str = "T2V", b: str = "NOI", *,
                alpha: float = 1.9, beta: float = 1.0) -> PairedTest:
    """Is rule ``a`` better than ``b``? Paired over every (basic network, replicate)
    ensemble: a two-sided paired t-test of the accuracies (none with fewer than 2 ensembles or
    no variation), and an exact McNemar test (binomial on the discordant images, pooled)."""
    table = paired_rules(results, a, b, alpha=alpha, beta=beta)
    diff = table[f"{a} - {b}"].to_numpy()
    p = None
    if len(diff) >= 2 and np.ptp(diff) > 0:
        p = paired_ttest(table[a], table[b]).p
    only_a, only_b = int(table[f"only {a} right"].sum()), int(table[f"only {b} right"].sum())
    p_mc = float(stats.binomtest(only_a, only_a + only_b).pvalue) if only_a + only_b else 1.0
    return PairedTest(a, b, len(diff), float(diff.mean()), int((diff > 0).sum()),
                      int((diff < 0).sum()), int((diff == 0).sum()), p, only_a, only_b, p_mc)


def disagreements(results: StudyResults, *, alpha: float = 1.9, beta: float = 1.0
                  ) -> pd.DataFrame:
    """When do T2V and NOI decide differently, and who is right? Images pooled over every
    ensemble, grouped by how many networks put T2V's class first: T2V can overturn the
    softmax sum only where the networks split their first places."""
    rules = rule_for(alpha, beta)
    rows = []
    for r, model, z in _basic_ensembles(results):
        t = torch.from_numpy(z)
        t2v, noi = rules["T2V"](t).numpy(), rules["NOI"](t).numpy()
        firsts = top_two_counts(t)[:, 0].numpy()  # (N, C)
        n_first = firsts[np.arange(len(t2v)), t2v]
        for i in np.flatnonzero(t2v != noi):
            rows.append({"firsts of T2V's class": f"{n_first[i]} of {z.shape[1]}",
                         "T2V right": t2v[i] == results.labels[i],
                         "NOI right": noi[i] == results.labels[i]})
    if not rows:
        return pd.DataFrame(columns=["images", "T2V right", "NOI right", "neither right"])
    frame = pd.DataFrame(rows)
    grouped = frame.groupby("firsts of T2V's class")
    return pd.DataFrame({"images": grouped.size(),
                         "T2V right": grouped["T2V right"].sum(),
                         "NOI right": grouped["NOI right"].sum(),
                         "neither right": grouped.size() - grouped["T2V right"].sum()
                         - grouped["NOI right"].sum()})


SWEEP_RATIOS = (0.0, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.526, 0.6, 0.75, 0.9, 1.0, 1.5, 3.0)


def sweep(results: StudyResults, model: str = "FAML",
          ratios: Sequence[float] = SWEEP_RATIOS) -> pd.DataFrame:
    """T2V's accuracy and agreement with T1V and NOI as beta / alpha varies
    (:func:`fernb.ensemble.t2v_sweep`), mean over the replicates' ensembles of ``model``."""
    frames = []
    for r in results.replicates(model):
        z = results.logits[(r, model)]
        table = t2v_sweep(z, results.labels, ratios)
        frames.append(table.assign(T1V=table.attrs["T1V"], NOI=table.attrs["NOI"]))
    frame = pd.concat(frames)
    numeric = ["accuracy", "agree_t1v", "agree_noi", "T1V", "NOI"]
    table = frame.groupby("beta_over_alpha", sort=True)[numeric].mean() * 100
    table["regime"] = frame.groupby("beta_over_alpha", sort=True)["regime"].first()
    return table


def rank_distribution(results: StudyResults) -> pd.DataFrame:
    """Table 1 analogue: where each model's networks rank the labelled class (% of test
    images, mean over the networks of every replicate), the top-two share and the share of
    the errors whose label is ranked second; the pre-trained networks on the synth-lab test
    set as the contrast."""
    rows = {}
    for model in ("R18", "FAML", *results.config.backbones):
        frames = [label_rank_distribution(results.logits[(r, model)], results.labels)
                  for r in results.replicates(model)]
        if frames:
            rows[f"{_row_name(model)} ({results.dataset})"] = pd.concat(frames).mean()
    for arch, (z, y) in results.contrast.items():
        name = "R18" if arch == "resnet18" else next(
            b for b, a in TABLE6_BACKBONES.items() if a == arch)
        rows[f"{name} pre-trained ({PRETRAIN_DATASET})"] = \
            label_rank_distribution(z, y).iloc[0]
    table = pd.DataFrame(rows).T * 100
    table.columns = [f"rank {c}" for c in table.columns]
    table["top two"] = table["rank 1"] + table["rank 2"]
    table["errors ranked 2nd"] = 100 * table["rank 2"] / (100 - table["rank 1"])
    return table


def confusion(results: StudyResults, model: str, rule: str | None = None, *,
              alpha: float = 1.9, beta: float = 1.0) -> pd.DataFrame:
    """Row-normalised confusion matrix pooled over replicates: of every network (``rule``
    None, a single model) or of the ensemble under ``rule``."""
    preds, labels = [], []
    for r in results.replicates(model):
        z = results.logits[(r, model)]
        if rule is None:
            preds.append(z.argmax(-1).T.reshape(-1))
            labels.append(np.tile(results.labels, z.shape[1]))
        else:
            preds.append(rule_for(alpha, beta)[rule](torch.from_numpy(z)).numpy())
            labels.append(results.labels)
    return normalized_confusion(np.concatenate(preds), np.concatenate(labels), results.classes)


def hardest_classes(results: StudyResults, model: str = "R18", k: int = 2) -> list[str]:
    """The ``k`` classes with the lowest recall of ``model``'s networks (pooled)."""
    cm = confusion(results, model)
    recall = pd.Series(np.diag(cm.to_numpy()), index=cm.index)
    return list(recall.sort_values(kind="stable").index[:k])


# ----------------------------------------------------------------------------- Fig. 8

FIG8_ROWS = ("R18", "R18+FA", "FAML", "FAML-FGA", "FAML-FGA-T2V")


def example_images(test: FaceDataset) -> np.ndarray:
    """Indices of one test image per class (the first of each), Fig. 8's columns."""
    return np.array([np.flatnonzero(test.labels == c)[0] for c in range(test.n_classes)
                     if np.any(test.labels == c)])


def saliency(results: StudyResults, test: FaceDataset, images: np.ndarray, *,
             replicate: int = 0, alpha: float = 1.9, beta: float = 1.0
             ) -> dict[str, np.ndarray]:
    """Grad-CAM maps (B, H, W) of the true class for each Fig. 8 row: the first network of
    R18, R18+FA, FAML and FAML-FGA, and FAML-FGA-T2V as the paper draws it, the maps of its
    networks summed with their T2V votes for the class (eq. 10-12), renormalised to [0, 1]."""
    x, y = test.tensors(images)
    targets = y.tolist()
    maps = {}
    for row in FIG8_ROWS:
        model = row.removesuffix("-T2V")
        if replicate not in results.replicates(model):
            continue
        count = results.logits[(replicate, model)].shape[1]
        names = _network_names(results, replicate, model)
        members = names if row.endswith("T2V") else names[:1]
        per_net = []
        for name in members:
            net = load_network(results, replicate, model, name)
            per_net.append(gradcam(net, x, member=0, targets=targets))
        if not row.endswith("T2V"):
            maps[row] = per_net[0]
            continue
        z = results.logits[(replicate, model)][images]  # (B, M, C)
        votes = t2v_votes(z, alpha, beta).numpy()[np.arange(len(images)), :, y.numpy()]
        summed = np.einsum("bm,mbhw->bhw", votes[:, :count], np.stack(per_net))
        peak = summed.max(axis=(1, 2), keepdims=True)
        maps[row] = np.where(peak > 0, summed / np.where(peak > 0, peak, 1), 0).astype(
            np.float32)
    return maps


def _network_names(results: StudyResults, replicate: int, model: str) -> list[str]:
    rows = results.networks
    return list(rows.loc[(rows["replicate"] == replicate) & (rows["model"] == model),
                         "network"])


def evidence_table(maps: Mapping[str, np.ndarray], masks: np.ndarray) -> pd.DataFrame:
    """Share of each row's map mass inside the images' evidence regions (mean over the images
    with a non-empty map), next to chance (a uniform map's score)."""
    rows = []
    for row, m in maps.items():
        scores = np.asarray(evidence_score(m, masks), dtype=float)
        scores = scores[np.isfinite(scores)]
        rows.append({"model": row, "evidence score": float(scores.mean()) if len(scores)
                     else np.nan, "maps": len(scores)})
    table = pd.DataFrame(rows).set_index("model")
    table["chance"] = float(np.mean(chance_level(masks)))
    return table


# ----------------------------------------------------------------------------- paper vs book

_T6_KEYS = {"RI18": "ri18", "ResNet34": "resnet34", "VGG16": "vgg16",
            "DenseNet121": "densenet121", "R18": "r18", "R18+FAML": "faml",
            "R18+FAML-FGA": "faml_fga"}


def _spearman(rows: pd.DataFrame) -> float | None:
    if len(rows) < 3 or rows["Origin"].nunique() < 2 or rows["T2V gain"].nunique() < 2:
        return None
    return float(stats.spearmanr(rows["Origin"], rows["T2V gain"]).statistic)


def measured(results: StudyResults, *, alpha: float = 1.9, beta: float = 1.0
             ) -> dict[str, Any]:
    """This run's values for :func:`fernb.report.paper_vs_book` ("faml_t2v")."""
    values: dict[str, Any] = {}
    t3 = table3()
    values["table3_t2v_output"] = [float(v) for v in t3.loc["T2V", "output"].split(", ")]
    values["table3_class"] = t3.loc["T2V", "first"]
    ranks = rank_distribution(results)
    for key, row in (("ri18", "RI18"), ("r18", "R18"), ("faml", "R18+FAML")):
        name = f"{row} ({results.dataset})"
        if name in ranks.index:
            values[f"rank_of_label_{key}"] = [round(float(ranks.loc[name, f"rank {k}"]), 2)
                                              for k in (1, 2)]
    faml_row = f"R18+FAML ({results.dataset})"
    values["faml_top2"] = round(float(ranks.loc[faml_row, "top two"]), 2)
    values["faml_errors_rank2"] = round(float(ranks.loc[faml_row, "errors ranked 2nd"]), 1)
    table2 = _means(results, alpha=alpha, beta=beta)
    names = {"R18": "r18_accuracy", "R18+FA": "r18_fa_accuracy", "FAML": "faml_accuracy",
             "FAML-FGA": "faml_fga_accuracy", "FAML-T2V": "faml_t2v_accuracy",
             "FAML-FGA-T2V": "faml_fga_t2v_accuracy"}
    values |= {key: round(float(table2[row]), 2) for row, key in names.items()
               if row in table2.index}
    gains = {"fa_gain": ("R18+FA", "R18"), "ml_gain": ("FAML", "R18+FA"),
             "fga_gain": ("FAML-FGA", "FAML"), "t2v_gain": ("FAML-T2V", "FAML"),
             "fga_t2v_gain": ("FAML-FGA-T2V", "FAML-FGA")}
    values |= {key: round(float(table2[a] - table2[b]), 2) for key, (a, b) in gains.items()
               if a in table2.index and b in table2.index}
    nets = by_networks(results, alpha=alpha, beta=beta)
    if "FAML-FGA-T2V" in nets.index:
        curve = nets.loc["FAML-FGA-T2V"].dropna()
        values |= {f"networks_{k}": round(float(v), 2) for k, v in curve.items() if k <= 6}
        if len(curve) > 1:
            values["networks_gain"] = round(float(curve.iloc[-1] - curve.iloc[0]), 2)
    t6 = table6(results, alpha=alpha, beta=beta)
    for row, key in _T6_KEYS.items():
        if row in t6.index:
            values[f"rules_{key}"] = [round(float(t6.loc[row, c]), 2) for c in
                                      ("Origin", "T2V", "Bagging (T1V)", "NOI")]
            values[f"{key}_t2v_minus_noi"] = round(float(t6.loc[row, "T2V"] - t6.loc[row, "NOI"]),
                                                   2)
    rho = _spearman(t6)
    if rho is not None:
        values["gain_accuracy_correlation"] = round(rho, 2)
    test = paired_test(results, alpha=alpha, beta=beta)
    if test.p_ttest is not None:
        values["t2v_noi_p"] = round(test.p_ttest, 4)
    return values


def claims(results: StudyResults, evidence: pd.DataFrame | None = None, *,
           alpha: float = 1.9, beta: float = 1.0) -> list[Claim]:
    """The paper's claims, each checked on this run."""
    ranks = rank_distribution(results)
    faml_row = f"R18+FAML ({results.dataset})"
    share = float(ranks.loc[faml_row, "errors ranked 2nd"])
    uniform = 100 / (len(results.classes) - 1)
    t2 = _means(results, alpha=alpha, beta=beta)
    t6 = table6(results, alpha=alpha, beta=beta)
    nets = by_networks(results, alpha=alpha, beta=beta)
    test = paired_test(results, alpha=alpha, beta=beta)
    rho = _spearman(t6)
    t3 = table3()

    def better(a: str, b: str, source: str, text: str) -> Claim:
        if a not in t2.index or b not in t2.index:
            return Claim(text, source, None, "not trained in this run")
        return Claim(text, source, bool(t2[a] > t2[b]), f"{a} {t2[a]:.1f} vs {b} {t2[b]:.1f}")

    def every(rule: str, text: str) -> Claim:
        diff = t6["T2V"] - t6[rule]
        return Claim(text, "Table 6", bool((diff > 0).all()),
                     ", ".join(f"{i} {d:+.2f}" for i, d in diff.items()))

    hard = hardest_classes(results)
    curve = nets.loc["FAML-FGA-T2V"].dropna() if "FAML-FGA-T2V" in nets.index else None
    found = [
        Claim("a network's wrong answers often have the true class second", "Table 1",
              share > uniform, f"R18+FAML: {share:.1f} % of errors rank the label 2nd "
                               f"(uniform: {uniform:.1f} %)"),
        better("R18+FA", "R18", "Table 2", "attention blocks with facial-area fusion (FA) "
                                           "improve R18"),
        better("FAML", "R18+FA", "Table 2", "the multiple losses (ML) improve R18+FA"),
        better("FAML-FGA", "FAML", "Table 2", "FGA improves the single FAML network"),
        better("FAML-T2V", "FAML", "Table 2", "T2V improves on the single FAML network"),
        better("FAML-FGA-T2V", "FAML-T2V", "Table 2", "FAML-FGA-T2V is the best model"),
        Claim("accuracy rises with the number of networks", "Table 4",
              None if curve is None or len(curve) < 2 else bool(curve.iloc[-1] > curve.iloc[0]),
              "" if curve is None else ", ".join(f"{k}: {v:.1f}" for k, v in curve.items())),
        Claim("Table 3's image: T2V decides Anger", "Table 3", t3.loc["T2V", "first"] == "AN",
              f"T2V scores {t3.loc['T2V', 'output']}"),
        every("Bagging (T1V)", "T2V beats bagging (T1V) on every basic network"),
        every("NOI", "T2V beats NOI on every basic network"),
        Claim("T2V's advantage over NOI is systematic (paired t-test, p < 0.05)",
              "Table 6", None if test.p_ttest is None else bool(
                  test.p_ttest < 0.05 and test.mean_difference > 0),
              f"mean {test.mean_difference:+.2f} points over {test.units} ensembles" +
              ("" if test.p_ttest is None else f", p = {test.p_ttest:.3f}")),
        Claim("T2V gains less on more accurate basic networks", "Fig. 7",
              None if rho is None else rho < 0,
              "fewer than 3 basic networks" if rho is None else f"Spearman rho = {rho:.2f}"),
        Claim("disgust and fear are R18's hardest classes", "Fig. 5 (text)",
              set(hard) == {"disgust", "fear"} if {"disgust", "fear"} <= set(results.classes)
              else None, f"lowest recall: {', '.join(hard)}"),
    ]
    if evidence is not None and {"R18", "FAML"} <= set(evidence.index):
        r18, faml = (float(evidence.loc[m, "evidence score"]) for m in ("R18", "FAML"))
        ok = math.isfinite(r18) and math.isfinite(faml)
        found.append(Claim("FAML's maps lie more on expression regions than R18's", "Fig. 8",
                           bool(faml > r18) if ok else None,
                           f"evidence score FAML {faml:.2f} vs R18 {r18:.2f}" if ok else
                           "empty maps"))
    return found
