"""Chapter 4's plan: which networks to train, how, and the results read back from the store.

Every network is one job of the run store (:mod:`fernb.store`), keyed by exactly what it
depends on: its data (:class:`fernb.data.datasets.DataSpec`), split, architecture, start,
its own draw of initial weights, how it trains and its target (hard labels, or eq. 4's
perturbation of one D at one gamma). Jobs read each other only through the store: a member
trained on the source's D needs the source network's stored validation predictions, one
trained on the dataset's own D needs the constructor's.

Roles (Gan, Chen and Xu, PRL 2019, Fig. 2):

- The **source network**: VGG16 trained with hard labels on ``source`` (the paper's
  FER-2013). It is the constructor of the source's D (Sec. 4.2 builds D on FER-2013 and uses
  it on SFEW and RAF-DB too) and, with ``pretrain_on_source``, the start of every other
  network, in the part VGG-Face plays in the paper.
- **Base classifiers** on ``dataset``: each starts from that start with a last layer of its
  own draw and sees its own batch order, and trains end to end, with hard labels or with one
  perturbed D. The dataset's constructor is the hard-label base classifier of repeat 0,
  member 0 (the paper trains both with one recipe), so it is member 0 of the hard-label
  ensemble; the sweep's network at gamma g is member 0 of an ensemble whose first gamma is
  g. Member k of every ensemble of a repeat has the same draw and batch order, so two
  ensembles differ only in their targets (for the diversity comparison: only in gamma).
- Two **regimes**: ``default`` (the dataset as it is) and ``mechanism`` (synthetic faces
  whose blends follow shared action units, ``blend_pairs="facs"``, labelled by an annotator
  who names one of the emotions a face shows, ``label_from_mixture=True``), where the
  generator's true mixtures give an oracle D (:func:`oracle_soft_labels`) as a control. The
  mechanism regime reuses the default regime's gamma set and fixed gamma, so nothing is
  chosen on its data.

Choices where the paper is silent: every network keeps its last weights (the paper trains a
fixed number of iterations; the validation split builds D, picks gammas and draws the
curves); the learning rate is multiplied by 0.1 once, after ``lr_decay_at`` of the epochs;
a dataset without a validation part (RAF-DB) gives 20 % of its training part to
validation, as the paper's Sec. 4.3 does.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split

from fernb.data.datasets import DataSpec, FaceDataset
from fernb.data.splits import Split, standard_split
from fernb.data.transforms import BatchAugmentation
from fernb.device import computed_precision, resolve_device, resolve_precision
from fernb.evaluate import accuracy, predict
from fernb.losses import SoftLabelLoss
from fernb.models.backbones import load_weights, vgg16
from fernb.models.softlabels import Network
from fernb.seeding import derive_seed, seeded
from fernb.softlabels import (construct_soft_labels, diagonal_violations, perturb,
                              restrict_soft_labels, select_gammas)
from fernb.store import Entry, Job, Store
from fernb.studies.softlabels.settings import Settings, decay_epoch
from fernb.train import FitConfig, Schedule, adam, fit, sgd

MOMENTUM, WEIGHT_DECAY, DROPOUT = 0.9, 0.0005, 0.5  # Sec. 4.2
KIND = "softlabels.network"
REGIMES = ("default", "mechanism")
# The ensembles, in table order: what each trains on (Tables 2, 4 and 6, and the control).
GROUPS = ("hard", "fixed", "perturbed", "other", "oracle")


# ----------------------------------------------------------------------- data

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


def mechanism_knobs(settings: Settings) -> dict[str, Any]:
    """The generator's knobs of the mechanism regime: blends between classes that share
    action units, labels drawn from each face's mixture, and ``mechanism_blend_prob`` of the
    faces blended (by default synth-wild's own share, so the regime differs from the default
    one by the two mechanism knobs only)."""
    return {"blend_pairs": "facs", "label_from_mixture": True,
            "blend_prob": settings.mechanism_blend_prob}


def data_spec(settings: Settings, regime: str = "default") -> DataSpec:
    """The faces of a regime (``"default"``: the dataset as it is)."""
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")
    knobs = mechanism_knobs(settings) if regime == "mechanism" else {}
    return DataSpec.of(settings.dataset, settings.data_root, size=settings.image_size,
                       n_subjects=settings.n_subjects, seed=settings.seed,
                       channels=settings.channels, **knobs)


def source_spec(settings: Settings) -> DataSpec:
    return DataSpec.of(settings.source, settings.source_root, size=settings.image_size,
                       n_subjects=settings.source_subjects, seed=settings.seed,
                       channels=settings.channels)


# ----------------------------------------------------------------------- networks and training

def network_spec(settings: Settings) -> dict[str, Any]:
    """VGG16 (Sec. 3.1) at ``width``: with a ``weights`` file the paper's plain VGG16 with
    VGG-Face's input preparation; from random initialisation ``vgg16_bn`` (plain VGG16 does
    not train from scratch)."""
    return {"arch": "vgg16", "width": settings.width, "channels": settings.channels,
            "batch_norm": not settings.weights, "dropout": DROPOUT,
            "weights": settings.weights}


def build_network(net: Mapping[str, Any], n_classes: int, start: Mapping[str, torch.Tensor] | None,
                  draw: Sequence[int | str]) -> Network:
    """A VGG16 drawn under ``seeded(*draw)``, then loaded with ``start`` (a state dict of a
    VGG16 of this width) except its last layer, which keeps its own draw."""
    with seeded(*draw):
        backbone = vgg16(n_classes=n_classes, in_chans=net["channels"], width=net["width"],
                         batch_norm=net["batch_norm"], dropout=net["dropout"])
    if start is not None:
        own = backbone.net.state_dict()
        keep = {k: v for k, v in start.items() if k not in backbone.head_keys}
        missing = sorted(set(own) - set(keep) - set(backbone.head_keys))
        if missing or set(keep) - set(own):
            raise ValueError(f"the start weights do not fit this VGG16 (missing {missing[:3]}, "
                             f"unexpected {sorted(set(keep) - set(own))[:3]})")
        backbone.net.load_state_dict({**own, **keep})
    return Network(backbone, face_input=bool(net["weights"]))


def weights_state(net: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The ``weights`` file as a state dict of a VGG16 of this width."""
    backbone = vgg16(n_classes=2, in_chans=net["channels"], width=net["width"],
                     batch_norm=net["batch_norm"], dropout=net["dropout"])
    load_weights(backbone, net["weights"])
    return backbone.net.state_dict()


