"""ESR's in-the-lab experiments (Siqueira et al. 2020, "Redundancy and Diversity Analysis").

For each subject-independent trial (:func:`fernb.data.splits.esr_trials`) the study trains
the single network (on all training folds), the traditional ensemble (bagging: each network
on the training folds less one) and ESR-4 grown by Algorithm 1 at each branching level and
with each treatment of already-trained parts, then scores every model on the test fold with
the plurality vote (Fig. 4, Tables 1 and 2). For chosen runs it also records Grad-CAM maps of
the newest branch at training milestones (Fig. 5, right).
"""
from __future__ import annotations

import io
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from fernb.complexity import count_parameters, eval_mode
from fernb.data.datasets import FaceDataset
from fernb.data.splits import Split, esr_trials, leave_one_fold_out
from fernb.data.transforms import BatchAugmentation
from fernb.ensemble import plurality_vote
from fernb.evaluate import predict
from fernb.explain import gradcam
from fernb.io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from fernb.data.transforms import AUGMENTATIONS
from fernb.models.esr import ESR, single_network, traditional_ensemble
from fernb.params import (LEARNING_RATE, POSITIVE_INT, SEED, Choice, DatasetName, Device,
                          ListOf, MappingOf, Range, Rules, dataset_rules, relation)
from fernb.train import STRATEGIES, History, fit, train_bagging, train_esr

LAB_DATASETS = ("synth-lab", "synth-wild", "ckplus", "jaffe", "folder")
# ESR-9's affect fine-tuning needs valence and arousal labels.
WILD_DATASETS = ("synth-wild", "affectnet", "folder")
_LAB_RELATIONS, _LAB_UNUSED = dataset_rules("dataset", "data_root", ("n_subjects",))
_WILD_RELATIONS, _WILD_UNUSED = dataset_rules("wild_dataset", "wild_root", ("wild_subjects",))


def _saliency_ok(v: Mapping) -> bool:
    run = v["saliency_run"]
    return (isinstance(run, (list, tuple)) and len(run) == 2 and run[0] != "interleaved"
            and run[1] in v["grid"].get(run[0], ()))


PARAMETERS = Rules(
    values={
        "dataset": DatasetName(LAB_DATASETS), "n_subjects": Range(4, 10_000, integer=True),
        "image_size": Range(48, 224, integer=True), "width": Range(0, 4, open_low=True),
        "n_folds": Range(3, 100, integer=True), "n_train_folds": POSITIVE_INT,
        "trials": ListOf(Range(0, integer=True), unique=True),
        "grid": MappingOf(Choice(*STRATEGIES), ListOf(Range(1, 5, integer=True), unique=True)),
        "epochs": POSITIVE_INT, "lr": LEARNING_RATE, "lr_trained": LEARNING_RATE,
        "lr_step": POSITIVE_INT, "batch_size": POSITIVE_INT, "augment": Choice(*AUGMENTATIONS),
        "milestones": ListOf(POSITIVE_INT, unique=True),
        "wild_dataset": DatasetName(WILD_DATASETS), "wild_subjects": Range(4, 10_000, integer=True),
        "wild_size": Range(56, 224, integer=True), "wild_width": Range(0, 4, open_low=True),
        "wild_branches": Range(1, 32, integer=True), "wild_per_class": POSITIVE_INT,
        "wild_epochs_first": POSITIVE_INT, "wild_epochs": POSITIVE_INT,
        "wild_lr": LEARNING_RATE, "wild_lr_trained": LEARNING_RATE,
        "wild_lr_step": POSITIVE_INT, "wild_augment": Choice(*AUGMENTATIONS),
        "affect_epochs": POSITIVE_INT, "seed": SEED, "device": Device(),
    },
    relations=[
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
                           f"time (not 'interleaved'); e.g. "
                           f"{[next(iter(v['grid'])), next(iter(v['grid'].values()))[0]]}"),
    ],
    unused=[*_LAB_UNUSED, *_WILD_UNUSED],
)

@dataclass(frozen=True)
class Run:
    """One model trained and tested in one trial."""

    trial: int
    model: str
    level: int = 0
    strategy: str = "-"
    saliency: bool = False

    @property
    def key(self) -> str:
        if self.model == "ESR":
            return f"t{self.trial}-ESR-L{self.level}-{self.strategy}"
        return f"t{self.trial}-{self.model}"

    @property
    def label(self) -> str:
        return f"ESR-4 Lvl. {self.level} ({self.strategy})" if self.model == "ESR" else {
            "single": "Single network", "TE": "Traditional ensemble"}[self.model]


