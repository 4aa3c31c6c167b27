"""How every network of the chapter is made, as a stored job's run function
(:mod:`fernb.store`): which faces it trains and is tested on (:class:`Faces`), the network
(:class:`Net`), its loss (:class:`Loss`) and training (:class:`Recipe`), its start, and the
training itself; FGA's fused children and their controls; the pre-trained starts.
"""
from __future__ import annotations

import copy
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
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
from fernb.train import FitConfig, Schedule, adam, fit, sgd

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
    with cosine annealing for ``epochs`` (``phases`` None), in ``precision`` (the name it
    resolves to, :func:`fernb.device.computed_precision`: the device is the job's runtime,
    not part of what it computes)."""

    lr: float
    epochs: int = 1
    phases: TwoPhase | None = None
    batch_size: int = 64
    augment: str = "flip"
    precision: str = "fp32"


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


def _train(net: nn.Module, spec: Mapping[str, Any], entry: Entry, device: str
           ) -> dict[str, Any]:
    """Train ``net`` by ``spec``'s recipe on ``device``, store its weights, test logits and
    history, and return the summary the store keeps (training loss, phases, test accuracy)."""
    train, test = spec["faces"].load()
    recipe: Recipe = spec["recipe"]
    augment = None if recipe.augment == "none" else BatchAugmentation(recipe.augment,
                                                                      train.image_size[0])
    config = FitConfig(epochs=recipe.epochs, optimizer=adam(recipe.lr),
                       loss=spec["loss"].build(train.labels, train.n_classes),
                       batch_size=recipe.batch_size, augment=augment, device=device,
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
    logits = predict(net, test, device=device, precision=recipe.precision).numpy()
    entry.save_state("weights", net.state_dict())
    entry.save_arrays("test", logits=logits, labels=test.labels)
    entry.save_frame("history", frame.reset_index())
    return {"training_loss": loss, **phases, "epochs": len(frame),
            "accuracy": float((logits[:, 0].argmax(-1) == test.labels).mean()),
            "train_seconds": float(frame["seconds"].sum())}


def train_network(job: Job, entry: Entry, store: Store) -> dict[str, Any]:
    """A stored job: one network from its start."""
    return _train(build_network(job.spec, store, job.needs), job.spec, entry,
                  job.runtime.get("device", "auto"))


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
    summary = _train(child, spec, entry, job.runtime.get("device", "auto"))
    return {**summary, "parents": list(draw.parents), "main_parent": draw.main_parent}


def pretrain(job: Job, entry: Entry, store: Store) -> dict[str, Any]:
    """A stored job: the shared start, an architecture pre-trained on synth-lab."""
    spec, device = job.spec, job.runtime.get("device", "auto")
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
        device=device, precision=spec["precision"], seed=spec["seed"]),
        checkpoint=entry.checkpoint)
    logits = predict(model, test, device=device, precision=spec["precision"]).numpy()
    torch_net = model.net  # the torchvision network: its state dict is a weights file
    entry.save_state("start", torch_net.state_dict())
    entry.save_arrays("test", logits=logits, labels=test.labels)
    entry.save_frame("history", history.to_frame().reset_index())
    return {"accuracy": float((logits[:, 0].argmax(-1) == test.labels).mean()),
            "epochs": len(history)}