def training_spec(settings: Settings, epochs: int) -> dict[str, Any]:
    """How a network trains (Sec. 4.2 with the chapter's optimizer, rate and sizes)."""
    step = decay_epoch(settings.lr_decay_at, epochs)
    optimizer = (sgd(settings.lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
                 if settings.optimizer == "sgd"
                 else adam(settings.lr, weight_decay=WEIGHT_DECAY))
    return {"epochs": epochs, "optimizer": optimizer,
            "schedule": None if step is None else Schedule("StepLR", step_size=step, gamma=0.1),
            "batch_size": settings.batch_size, "augment": settings.augment,
            "image_size": settings.image_size,
            "precision": computed_precision(settings.precision, settings.device)}


def fit_config(training: Mapping[str, Any], *, seed: int, loss: Any, device: str,
               precision: str) -> FitConfig:
    """The :class:`~fernb.train.FitConfig` of a training spec. The weights of the last epoch
    are kept (the paper trains a fixed number of iterations): the latest epoch is the best by
    ``select="epoch"``. ``device`` and ``precision`` are the settings' (``training`` keeps the
    precision they resolve to, which is what the result depends on)."""
    augment = (None if training["augment"] == "none"
               else BatchAugmentation(training["augment"], training["image_size"]))
    return FitConfig(epochs=training["epochs"], optimizer=training["optimizer"],
                     schedule=training["schedule"], loss=loss,
                     batch_size=training["batch_size"], augment=augment, select="epoch",
                     maximize=True, device=device, precision=precision, seed=seed)


# ----------------------------------------------------------------------- soft labels

def _softmax(logits: np.ndarray) -> np.ndarray:
    return torch.from_numpy(np.asarray(logits, np.float64)).softmax(-1).numpy()


def constructed(entry: Entry) -> tuple[np.ndarray, tuple[str, ...]]:
    """Eqs. (2)-(3) on a stored hard-label network: D from its validation predictions, with
    the classes of its dataset (every row kept, violations included)."""
    p = entry.arrays("predictions")
    classes = tuple(entry.json("classes"))
    return construct_soft_labels(_softmax(p["val"]), p["val_labels"],
                                 on_violation="ignore"), classes


def oracle_soft_labels(data: FaceDataset, s: Split) -> np.ndarray:
    """The oracle D: eqs. (2)-(3) applied to the generator's *true* mixtures of the
    validation faces instead of a network's predictions, per annotated class (what a
    perfect constructor would find when labels are drawn from the mixtures)."""
    if data.mixtures is None:
        raise ValueError(f"{data.name} has no true mixtures: the oracle D needs synthetic faces")
    return construct_soft_labels(data.mixtures[s.val], data.labels[s.val], on_violation="ignore")


def _target_d(target: Mapping[str, Any], data: FaceDataset, s: Split,
              needs: Mapping[str, Job], store: Store) -> np.ndarray:
    if target["d"] == "oracle":
        return oracle_soft_labels(data, s)
    d, classes = constructed(store.get(needs[target["d"]]))
    return restrict_soft_labels(d, classes, data.classes)


# ----------------------------------------------------------------------- the job

class _Trace:
    """After every epoch of a hard-label network: its validation accuracy and the rows of the
    D its predictions give (Sec. 3.2's rule), kept beside the checkpoint so a resumed run
    keeps the epochs already traced."""

    def __init__(self, val: FaceDataset, entry: Entry, device: str, precision: str) -> None:
        self.x, _ = val.tensors()
        self.y = val.labels
        self.path = entry.checkpoint / "trace.json"
        self.rows = json.loads(self.path.read_text()) if self.path.exists() else []
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)

    def __call__(self, epoch: int, model: torch.nn.Module) -> None:
        mode = model.training
        model.eval()
        with torch.no_grad(), self.precision.autocast():
            z = torch.cat([model(b.to(self.device)).float()[:, 0].cpu()
                           for b in self.x.split(256)]).numpy()  # (N, C)
        model.train(mode)
        d = construct_soft_labels(_softmax(z), self.y, on_violation="ignore")
        self.rows = [r for r in self.rows if r["epoch"] < epoch]
        self.rows.append({"epoch": epoch, "val_accuracy": float((z.argmax(1) == self.y).mean()),
                          "violations": len(diagonal_violations(d))})
        self.path.write_text(json.dumps(self.rows))