@dataclass(frozen=True)
class Config:
    """Training settings shared by every run (paper: SGD, momentum 0.9, lr 0.1, trained
    branches 0.02 under "varied", lr halved every 250 epochs, ESR's augmentation)."""

    epochs: int
    lr: float = 0.1
    lr_trained: float = 0.02
    lr_step: int | None = 250
    batch_size: int = 32
    width: float = 1.0
    n_train_folds: int = 4
    augment: str = "esr"
    device: str = "auto"
    seed: int = 0


def plan(trials: Sequence[int], grid: Mapping[str, Sequence[int]], *,
         saliency: tuple[str, int] | None = None) -> list[Run]:
    """Runs of the study: per trial the single network, the traditional ensemble and ESR-4
    for every ``strategy: [levels]`` entry of ``grid`` (e.g. ``{"varied": [1, 2, 3, 4, 5],
    "frozen": [3]}``). With ``saliency=(strategy, level)``, the first trial's TE and that ESR
    also record milestone saliency maps."""
    bad = [s for s in grid if s not in STRATEGIES]
    if bad:
        raise ValueError(f"unknown strategies {bad}; choose from {STRATEGIES}")
    levels = [lv for lvs in grid.values() for lv in lvs]
    if any(not 1 <= lv <= 5 for lv in levels):
        raise ValueError(f"levels must lie in 1..5 (shared convolutions), got {levels}")
    if saliency is not None and saliency[1] not in grid.get(saliency[0], ()):
        raise ValueError(f"saliency run {saliency} is not in the grid {dict(grid)}")
    if saliency is not None and saliency[0] == "interleaved":
        raise ValueError("saliency milestones need branches added one at a time; choose a "
                         "strategy other than 'interleaved'")
    runs = []
    for i, t in enumerate(trials):
        first = i == 0 and saliency is not None
        runs += [Run(t, "single"), Run(t, "TE", saliency=first)]
        runs += [Run(t, "ESR", lv, s, saliency=first and (s, lv) == tuple(saliency))
                 for s, lvs in grid.items() for lv in lvs]
    return runs


@dataclass
class StudyResults:
    """Per-run test accuracies (``table``), test logits and labels, per-stage histories and
    milestone saliency maps, keyed by :attr:`Run.key`."""

    table: pd.DataFrame
    logits: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    histories: dict[str, list[pd.DataFrame]]
    saliency: dict[str, dict[str, np.ndarray]]


MIN_CAM_SIZE = 5


def cam_layer(model: ESR, branch: nn.Module, image_size: int) -> nn.Module:
    """Grad-CAM layer for one branch: the deepest convolution block on its path (shared base,
    then the branch) whose output is still at least ``MIN_CAM_SIZE`` pixels wide. At 96x96
    that is the last convolution (7x7), as in the paper; at 48x48 the last convolution is
    1x1, so the map comes from the third (9x9)."""
    blocks = [*model.base, *branch.features]
    x = torch.zeros(1, model.base[0][0].in_channels if len(model.base)
                    else branch.features[0][0].in_channels, image_size, image_size,
                    device=next(model.parameters()).device)
    chosen = blocks[0]
    with eval_mode(model), torch.no_grad():
        for block in blocks:
            x = block(x)
            if x.shape[-1] >= MIN_CAM_SIZE:
                chosen = block
    return chosen


class _Milestones:
    """``on_epoch_end`` hook: Grad-CAM of the newest branch/network at chosen epochs."""

    def __init__(self, images: torch.Tensor, targets: np.ndarray, epochs: Sequence[int],
                 path: Path) -> None:
        self.images, self.targets, self.epochs, self.path = images, targets, set(epochs), path
        self.esr: ESR | None = None  # the model whose branches are being trained
        self.maps = dict(np.load(path)) if path.exists() else {}  # resumed run keeps its maps

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
            cam_layer(self.esr, branch, self.images.shape[-1]), member=member,
            targets=self.targets.tolist())
        _save_npz(self.path, **self.maps)


