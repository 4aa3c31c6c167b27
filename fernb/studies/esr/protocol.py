"""Chapter 1's plan as stored jobs (:mod:`fernb.store`), the functions that run them, and the
results read back from the store.

In the lab ("Redundancy and Diversity Analysis"): for each subject-independent trial
(:func:`fernb.data.splits.esr_trials`) one job trains the single network (on all training
folds), one the traditional ensemble (bagging: each network on the training folds less
one) and one each ESR-4 grown by Algorithm 1 at a branching level under a treatment of the
already-trained parts; every job scores its model on the trial's test fold. The first trial's
TE and the saliency run's ESR also draw Grad-CAM maps of their newest member at training
milestones (Fig. 5, right); as a control, every trial trains the saliency run's ESR with
every added branch starting from one identical draw.

In the wild (:mod:`fernb.studies.esr.wild`): one job grows ESR-9 branch by branch on
class-balanced subsets (Table 3), a second one, which needs it, fine-tunes its
valence/arousal heads (Table 4).

A job's spec holds exactly what its result depends on (the data, the fold protocol, the model,
the training settings), so a changed level grid trains only the new ESRs and never ESR-9, and
changed affect epochs retrain the affect heads only. Where a model trains (``device``) is not
part of it (the job's ``runtime``); the precision it trains at is, as computed on that device.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from fernb.complexity import count_parameters
from fernb.data.datasets import SYNTHETIC, DataSpec, FaceDataset
from fernb.data.splits import Split, esr_subject_folds, esr_trials, leave_one_fold_out
from fernb.data.transforms import BatchAugmentation
from fernb.ensemble import plurality_vote
from fernb.evaluate import predict
from fernb.explain import gradcam
from fernb.io import atomic_savez
from fernb.models.esr import ESR, single_network, traditional_ensemble
from fernb.store import Entry, Job, Outcome, Store
from fernb.studies.esr.settings import Settings
from fernb.studies.esr.wild import WildResults, load_wild, wild_jobs
from fernb.train import (STRATEGIES, FitConfig, History, Schedule, sgd, train_bagging,
                         train_esr)
from fernb.train import fit as _fit

INITS = ("own", "same")


# ----------------------------------------------------------------------- the lab study

@dataclass(frozen=True)
class Run:
    """One model trained and tested in one trial; ``init="same"`` is the control whose
    added branches all start from one identical draw; ``saliency`` runs draw milestone maps
    (not part of what the model is)."""

    trial: int
    model: str
    level: int = 0
    strategy: str = "-"
    init: str = "own"
    saliency: bool = field(default=False, compare=False)

    @property
    def key(self) -> str:
        if self.model == "ESR":
            suffix = "" if self.init == "own" else f"-{self.init}-init"
            return f"t{self.trial}-ESR-L{self.level}-{self.strategy}{suffix}"
        return f"t{self.trial}-{self.model}"

    @property
    def label(self) -> str:
        """The approach, as tables name it (the same in every trial)."""
        if self.model == "ESR":
            suffix = "" if self.init == "own" else ", identical starts"
            return f"ESR-4 Lvl. {self.level} ({self.strategy}{suffix})"
        return {"single": "Single network", "TE": "Traditional ensemble"}[self.model]


def plan(trials: Sequence[int], grid: Mapping[str, Sequence[int]], *,
         saliency: Sequence | None = None, init_control: bool = False) -> list[Run]:
    """Runs of the study: per trial the single network, the traditional ensemble and ESR-4
    for every ``strategy: [levels]`` entry of ``grid`` (e.g. ``{"varied": [1, 2, 3, 4, 5],
    "frozen": [3]}``). With ``saliency=(strategy, level)``, the first trial's TE and that ESR
    also record milestone saliency maps; with ``init_control`` every trial also trains that
    ESR with identical starts for its added branches."""
    bad = [s for s in grid if s not in STRATEGIES]
    if bad:
        raise ValueError(f"unknown strategies {bad}; choose from {STRATEGIES}")
    levels = [lv for lvs in grid.values() for lv in lvs]
    if any(not 1 <= lv <= 5 for lv in levels):
        raise ValueError(f"levels must lie in 1..5 (shared convolutions), got {levels}")
    if saliency is not None:
        saliency = (str(saliency[0]), int(saliency[1]))
        if saliency[1] not in grid.get(saliency[0], ()):
            raise ValueError(f"saliency run {saliency} is not in the grid {dict(grid)}")
        if saliency[0] == "interleaved":
            raise ValueError("saliency milestones need branches added one at a time; choose "
                             "a strategy other than 'interleaved'")
    if init_control and saliency is None:
        raise ValueError("init_control compares the saliency run's ESR: give saliency=")
    runs = []
    for i, t in enumerate(trials):
        first = i == 0 and saliency is not None
        runs += [Run(t, "single"), Run(t, "TE", saliency=first)]
        runs += [Run(t, "ESR", lv, s, saliency=first and (s, lv) == saliency)
                 for s, lvs in grid.items() for lv in lvs]
        if init_control:
            runs.append(Run(t, "ESR", saliency[1], saliency[0], init="same"))
    return runs


@dataclass(frozen=True)
class LabTraining:
    """How every in-the-lab model trains (paper: SGD with momentum 0.9, lr 0.1, trained
    branches 0.02 under "varied", lr halved every 250 epochs, ESR's augmentation); the
    model's channel ``width``, the computed ``precision`` (``"fp32"``, ``"bf16"`` or
    ``"fp16-amp"``) and the ``seed`` of its weights and batches."""

    epochs: int
    lr: float = 0.1
    lr_trained: float = 0.02
    lr_step: int | None = 250
    batch_size: int = 32
    width: float = 1.0
    augment: str = "esr"
    precision: str = "auto"
    seed: int = 0

    @classmethod
    def of(cls, settings: Settings) -> LabTraining:
        return cls(settings.epochs, settings.lr, settings.lr_trained, settings.lr_step,
                   settings.batch_size, settings.width, settings.augment,
                   settings.computed_precision,
                   settings.seed)

    def fit_config(self, image_size: int, device: str) -> FitConfig:
        return FitConfig(
            epochs=self.epochs, optimizer=sgd(self.lr), batch_size=self.batch_size,
            device=device, precision=self.precision, seed=self.seed,
            augment=BatchAugmentation(self.augment, image_size),
            schedule=Schedule("StepLR", step_size=self.lr_step, gamma=0.5)
            if self.lr_step else None)


def lab_data(settings: Settings) -> DataSpec:
    """The in-the-lab data (synth-lab, or CK+ and the other real sets at ``image_size``)."""
    synthetic = settings.dataset in SYNTHETIC
    return DataSpec.of(settings.dataset, "" if synthetic else settings.data_root,
                       size=settings.image_size,
                       n_subjects=settings.n_subjects if synthetic else 40,
                       seed=settings.seed if synthetic else 0)


def lab_job(run: Run, data: DataSpec, settings: Settings, device: str | None = None) -> Job:
    """The stored job of one run: its data, fold protocol, model and training settings, and
    the milestones of its saliency maps (none for a run that draws no maps); it trains on
    ``device`` (settings.device unless given), which is not part of its key."""
    spec = {"data": data, "n_folds": settings.n_folds, "n_train_folds": settings.n_train_folds,
            "run": run, "training": LabTraining.of(settings),
            "milestones": sorted(settings.milestones) if run.saliency else []}
    return Job("esr.lab", spec, train_lab, label=f"trial {run.trial}: {run.label}",
               runtime={"device": settings.device if device is None else device})


def trial_split(data: FaceDataset, n_folds: int, n_train_folds: int, trial: int
                ) -> tuple[np.ndarray, Split]:
    """Fold id per face and the trial's split (ESR's protocol)."""
    folds = esr_subject_folds(data.subjects, n_folds=n_folds)
    return folds, esr_trials(folds, n_train_folds)[trial]


def saliency_images(data: FaceDataset, split: Split) -> np.ndarray:
    """Indices of the test faces whose maps the saliency runs record: the last happiness and
    the last fear face of the trial's test fold (or its first two faces)."""
    test = split.test
    wanted = [data.classes.index(c) for c in ("happiness", "fear") if c in data.classes]
    picks = [test[data.labels[test] == c][-1] for c in wanted if np.any(data.labels[test] == c)]
    return np.array(picks or test[:2])