def train_network(job: Job, entry: Entry, store: Store) -> dict[str, Any]:
    """Train one VGG16 as its spec says and store its validation and test logits, labels,
    classes and history (the state too where others start from it)."""
    spec, device, precision = job.spec, job.runtime["device"], job.runtime["precision"]
    data = spec["data"].load()
    s = split(data, spec["split_seed"])
    needs = dict(zip(spec["needs"], job.needs))
    net_spec, target = spec["network"], spec["target"]
    if spec["start"] == "source":
        start = store.get(needs["source"]).state("network")
    elif spec["start"] == "weights":
        start = weights_state(net_spec)
    else:
        start = None
    net = build_network(net_spec, data.n_classes, start, spec["draw"])
    loss, trace = None, None
    val = data.subset(s.val)
    if target["kind"] == "soft":
        d = perturb(_target_d(target, data, s, needs, store), target["gamma"])  # eq. (4)
        entry.save_arrays("target", soft_labels=d)
        loss = SoftLabelLoss(d)  # eq. (5)
    else:
        trace = _Trace(val, entry, device, precision)
    history = fit(net, data.subset(s.train), val,
                  fit_config(spec["training"], seed=spec["fit_seed"], loss=loss,
                             device=device, precision=precision),
                  checkpoint=entry.checkpoint, on_epoch_end=trace)
    logits = {part: predict(net, data.subset(idx), device=device,
                            precision=precision)[:, 0].numpy()
              for part, idx in (("val", s.val), ("test", s.test))}
    entry.save_arrays("predictions", **logits, val_labels=data.labels[s.val],
                      test_labels=data.labels[s.test])
    entry.save_json("classes", list(data.classes))
    entry.save_frame("history", history.to_frame().reset_index())
    if trace is not None:
        entry.save_frame("trace", pd.DataFrame(trace.rows))
    if spec["keep_state"]:
        entry.save_state("network", net.backbone.net.state_dict())
    return {"val_accuracy": accuracy(logits["val"], data.labels[s.val]),
            "test_accuracy": accuracy(logits["test"], data.labels[s.test])}


