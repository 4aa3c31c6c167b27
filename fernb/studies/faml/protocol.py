"""The chapter's plan: every network it trains as a stored job (:mod:`fernb.store`), the
functions that train them, and the results read back from the store.

Every network of the *default* regime is fine-tuned from one *shared start*, as in the paper,
where all networks are the same pre-trained ResNet-18 and differ by "random loss, initial
weights of FC, data-flipping" (Sec. 3.3): a pre-trained R18 (the paper's MS-Celeb-1M file when
``weights`` names one; otherwise a narrow R18 pre-trained here on ``synth-lab``), to which
R18+FA and FAML add their facial-area convolutions (copies of the first convolution) and one
common draw of the attention blocks (the same for R18+FA and FAML, so that they differ by the
loss only). Eq. (9) needs this start: averaging the kernels of networks from independent
random starts mixes unrelated channels. Each network's classifier, batch order, flips and
loss draws come from its own seed, derived from the run's seed, the regime, the model's name,
the replicate and the network's index, so no two networks of the chapter share one.

Models of the default regime, ``n_networks`` networks each in every replicate: R18
(cross-entropy), R18+FA (the FA network, cross-entropy), FAML (the FA network, the multiple
losses), each extra Table 6 backbone (its own pre-trained start, cross-entropy), FAML-FGA
(Algorithm 1: ``n_networks`` fused children per generation, drawn from the FAML networks by
their training losses) and its control, *FAML trained on*: for each fused child, its main
parent trained again with the child's schedule and seed, without fusion. A child and its
control differ only by the kernel averaging.

The *mechanism* regime trains two ensembles of ``mechanism_networks`` plain R18 members from
the same start, member k of both on the same random half of the training subjects with the
same seed: *CE* members with plain cross-entropy and *LSR* members with label smoothing, so
the two ensembles differ by the members' confidence only.

Choices beyond the paper, each a parameter: the book's stand-in for the MS-Celeb-1M
pre-training is supervised training on ``synth-lab`` (SGD, lr ``pretrain_lr``, momentum 0.9,
weight decay 5e-4, cosine annealing, horizontal flips), the only face data a CPU run has.
Nothing is selected on validation data (the paper trains until the training loss is stable),
so the validation subjects of the split train too.
"""
from __future__ import annotations

import copy
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from fernb.data.datasets import DataSpec, FaceDataset
from fernb.data.splits import standard_split
from fernb.data.transforms import BatchAugmentation
from fernb.evaluate import predict
from fernb.fga import TwoPhase, draw_parents, fuse_kernels, shared_start, train_two_phase
from fernb.losses import MultiLoss, balanced_class_weights
from fernb.models.backbones import build_backbone
from fernb.models.faml import FAML, r18_faml
from fernb.seeding import derive_seed, seeded
from fernb.store import Entry, Job, Store
from fernb.studies.faml.settings import PRETRAIN_DATASET, TABLE6_BACKBONES, Settings
from fernb.train import FitConfig, Schedule, adam, fit, sgd

DEFAULT, MECHANISM = "default", "mechanism"
FGA, CONTROL = "FAML-FGA", "FAML trained on"
# Models of the default regime whose networks are fine-tuned from the R18 start.
R18_MODELS = ("R18", "R18+FA", "FAML")
CE, LSR = "CE", "LSR"
VERSION = 1


# ----------------------------------------------------------------------------- faces

@dataclass(frozen=True)
class Faces:
    """Which faces a network trains and is tested on.

    ``split="holdout"``: :func:`fernb.data.splits.standard_split` (a real dataset's own
    partition), its training and validation parts training. ``split="subjects"``: the
    subjects in an order drawn by ``seed``, the first ``test_subjects`` testing (one face per
    sequence where the faces come in sequences: each sequence's last frame and a subject's
    first, neutral frame), the others training; ``half`` (a seed) keeps a random half of
    those training subjects, a member's own half.
    """

    data: DataSpec
    split: str = "holdout"
    seed: int = 0
    test_subjects: int = 0
    half: int | None = None

    def load(self) -> tuple[FaceDataset, FaceDataset]:
        """(training faces, test faces)."""
        return _faces(self)