def _train(run: Run, data: FaceDataset, folds: np.ndarray, split: Split, config: Config,
           out: Path, hook: _Milestones | None) -> tuple[nn.Module, list[History]]:
    # One initialisation seed per trial: member b of every model of a trial starts from the
    # same network b (ESR's branch b holds the unshared layers of TE network b), so an ESR
    # with one branch is exactly the single network (paper Fig. 5), resumed or not.
    seed = config.seed * 1000 + run.trial
    bags = leave_one_fold_out(split, folds)
    val = data.subset(split.val)
    common = dict(batch_size=config.batch_size, device=config.device, seed=config.seed,
                  progress=False, augment=BatchAugmentation(config.augment, data.image_size[0]),
                  schedule=partial(torch.optim.lr_scheduler.StepLR, step_size=config.lr_step,
                                   gamma=0.5) if config.lr_step else None)
    n = data.n_classes
    if run.model == "single":
        model = single_network(n_classes=n, width=config.width, seed=seed)
        return model, [fit(model, data.subset(split.train), val, epochs=config.epochs,
                           lr=config.lr, checkpoint_dir=out / "ckpt", **common)]
    if run.model == "TE":
        model = traditional_ensemble(n_networks=len(bags), n_classes=n, width=config.width,
                                     seed=seed)
        if hook is not None:
            hook.esr = model
            common["on_epoch_end"] = hook
        return train_bagging(model, data, bags, val, epochs=config.epochs, lr=config.lr,
                             checkpoint_dir=out / "ckpt", **common)
    model = ESR(arch="lab", level=run.level, n_branches=1, n_classes=n, width=config.width,
                seed=seed)
    if hook is not None:
        hook.esr = model
        common["on_epoch_end"] = hook
    return train_esr(model, data, bags, val, strategy=run.strategy, epochs=config.epochs,
                     lr=config.lr, lr_trained=config.lr_trained, checkpoint_dir=out / "ckpt",
                     **common)


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def run_study(data: FaceDataset, folds: np.ndarray, runs: Sequence[Run], config: Config,
              out_dir: str | Path, *, saliency_images: np.ndarray | None = None,
              milestones: Sequence[int] = (), progress: bool = True) -> StudyResults:
    """Train and test every run, or load it when ``out_dir`` already holds its result.

    Args:
        data: the whole dataset (e.g. synth-lab or CK+ at the study's image size).
        folds: fold id per sample (:func:`fernb.data.splits.esr_subject_folds`).
        runs: from :func:`plan`.
        config: training settings.
        out_dir: one folder per run (result.json, logits, histories, checkpoints); an
            interrupted run resumes from its last finished epoch.
        saliency_images: indices of ``data`` whose maps runs with ``saliency`` record.
        milestones: epochs (1-based, within each added branch) at which maps are drawn.
    """
    folds = np.asarray(folds)
    if len(folds) != len(data):
        raise ValueError(f"folds has {len(folds)} entries for {len(data)} images")
    k = int(folds.max()) + 1
    bad = sorted({r.trial for r in runs if not 0 <= r.trial < k})
    if bad:
        raise ValueError(f"trials {bad} do not exist: there are {k} folds, so trials 0..{k - 1}")
    if config.n_train_folds > k - 2:
        raise ValueError(f"n_train_folds={config.n_train_folds} needs at least "
                         f"{config.n_train_folds + 2} folds; got {k}")
    if milestones and not all(1 <= e <= config.epochs for e in milestones):
        raise ValueError(f"milestones {list(milestones)} must lie in 1..epochs ({config.epochs})")
    trials = esr_trials(folds, config.n_train_folds)
    out_dir = Path(out_dir)
    stored = read_json(out_dir / "config.json")
    if stored is not None and stored != asdict(config):
        raise ValueError(f"{out_dir} holds a study made with other settings ({stored}); use "
                         f"another folder or delete it")
    atomic_write_json(out_dir / "config.json", asdict(config))
    rows, logits, labels, histories, saliency = [], {}, {}, {}, {}
    for run in tqdm(runs, desc="runs", disable=not progress):
        out = out_dir / run.key
        result = read_json(out / "result.json")
        if result is None:
            hook = None
            if run.saliency and saliency_images is not None and milestones:
                imgs, tgts = data.tensors(saliency_images)
                hook = _Milestones(imgs, tgts.numpy(), milestones, out / "saliency.npz")
            start = time.perf_counter()
            split = trials[run.trial]
            model, hist = _train(run, data, folds, split, config, out, hook)
            seconds = time.perf_counter() - start
            test_logits = predict(model, data.subset(split.test), device=config.device).numpy()
            test_labels = data.labels[split.test]
            for i, h in enumerate(hist, start=1):
                atomic_write_text(out / f"history_{i}.csv", h.to_frame().to_csv())
            _save_npz(out / "test.npz", logits=test_logits, labels=test_labels)
            members = (test_logits.argmax(-1) == test_labels[:, None]).mean(0)
            result = {**asdict(run), "key": run.key, "label": run.label,
                      "accuracy": float((plurality_vote(torch.from_numpy(test_logits)).numpy()
                                         == test_labels).mean()),
                      "member_accuracy": members.tolist(), "params": count_parameters(model, trainable_only=False),
                      "train_seconds": round(seconds, 1), "stages": len(hist)}
            atomic_write_json(out / "result.json", result)
        stored = np.load(out / "test.npz")
        logits[run.key], labels[run.key] = stored["logits"], stored["labels"]
        histories[run.key] = [pd.read_csv(out / f"history_{i}.csv")
                              for i in range(1, result["stages"] + 1)]
        if (out / "saliency.npz").exists():
            saliency[run.key] = dict(np.load(out / "saliency.npz"))
        rows.append(result)
    table = pd.DataFrame(rows)
    return StudyResults(table, logits, labels, histories, saliency)