# ----------------------------------------------------------------------- the plan

def _job(settings: Settings, spec: dict[str, Any], needs: dict[str, Job], label: str) -> Job:
    """A network's job: where it runs (device, precision setting) is not part of its key."""
    spec = {**spec, "needs": tuple(needs)}
    return Job(KIND, spec, train_network, tuple(needs.values()), label,
               runtime={"device": settings.device, "precision": settings.precision})


def source_job(settings: Settings) -> Job | None:
    """The source network (None when the source is the dataset itself)."""
    if settings.same_source:
        return None
    start = "weights" if settings.weights else "random"
    spec = {"data": source_spec(settings), "split_seed": settings.seed,
            "network": network_spec(settings), "start": start,
            "draw": (settings.seed, "source"), "fit_seed": derive_seed(settings.seed, "source"),
            "training": training_spec(settings, settings.source_epochs),
            "target": {"kind": "hard"}, "keep_state": True}
    return _job(settings, spec, {}, f"source network ({settings.source})")


def main_d(settings: Settings) -> str:
    """Which D the soft-label ensembles use: ``"source"`` or ``"dataset"``."""
    return "dataset" if settings.same_source else settings.soft_labels_from


def other_d(settings: Settings) -> str | None:
    """The other D (None when the source is the dataset itself)."""
    return None if settings.same_source else ("dataset" if main_d(settings) == "source"
                                              else "source")


def member_job(settings: Settings, regime: str, target: Mapping[str, Any], repeat: int,
               member: int) -> Job:
    """Base classifier ``member`` of repeat ``repeat`` in ``regime``, trained on ``target``
    (``{"kind": "hard"}`` or ``{"kind": "soft", "d": "source" | "dataset" | "oracle",
    "gamma": g}``)."""
    needs: dict[str, Job] = {}
    source = source_job(settings)
    pretrained = settings.pretrain_on_source and source is not None
    if pretrained or target.get("d") == "source":
        needs["source"] = source
    if target.get("d") == "dataset":
        needs["dataset"] = constructor_job(settings, regime)
    start = "source" if pretrained else ("weights" if settings.weights else "random")
    spec = {"data": data_spec(settings, regime), "split_seed": settings.seed,
            "network": network_spec(settings), "start": start,
            "draw": (settings.seed, "member", repeat, member),
            "fit_seed": derive_seed(settings.seed, "fit", repeat, member),
            "training": training_spec(settings, settings.epochs), "target": dict(target),
            "keep_state": False}
    what = ("hard labels" if target["kind"] == "hard"
            else f"{target['d']} D at gamma {target['gamma']:g}")
    return _job(settings, spec, needs, f"{regime} r{repeat} k{member}: {what}")