@functools.lru_cache(maxsize=32)
def _faces(spec: Faces) -> tuple[FaceDataset, FaceDataset]:
    data = spec.data.load()
    if spec.split == "holdout":
        split = standard_split(data.labels, data.subjects, data.split, seed=spec.seed)
        return (data.subset(np.sort(np.concatenate([split.train, split.val]))),
                data.subset(split.test))
    if spec.split != "subjects":
        raise ValueError(f"split must be 'holdout' or 'subjects', got {spec.split!r}")
    order = np.random.default_rng(derive_seed(spec.seed, "subjects")).permutation(
        np.unique(data.subjects))
    if not 0 < spec.test_subjects < len(order) - 1:
        raise ValueError(f"{spec.test_subjects} test subjects leave too few of the "
                         f"{len(order)} subjects to train on")
    tested, trained = order[:spec.test_subjects], order[spec.test_subjects:]
    if spec.half is not None:
        trained = np.random.default_rng(spec.half).permutation(trained)[:len(trained) // 2]
    test = np.isin(data.subjects, tested) & one_face_per_sequence(data)
    return data.subset(np.flatnonzero(np.isin(data.subjects, trained))), \
        data.subset(np.flatnonzero(test))


def one_face_per_sequence(data: FaceDataset) -> np.ndarray:
    """(N,) mask keeping one face of every sequence: its last (peak) frame, and the first
    (neutral) frame of each subject's first sequence; every face where there are no
    sequences (synth-wild's faces are independent draws). The frames of one sequence are
    nearly the same face, so a test on images needs one of them."""
    if "sequence" not in data.meta:
        return np.ones(len(data), bool)
    frame, last = data.meta["frame"], data.meta["n_frames"] - 1
    sequence = data.meta["sequence"]
    first = np.zeros(len(data), bool)
    for subject in np.unique(data.subjects):
        rows = np.flatnonzero(data.subjects == subject)
        opening = rows[sequence[rows] == sequence[rows].min()]
        first[opening[frame[opening] == 0]] = True
    return (frame == last) | first


# ----------------------------------------------------------------------------- networks

@dataclass(frozen=True)
class Net:
    """A network of the chapter: ``arch`` a torchvision builder; for ResNet-18, ``fusion``
    and ``attention`` make R18+FA's and R18+FAML's network (:func:`fernb.models.faml.r18_faml`)."""

    arch: str = "resnet18"
    fusion: bool = False
    attention: bool = False
    width: float = 0.125
    n_classes: int = 7

    def build(self, weights: str | None = None) -> nn.Module:
        if self.arch == "resnet18":
            return r18_faml(n_classes=self.n_classes, width=self.width, fusion=self.fusion,
                            attention=self.attention, weights=weights)
        return build_backbone(self.arch, n_classes=self.n_classes, width=self.width,
                              weights=weights)

    def head_keys(self, net: nn.Module) -> tuple[str, ...]:
        if isinstance(net, FAML):
            return ("net.fc.weight", "net.fc.bias")
        return tuple(f"net.{k}" for k in net.head_keys)


@dataclass(frozen=True)
class Loss:
    """The multiple losses (p_lsr > 0), plain cross-entropy (p_lsr = 0) or plain label
    smoothing (p_lsr = 1); see :class:`fernb.losses.MultiLoss`."""

    p_lsr: float = 0.0
    epsilon: float = 0.1
    class_weighted: bool = False

    def build(self, labels: np.ndarray, n_classes: int) -> MultiLoss:
        weights = balanced_class_weights(labels, n_classes) if self.class_weighted else None
        return MultiLoss(p_lsr=self.p_lsr, epsilon=self.epsilon, class_weights=weights)


@dataclass(frozen=True)
class Recipe:
    """How a network trains: Adam through the paper's two phases (``phases``), or at ``lr``
    with cosine annealing for ``epochs`` (``phases`` None)."""

    lr: float
    epochs: int = 1
    phases: TwoPhase | None = None
    batch_size: int = 64
    augment: str = "flip"
    precision: str = "auto"
    device: str = "auto"


def _start_weights(start: str, store: Store, needs: Sequence[Job]) -> str | None:
    """The weights file a network starts from: a pre-trained entry's, a file, or none."""
    if start == "pretrained":
        return str(store.get(needs[0]).file("start.pt"))
    return None if start == "scratch" else start


def build_network(spec: Mapping[str, Any], store: Store, needs: Sequence[Job]) -> nn.Module:
    """A network of ``spec`` before training: the shared start (its weights and one common
    draw, seeded by ``start_seed``, of every part they lack) with the classifier of its own
    seed; without a start, every part of its own seed."""
    net: Net = spec["net"]
    weights = _start_weights(spec["start"], store, needs)
    if weights is None:
        with seeded(spec["seed"], "init"):
            return net.build()
    with seeded(spec["start_seed"]):
        start = net.build(weights)
    build = shared_start(net.build, start.state_dict(), own=net.head_keys(start))
    with seeded(spec["seed"], "init"):
        return build()


def _train(net: nn.Module, spec: Mapping[str, Any], entry: Entry) -> dict[str, Any]:
    """Train ``net`` by ``spec``'s recipe, store its weights, test logits and history, and
    return the summary the store keeps (training loss, phases, test accuracy)."""
    train, test = spec["faces"].load()
    recipe: Recipe = spec["recipe"]
    augment = None if recipe.augment == "none" else BatchAugmentation(recipe.augment,
                                                                      train.image_size[0])
    config = FitConfig(epochs=recipe.epochs, optimizer=adam(recipe.lr),
                       loss=spec["loss"].build(train.labels, train.n_classes),
                       batch_size=recipe.batch_size, augment=augment, device=recipe.device,
                       precision=recipe.precision, seed=spec["seed"])
    if recipe.phases is not None:
        run = train_two_phase(net, train, None, config, phases=recipe.phases,
                              checkpoint=entry.checkpoint)
        frame, loss = run.to_frame(), run.training_loss
        phases = {"stable": run.stable, "switch_epoch": run.switch_epoch}
    else:
        history = fit(net, train, None, config.replace(
            schedule=Schedule("CosineAnnealingLR", T_max=recipe.epochs)),
            checkpoint=entry.checkpoint)
        frame = history.to_frame()
        loss = float(frame["train_loss"].iloc[-3:].mean())
        phases = {}
    logits = predict(net, test, device=recipe.device, precision=recipe.precision).numpy()
    entry.save_state("weights", net.state_dict())
    entry.save_arrays("test", logits=logits, labels=test.labels)
    entry.save_frame("history", frame.reset_index())
    return {"training_loss": loss, **phases, "epochs": len(frame),
            "accuracy": float((logits[:, 0].argmax(-1) == test.labels).mean()),
            "train_seconds": float(frame["seconds"].sum())}


def train_network(job: Job, entry: Entry, store: Store) -> dict[str, Any]:
    """A stored job: one network from its start."""
    return _train(build_network(job.spec, store, job.needs), job.spec, entry)


def load_network(job: Job, store: Store) -> nn.Module:
    """A stored network of the chapter, rebuilt and loaded (e.g. for Grad-CAM)."""
    net = job.spec["net"].build()
    net.load_state_dict(store.get(job).state("weights"))
    return net.eval()


def train_child(job: Job, entry: Entry, store: Store) -> dict[str, Any]:
    """A stored job: FGA's fused child i (Algorithm 1, lines 3-7 and 9) or its control.

    The parents' training losses give the draw of :func:`fernb.fga.draw_parents`; the fused
    child averages its parents' convolution kernels (eq. 9) into the main parent (the one of
    lowest loss), the control is the main parent as it is. Both then train with the child's
    recipe and seed."""
    spec = job.spec
    parents = [store.get(need) for need in job.needs]
    losses = [p.record["summary"]["training_loss"] for p in parents]
    draw = draw_parents(losses, spec["n_children"], seed=spec["draw_seed"])[spec["child"]]
    nets = []
    for j in draw.parents:
        net = spec["net"].build()
        net.load_state_dict(parents[j].state("weights"))
        nets.append(net)
    child = copy.deepcopy(nets[draw.main])
    if spec["fused"]:
        child.load_state_dict(fuse_kernels(nets, main=draw.main))
    summary = _train(child, spec, entry)
    return {**summary, "parents": list(draw.parents), "main_parent": draw.main_parent}


def pretrain(job: Job, entry: Entry, store: Store) -> dict[str, Any]:
    """A stored job: the shared start, an architecture pre-trained on synth-lab."""
    spec = job.spec
    train, test = spec["faces"].load()
    net: Net = spec["net"]
    with seeded(spec["seed"], "init"):
        model = net.build()
    augment = None if spec["augment"] == "none" else BatchAugmentation(spec["augment"],
                                                                       train.image_size[0])
    history = fit(model, train, None, FitConfig(
        epochs=spec["epochs"], optimizer=sgd(spec["lr"], weight_decay=5e-4),
        batch_size=spec["batch_size"],
        schedule=Schedule("CosineAnnealingLR", T_max=spec["epochs"]), augment=augment,
        device=spec["device"], precision=spec["precision"], seed=spec["seed"]),
        checkpoint=entry.checkpoint)
    logits = predict(model, test, device=spec["device"], precision=spec["precision"]).numpy()
    torch_net = model.net  # the torchvision network: its state dict is a weights file
    entry.save_state("start", torch_net.state_dict())
    entry.save_arrays("test", logits=logits, labels=test.labels)
    entry.save_frame("history", history.to_frame().reset_index())
    return {"accuracy": float((logits[:, 0].argmax(-1) == test.labels).mean()),
            "epochs": len(history)}


# ----------------------------------------------------------------------------- the plan

def data_spec(s: Settings) -> DataSpec:
    """The default regime's faces (3 channels, as the ResNets take them)."""
    if s.dataset in ("synth-wild", "synth-lab"):
        return DataSpec.of(s.dataset, size=s.image_size, n_subjects=s.n_subjects, seed=s.seed,
                           channels=3)
    return DataSpec.of(s.dataset, s.data_root, size=s.image_size, seed=s.seed, channels=3)


def mechanism_spec(s: Settings) -> DataSpec:
    """The mechanism regime's faces: structured blends, weaker intensities, no label noise."""
    return DataSpec.of(s.mechanism_preset, size=s.image_size,
                       n_subjects=s.mechanism_subjects + s.mechanism_test_subjects,
                       seed=derive_seed(s.seed, MECHANISM) % 2**31, channels=3,
                       blend_pairs="facs", blend_prob=s.mechanism_blend,
                       intensity=tuple(s.mechanism_intensity), label_noise=0.0)


def n_classes(spec: DataSpec) -> int:
    return spec.load().n_classes


def phases(s: Settings) -> TwoPhase:
    return TwoPhase(lr1=s.lr1, lr2=s.lr2, max_epochs1=s.max_epochs1, epochs2=s.epochs2,
                    step_size=s.step_size, window=s.stable_window, loss_tol=s.stable_loss,
                    acc_tol=s.stable_accuracy)


@dataclass
class Plan:
    """Every job of a run: the pre-trainings by architecture, and the networks of each
    regime by (model, replicate), in their order."""

    settings: Settings
    pretrain: dict[str, Job] = field(default_factory=dict)
    networks: dict[tuple[str, str, int], list[Job]] = field(default_factory=dict)

    def jobs(self) -> list[Job]:
        return [*self.pretrain.values(), *(j for jobs in self.networks.values() for j in jobs)]

    def models(self, regime: str) -> list[str]:
        return list(dict.fromkeys(m for g, m, _ in self.networks if g == regime))


def _pretrain_job(arch: str, s: Settings) -> Job:
    faces = Faces(DataSpec.of(PRETRAIN_DATASET, size=s.image_size,
                              n_subjects=s.pretrain_subjects, seed=s.seed, channels=3),
                  seed=s.seed)
    spec = {"faces": faces, "net": Net(arch, width=s.width, n_classes=n_classes(faces.data)),
            "epochs": s.pretrain_epochs, "lr": s.pretrain_lr, "batch_size": s.batch_size,
            "augment": s.augment, "precision": s.precision, "device": s.device,
            "seed": derive_seed(s.seed, "pretrain", arch)}
    return Job("faml.pretrain", spec, pretrain, label=f"{arch} pre-trained on synth-lab",
               version=VERSION)


def plan(s: Settings) -> Plan:
    """The run's jobs (nothing is trained here)."""
    out = Plan(s)
    archs = {"R18": "resnet18", **{b: TABLE6_BACKBONES[b] for b in s.backbones}}
    files = {"R18": s.weights, **{b: s.backbone_weights.get(b, "") for b in s.backbones}}
    for name, arch in archs.items():
        if not files[name] and arch not in out.pretrain:
            out.pretrain[arch] = _pretrain_job(arch, s)

    def start(model: str) -> tuple[str, tuple[Job, ...]]:
        key = "R18" if model in R18_MODELS else model
        if files[key]:
            return files[key], ()
        return "pretrained", (out.pretrain[archs[key]],)

    faces = Faces(data_spec(s), seed=s.seed)
    classes = n_classes(faces.data)
    recipe = Recipe(lr=s.lr1, phases=phases(s), batch_size=s.batch_size, augment=s.augment,
                    precision=s.precision, device=s.device)
    nets = {"R18": Net(width=s.width, n_classes=classes),
            "R18+FA": Net(fusion=True, attention=True, width=s.width, n_classes=classes),
            "FAML": Net(fusion=True, attention=True, width=s.width, n_classes=classes),
            **{b: Net(TABLE6_BACKBONES[b], width=s.width, n_classes=classes)
               for b in s.backbones}}
    losses = {m: Loss(0.0, s.epsilon, s.class_weighted) for m in nets}
    losses["FAML"] = Loss(s.p_lsr, s.epsilon, s.class_weighted)
    for r in range(s.replicates):
        for model, net in nets.items():
            where, needs = start(model)
            variant = "FA" if net.fusion else model  # R18+FA and FAML share their start
            jobs = []
            for k in range(1, s.n_networks + 1):
                spec = {"faces": faces, "net": net, "loss": losses[model], "recipe": recipe,
                        "start": where, "start_seed": derive_seed(s.seed, "start", variant),
                        "seed": derive_seed(s.seed, DEFAULT, model, r, k)}
                jobs.append(Job("faml.network", spec, train_network, needs,
                                label=f"{model} network {k} (replicate {r + 1})",
                                version=VERSION))
            out.networks[(DEFAULT, model, r)] = jobs
        population = out.networks[(DEFAULT, "FAML", r)]
        for g in range(1, s.fga_generations + 1):
            children: dict[str, list[Job]] = {FGA: [], CONTROL: []}
            for i in range(s.n_networks):
                for name, fused in ((FGA, True), (CONTROL, False)):
                    spec = {"faces": faces, "net": nets["FAML"], "loss": losses["FAML"],
                            "recipe": recipe, "n_children": s.n_networks, "child": i,
                            "fused": fused, "generation": g,
                            "draw_seed": derive_seed(s.seed, "fga", r, g),
                            "seed": derive_seed(s.seed, "fga", r, g, i)}
                    children[name].append(Job(
                        "faml.fga", spec, train_child, tuple(population),
                        label=f"{name} network {i + 1} (generation {g}, replicate {r + 1})",
                        version=VERSION))
            population = children[FGA]
        out.networks[(DEFAULT, FGA, r)] = children[FGA]
        out.networks[(DEFAULT, CONTROL, r)] = children[CONTROL]
    _mechanism(out, s, files["R18"] or "pretrained",
               () if s.weights else (out.pretrain["resnet18"],))
    return out


def _mechanism(out: Plan, s: Settings, where: str, needs: tuple[Job, ...]) -> None:
    data = mechanism_spec(s)
    net = Net(width=s.width, n_classes=n_classes(data))
    recipe = Recipe(lr=s.lr1, epochs=s.mechanism_epochs, batch_size=s.batch_size,
                    augment=s.augment, precision=s.precision, device=s.device)
    for name, loss in ((CE, Loss(0.0)), (LSR, Loss(1.0, s.mechanism_epsilon))):
        jobs = []
        for k in range(1, s.mechanism_networks + 1):
            faces = Faces(data, "subjects", seed=s.seed, test_subjects=s.mechanism_test_subjects,
                          half=derive_seed(s.seed, MECHANISM, "half", k))
            spec = {"faces": faces, "net": net, "loss": loss, "recipe": recipe, "start": where,
                    "start_seed": derive_seed(s.seed, "start", "R18"),
                    "seed": derive_seed(s.seed, MECHANISM, k)}  # the same for CE and LSR
            jobs.append(Job("faml.network", spec, train_network, needs,
                            label=f"{name} member {k}", version=VERSION))
        out.networks[(MECHANISM, name, 0)] = jobs


# ----------------------------------------------------------------------------- results

@dataclass
class Regime:
    """One regime's trained networks read back from the store.

    Attributes:
        logits: (model, replicate) -> (N, M, C) test logits of its networks.
        labels: (N,) test labels; test: the test faces.
        histories: (model, replicate) -> each network's per-epoch training history.
        networks: one row per network: model, replicate, network (1-based), the summary the
            store keeps (training loss, phases, accuracy, seconds...) and its job.
    """

    name: str
    classes: tuple[str, ...]
    labels: np.ndarray
    logits: dict[tuple[str, int], np.ndarray]
    histories: dict[tuple[str, int], list[pd.DataFrame]]
    networks: pd.DataFrame
    test: FaceDataset
    train_counts: np.ndarray  # (C,) training faces per class (the first network's)

    def models(self) -> list[str]:
        return list(dict.fromkeys(m for m, _ in self.logits))

    def replicates(self, model: str) -> list[int]:
        return sorted(r for m, r in self.logits if m == model)

    def pooled(self, model: str) -> np.ndarray:
        """(N, R x M, C): every network of ``model``, replicate after replicate."""
        return np.concatenate([self.logits[(model, r)] for r in self.replicates(model)], 1)

    @property
    def majority(self) -> float:
        """The share of the most frequent test class."""
        return float(np.bincount(self.labels, minlength=len(self.classes)).max()
                     / len(self.labels))


@dataclass
class Results:
    """Both regimes, the pre-trained starts on their own test faces (arch -> (logits,
    labels)) and the plan whose jobs made them."""

    default: Regime
    mechanism: Regime
    pretrained: dict[str, tuple[np.ndarray, np.ndarray]]
    plan: Plan
    store: Store

    @property
    def settings(self) -> Settings:
        return self.plan.settings

    def network(self, model: str, replicate: int, k: int) -> nn.Module:
        """Network ``k`` (0-based) of ``model`` in ``replicate`` of the default regime."""
        return load_network(self.plan.networks[(DEFAULT, model, replicate)][k], self.store)

    def seconds(self) -> float:
        """Training seconds of every stored job of the run (as it was trained, whenever)."""
        return float(sum(self.store.get(j).record["seconds"] for j in self.plan.jobs()))


def _regime(plan: Plan, store: Store, regime: str) -> Regime:
    logits, histories, rows, labels, test, counts = {}, {}, [], None, None, None
    for (g, model, r), jobs in plan.networks.items():
        if g != regime:
            continue
        parts, frames = [], []
        for k, job in enumerate(jobs, start=1):
            entry = store.get(job)
            arrays = entry.arrays("test")
            parts.append(arrays["logits"])
            labels = arrays["labels"]
            frames.append(entry.frame("history"))
            summary = entry.record["summary"]
            rows.append({"model": model, "replicate": r, "network": k, **summary})
        logits[(model, r)] = np.concatenate(parts, axis=1)
        histories[(model, r)] = frames
        train, test = jobs[0].spec["faces"].load()
        counts = train.class_counts() if counts is None else counts
    return Regime(regime, test.classes, labels, logits, histories, pd.DataFrame(rows), test,
                  counts)


def load(plan: Plan, store: Store) -> Results:
    """The results of a plan whose jobs are stored (:func:`run` trains what is missing)."""
    pretrained = {}
    for arch, job in plan.pretrain.items():
        arrays = store.get(job).arrays("test")
        pretrained[arch] = (arrays["logits"], arrays["labels"])
    return Results(_regime(plan, store, DEFAULT), _regime(plan, store, MECHANISM), pretrained,
                   plan, store)


def run(settings: Settings, store: Store | None = None) -> Results:
    """Train (or reuse from the store) every network of the chapter and read them back; one
    line says what was reused and what was trained."""
    store = store or Store()
    chapter = plan(settings)
    store.run(chapter.jobs())
    return load(chapter, store)