def milestone_keys(n_stages: int, milestones: Sequence[int]) -> list[str]:
    """The maps a saliency run records: ``stage{b}_epoch{e}``."""
    return [f"stage{b}_epoch{e}" for b in range(1, n_stages + 1) for e in milestones]


class _Milestones:
    """``on_epoch_end`` hook: Grad-CAM of the newest branch/network at chosen epochs (in eval
    mode, so drawing the maps leaves the training untouched). Each map is kept in ``path``
    as soon as it is drawn (before the epoch's checkpoint), so a resumed run has them all."""

    def __init__(self, images: torch.Tensor, targets: np.ndarray, epochs: Sequence[int],
                 path: Path) -> None:
        self.images, self.targets, self.epochs, self.path = images, targets, set(epochs), path
        self.esr: ESR | None = None  # the model whose branches are being trained
        self.maps: dict[str, np.ndarray] = {}
        if path.exists():
            with np.load(path) as kept:
                self.maps = {k: kept[k] for k in kept.files}

    def __call__(self, epoch: int, model: nn.Module) -> None:
        if epoch not in self.epochs:
            return
        if isinstance(model, ESR):
            member, branch = len(model.branches) - 1, model.branches[-1]
        else:  # one network of the traditional ensemble, trained alone
            member, branch = 0, model.branch
        stage = 1 + next(i for i, b in enumerate(self.esr.branches) if b is branch)
        self.maps[f"stage{stage}_epoch{epoch}"] = gradcam(
            model, self.images.to(next(model.parameters()).device),
            self.esr.cam_layer(stage - 1, self.images.shape[-1]), member=member,
            targets=self.targets.tolist())
        atomic_savez(self.path, **self.maps)


