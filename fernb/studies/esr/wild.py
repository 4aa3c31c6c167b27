"""ESR-9 in the wild as stored jobs: one grows ESR-9 branch by branch on class-balanced
subsets (paper Table 3), a second one, which needs it, fine-tunes its valence/arousal heads
(Table 4). Neither spec holds anything of the lab study (its grid, folds or trials), so a
changed level grid never retrains them; changed affect epochs retrain the heads only."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from fernb.complexity import count_parameters
from fernb.data.datasets import SYNTHETIC, DataSpec, FaceDataset
from fernb.data.splits import standard_split
from fernb.data.transforms import BatchAugmentation
from fernb.ensemble import plurality_vote
from fernb.evaluate import predict
from fernb.models.esr import ESR
from fernb.store import Entry, Job, Store
from fernb.studies.esr.settings import Settings
from fernb.train import (FitConfig, Schedule, balanced_subset, finetune_affect, quadrants, sgd,
                         train_esr)


@dataclass(frozen=True)
class WildTraining:
    """ESR-9's schedule (paper, "Evaluation on the AffectNet Dataset", and the authors'
    code): SGD with momentum 0.9, lr 0.1 halved every 10 epochs, trained branches at 0.01,
    ESR's augmentation, 50 epochs for the first branch and 20 for each later one, balanced
    subsets of up to 5000 images per class."""

    n_branches: int = 9
    width: float = 1.0
    per_class: int = 5000
    epochs_first: int = 50
    epochs: int = 20
    lr: float = 0.1
    lr_trained: float = 0.01
    lr_step: int = 10
    augment: str = "esr"
    batch_size: int = 32
    precision: str = "auto"
    seed: int = 0

    @classmethod
    def of(cls, settings: Settings) -> WildTraining:
        s = settings
        return cls(s.wild_branches, s.wild_width, s.wild_per_class, s.wild_epochs_first,
                   s.wild_epochs, s.wild_lr, s.wild_lr_trained, s.wild_lr_step,
                   s.wild_augment, s.batch_size, s.computed_precision, s.seed)


@dataclass(frozen=True)
class AffectTraining:
    """ESR-9's valence/arousal heads (paper, "Continuous affect perception"): each head
    trained at lr 0.01, those already trained at 0.001, on subsets balanced over the four
    quadrants of the circumplex (up to ``per_class`` images each)."""

    epochs: int = 20
    per_class: int = 5000
    lr: float = 0.01
    lr_trained: float = 0.001
    batch_size: int = 32
    precision: str = "auto"
    seed: int = 0

    @classmethod
    def of(cls, settings: Settings) -> AffectTraining:
        return cls(settings.affect_epochs, settings.wild_per_class,
                   batch_size=settings.batch_size, precision=settings.computed_precision,
                   seed=settings.seed)


def wild_data(settings: Settings) -> DataSpec:
    """ESR-9's data in RGB (synth-wild, or AffectNet and the other real sets)."""
    synthetic = settings.wild_dataset in SYNTHETIC
    return DataSpec.of(settings.wild_dataset, "" if synthetic else settings.wild_root,
                       size=settings.wild_size,
                       n_subjects=settings.wild_subjects if synthetic else 40,
                       seed=settings.seed if synthetic else 0, channels=3)


def wild_jobs(settings: Settings, device: str | None = None) -> tuple[Job, Job]:
    """ESR-9's emotion training and, needing it, its affect fine-tuning. Neither spec holds
    anything of the lab study (its grid, folds or trials), nor where it trains (``device``,
    settings.device unless given: the jobs' runtime)."""
    data = wild_data(settings)
    runtime = {"device": settings.device if device is None else device}
    emotion = Job("esr.wild", {"data": data, "training": WildTraining.of(settings)},
                  train_wild, label="ESR-9", runtime=runtime)
    affect = Job("esr.affect", {"data": data, "training": AffectTraining.of(settings)},
                 train_affect, needs=(emotion,), label="ESR-9 valence/arousal heads",
                 runtime=runtime)
    return emotion, affect


def _wild_parts(data: FaceDataset, seed: int) -> tuple[FaceDataset, FaceDataset, FaceDataset]:
    split = standard_split(data.labels, data.subjects, data.split, seed=seed)
    return tuple(data.subset(i) for i in (split.train, split.val, split.test))