def constructor_job(settings: Settings, regime: str = "default") -> Job:
    """The dataset's constructor: the hard-label base classifier of repeat 0, member 0."""
    return member_job(settings, regime, {"kind": "hard"}, 0, 0)


def soft(d: str, gamma: float) -> dict[str, Any]:
    return {"kind": "soft", "d": d, "gamma": float(gamma)}


def sweep_jobs(settings: Settings) -> list[Job]:
    """Sec. 4.3, Fig. 4: one base classifier per gamma of the grid on the main D, each member
    0 of repeat 0 (same draw and batch order), and the constructor."""
    d = main_d(settings)
    return [constructor_job(settings),
            *[member_job(settings, "default", soft(d, g), 0, 0) for g in settings.gamma_grid]]


@dataclass(frozen=True)
class Sweep:
    """The gamma sweep: validation and test accuracy (fractions) of one network per gamma,
    the chosen window of ``n_members`` gammas and the fixed gamma."""

    table: pd.DataFrame
    gammas: tuple[float, ...]
    fixed_gamma: float


def read_sweep(settings: Settings, store: Store) -> Sweep:
    """The sweep's networks from the store, and the gammas they choose (Sec. 4.3:
    :func:`fernb.softlabels.select_gammas`; the fixed gamma is the best single one unless
    ``fixed_gamma`` names one)."""
    rows = []
    for g, job in zip(settings.gamma_grid, sweep_jobs(settings)[1:]):
        p = store.get(job).arrays("predictions")
        rows.append({"gamma": float(g), "val accuracy": accuracy(p["val"], p["val_labels"]),
                     "test accuracy": accuracy(p["test"], p["test_labels"])})
    table = pd.DataFrame(rows)
    gammas = select_gammas(table["gamma"], table["val accuracy"], settings.n_members)
    fixed = (float(table.loc[table["val accuracy"].idxmax(), "gamma"])
             if settings.fixed_gamma == "best" else float(settings.fixed_gamma))
    return Sweep(table, gammas, fixed)


def group_targets(settings: Settings, regime: str, sweep: Sweep
                  ) -> dict[str, list[dict[str, Any]]]:
    """Each ensemble of a regime and its members' targets (one per member)."""
    n, d = settings.n_members, main_d(settings)
    groups = {"hard": [{"kind": "hard"}] * n,
              "fixed": [soft(d, sweep.fixed_gamma)] * n,
              "perturbed": [soft(d, g) for g in sweep.gammas]}
    other = other_d(settings)
    if regime == "default" and settings.other_d_ensemble and other is not None:
        groups["other"] = [soft(other, g) for g in sweep.gammas]
    if regime == "mechanism":
        groups["oracle"] = [soft("oracle", g) for g in sweep.gammas]
    return groups


def regimes(settings: Settings) -> tuple[str, ...]:
    return REGIMES if settings.mechanism else REGIMES[:1]


def ensemble_jobs(settings: Settings, sweep: Sweep) -> dict[tuple[str, str, int, int], Job]:
    """Every member of every ensemble, by (regime, group, repeat, member)."""
    jobs = {}
    for regime in regimes(settings):
        for group, targets in group_targets(settings, regime, sweep).items():
            for r in range(settings.repeats):
                for k, target in enumerate(targets):
                    jobs[(regime, group, r, k)] = member_job(settings, regime, target, r, k)
    return jobs


def plan(settings: Settings, sweep: Sweep | None = None) -> list[Job]:
    """The jobs of the study: before the sweep is read, the source network, the
    constructor and the sweep; after, every ensemble member as well."""
    first = [j for j in (source_job(settings),) if j is not None] + sweep_jobs(settings)
    return first if sweep is None else first + list(ensemble_jobs(settings, sweep).values())