def _train(run: Run, data: FaceDataset, folds: np.ndarray, split: Split,
           training: LabTraining, device: str, checkpoint, hook: _Milestones | None
           ) -> tuple[nn.Module, list[History]]:
    # One initialisation seed per trial: member b of every model of a trial starts from the
    # same network b (ESR's branch b holds the unshared layers of TE network b), so an ESR
    # with one branch is exactly the single network (paper Fig. 5), resumed or not.
    seed = training.seed * 1000 + run.trial
    bags = leave_one_fold_out(split, folds)
    val = data.subset(split.val)
    config = training.fit_config(data.image_size[0], device)
    n, width = data.n_classes, training.width
    if run.model == "single":
        model = single_network(n_classes=n, width=width, seed=seed)
        return model, [_fit(model, data.subset(split.train), val, config,
                            checkpoint=checkpoint)]
    if run.model == "TE":
        model = traditional_ensemble(n_networks=len(bags), n_classes=n, width=width, seed=seed)
        if hook is not None:
            hook.esr = model
        return train_bagging(model, data, bags, val, config, checkpoint=checkpoint,
                             on_epoch_end=hook)
    model = ESR(arch="lab", level=run.level, n_branches=1, n_classes=n, width=width, seed=seed)
    if hook is not None:
        hook.esr = model
    return train_esr(model, data, bags, val, config, strategy=run.strategy,
                     lr_trained=training.lr_trained,
                     init="fresh" if run.init == "own" else "same",
                     checkpoint=checkpoint, on_epoch_end=hook)