def train_wild(job: Job, entry: Entry, store: Store) -> dict:
    """Grow ESR-9 on class-balanced subsets of the training part of the data (its official
    partition, else a subject-independent holdout; Algorithm 1, "varied"); store its weights,
    test logits and one history per branch."""
    t: WildTraining = job.spec["training"]
    device, precision = job.runtime.get("device", "auto"), t.precision
    train, val, test = _wild_parts(job.spec["data"].load(), t.seed)
    subsets = [balanced_subset(train.labels, t.per_class, seed=t.seed + b)
               for b in range(t.n_branches)]
    model = ESR(arch="wild", n_branches=1, n_classes=train.n_classes, width=t.width,
                seed=t.seed)
    config = FitConfig(epochs=t.epochs, optimizer=sgd(t.lr), batch_size=t.batch_size,
                       device=device, precision=precision, seed=t.seed,
                       schedule=Schedule("StepLR", step_size=t.lr_step, gamma=0.5),
                       augment=BatchAugmentation(t.augment, train.image_size[0]))
    model, histories = train_esr(model, train, subsets, val, config, strategy="varied",
                                 epochs=[t.epochs_first] + [t.epochs] * (t.n_branches - 1),
                                 lr_trained=t.lr_trained, checkpoint=entry.checkpoint)
    logits = predict(model, test, device=device, precision=precision).numpy()
    entry.save_state("model", model.state_dict())
    entry.save_arrays("test", logits=logits, labels=test.labels)
    for i, history in enumerate(histories, start=1):
        entry.save_frame(f"history_{i}", history.to_frame().reset_index())
    vote = plurality_vote(torch.from_numpy(logits)).numpy()
    return {"accuracy": float((vote == test.labels).mean()), "n_classes": train.n_classes,
            "stages": len(histories), "params": count_parameters(model)}


def train_affect(job: Job, entry: Entry, store: Store) -> dict:
    """Fine-tune the stored ESR-9's valence/arousal heads branch by branch on
    quadrant-balanced subsets, everything learned for emotions frozen; store the test
    predictions (N, M, 2), the targets and the training mean. A dataset without
    valence/arousal stores that it has none."""
    emotion = store.get(job.needs[0])
    w: WildTraining = job.needs[0].spec["training"]
    t: AffectTraining = job.spec["training"]
    device, precision = job.runtime.get("device", "auto"), t.precision
    train, val, test = _wild_parts(job.spec["data"].load(), w.seed)
    if train.valence_arousal is None:
        return {"affect": False, "stages": 0}
    model = ESR(arch="wild", n_branches=w.n_branches, n_classes=train.n_classes,
                width=w.width, seed=w.seed)
    model.load_state_dict(emotion.state("model"))
    subsets = [balanced_subset(quadrants(train.valence_arousal), t.per_class, seed=t.seed + b)
               for b in range(w.n_branches)]
    config = FitConfig(epochs=t.epochs, optimizer=sgd(t.lr), batch_size=t.batch_size,
                       device=device, precision=precision, seed=t.seed)
    model, histories = finetune_affect(model, train.with_options(target="valence_arousal"),
                                       subsets, val.with_options(target="valence_arousal"),
                                       config, lr_trained=t.lr_trained,
                                       checkpoint=entry.checkpoint)
    affect = predict(model, test, device=device, precision=precision,
                     output="forward_affect").numpy()  # (N, M, 2)
    entry.save_arrays("affect", predicted=affect, target=test.valence_arousal,
                      train_mean=train.valence_arousal.mean(0))
    for i, history in enumerate(histories, start=1):
        entry.save_frame(f"history_{i}", history.to_frame().reset_index())
    return {"affect": True, "stages": len(histories)}


@dataclass
class WildResults:
    """ESR-9's test logits (N, M, C), labels and class names, one history per added branch;
    its affect predictions (N, M, 2), targets (N, 2), the training mean (2,) and the heads'
    histories, or None for data without valence/arousal."""

    logits: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    histories: list[pd.DataFrame]
    params: int
    affect: dict[str, np.ndarray] | None = None
    affect_histories: list[pd.DataFrame] = field(default_factory=list)


def load_wild(emotion: Job, affect: Job, store: Store) -> WildResults:
    entry, heads = store.get(emotion), store.get(affect)
    summary = entry.record["summary"]
    test = entry.arrays("test")
    classes = emotion.spec["data"].load().classes
    has_affect = heads.record["summary"]["affect"]
    return WildResults(
        test["logits"], test["labels"], tuple(classes),
        [entry.frame(f"history_{i}") for i in range(1, summary["stages"] + 1)],
        int(summary["params"]),
        heads.arrays("affect") if has_affect else None,
        [heads.frame(f"history_{i}")
         for i in range(1, heads.record["summary"]["stages"] + 1)])