def train_lab(job: Job, entry: Entry, store: Store) -> dict:
    """Run one in-the-lab job: train, test on the trial's test fold, store the test logits,
    one history per stage and the milestone maps."""
    spec, device = job.spec, job.runtime.get("device", "auto")
    run: Run = spec["run"]
    data = spec["data"].load()
    folds, split = trial_split(data, spec["n_folds"], spec["n_train_folds"], run.trial)
    hook = None
    if spec["milestones"]:
        picks = saliency_images(data, split)
        images, targets = data.tensors(picks)
        hook = _Milestones(images, targets.numpy(), spec["milestones"],
                           entry.checkpoint / "maps.npz")
    training: LabTraining = spec["training"]
    model, histories = _train(run, data, folds, split, training, device, entry.checkpoint,
                              hook)
    logits = predict(model, data.subset(split.test), device=device,
                     precision=training.precision).numpy()  # (N, M, C)
    labels = data.labels[split.test]
    entry.save_arrays("test", logits=logits, labels=labels, indices=split.test)
    for i, history in enumerate(histories, start=1):
        entry.save_frame(f"history_{i}", history.to_frame().reset_index())
    if hook is not None:
        entry.save_arrays("saliency", images=picks, **hook.maps)
    vote = plurality_vote(torch.from_numpy(logits)).numpy()
    return {"accuracy": float((vote == labels).mean()),
            "member_accuracy": (logits.argmax(-1) == labels[:, None]).mean(0).tolist(),
            "params": count_parameters(model, trainable_only=False),
            # summed over epochs, so a resumed run counts its earlier epochs too
            "train_seconds": round(float(sum(h.to_frame()["seconds"].sum()
                                             for h in histories)), 1),
            "stages": len(histories)}


@dataclass
class LabResults:
    """Per-run test accuracies (``table``: one row per run), test logits (N, M, C) and
    labels, per-stage histories and milestone saliency maps (with the indices of their
    ``images``), keyed by :attr:`Run.key`."""

    table: pd.DataFrame
    logits: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    histories: dict[str, list[pd.DataFrame]]
    saliency: dict[str, dict[str, np.ndarray]]


def load_lab(pairs: Sequence[tuple[Run, Job]], store: Store) -> LabResults:
    """The stored results of the runs (run first: :meth:`Store.run`)."""
    rows, logits, labels, histories, saliency = [], {}, {}, {}, {}
    for run, job in pairs:
        entry = store.get(job)
        summary = entry.record["summary"]
        test = entry.arrays("test")
        logits[run.key], labels[run.key] = test["logits"], test["labels"]
        histories[run.key] = [entry.frame(f"history_{i}")
                              for i in range(1, summary["stages"] + 1)]
        if job.spec["milestones"]:
            saliency[run.key] = entry.arrays("saliency")
        rows.append({"trial": run.trial, "model": run.model, "level": run.level,
                     "strategy": run.strategy, "init": run.init, "key": run.key,
                     "label": run.label, **summary})
    return LabResults(pd.DataFrame(rows), logits, labels, histories, saliency)


# ----------------------------------------------------------------------- the whole chapter

@dataclass
class Results:
    """Everything the chapter shows: its settings, the lab data, the lab runs and ESR-9,
    and what the store reused and trained to get them."""

    settings: Settings
    data: FaceDataset
    lab: LabResults
    wild: WildResults
    outcome: Outcome | None = None


def lab_runs(settings: Settings) -> list[Run]:
    return plan(settings.trials, settings.grid, saliency=settings.saliency_run,
                init_control=True)


def jobs(settings: Settings, device: str | None = None) -> list[Job]:
    """Every stored job of the chapter, in the order they run: the lab runs, then ESR-9 and
    its affect heads."""
    data = lab_data(settings)
    return [*(lab_job(r, data, settings, device) for r in lab_runs(settings)),
            *wild_jobs(settings, device)]


def load(settings: Settings, store: Store, outcome: Outcome | None = None) -> Results:
    """The chapter's results from the store (every job must be stored)."""
    data = lab_data(settings)
    pairs = [(r, lab_job(r, data, settings)) for r in lab_runs(settings)]
    return Results(settings, data.load(), load_lab(pairs, store),
                   load_wild(*wild_jobs(settings), store), outcome)


def run(settings: Settings, store: Store) -> Results:
    """Train what the store lacks (printing what it reused and what it trained), then read
    everything back."""
    outcome = store.run(jobs(settings))
    return load(settings, store, outcome)
