"""ESR's experiments (Siqueira, Magg and Wermter, AAAI 2020), as chapter 1 runs them.

In the lab ("Redundancy and Diversity Analysis"): for each subject-independent trial
(:func:`fernb.data.splits.esr_trials`) the study trains the single network (on all training
folds), the traditional ensemble (bagging: each network on the training folds less one) and
ESR-4 grown by Algorithm 1 at each branching level and with each treatment of already-trained
parts, then scores every model on the test fold with the plurality vote (Fig. 4, Tables 1 and
2). For chosen runs it also records Grad-CAM maps of the newest branch at training milestones
(Fig. 5, right), and, as a control, trains the same ESR with every added branch starting from
one identical draw, to show what distinct initialisations add.

In the wild: ESR-9 on an in-the-wild set (AffectNet in the paper), grown branch by branch on
class-balanced subsets, then its valence/arousal heads fine-tuned (Tables 3-4).

Every finished run is stored (its ``result.json`` written last) and an interrupted study
resumes; a run whose stored artifacts are incomplete is trained again.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import ClassVar
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from fernb.complexity import count_parameters
from fernb.data.datasets import FaceDataset
from fernb.data.splits import Split, esr_trials, leave_one_fold_out, standard_split
from fernb.data.transforms import AUGMENTATIONS, BatchAugmentation
from fernb.ensemble import DIVERSITY_LABELS, diversity, plurality_vote
from fernb.evaluate import accuracy, accuracy_table, aggregate_folds, paired_ttest, predict, rmse
from fernb.explain import chance_level, evidence_score, gradcam
from fernb.io import atomic_savez, atomic_write_json, atomic_write_text, read_json
from fernb.models.esr import ESR, single_network, traditional_ensemble
from fernb.params import (LEARNING_RATE, POSITIVE_INT, ChapterSettings, Choice, DatasetName, ListOf,
                          MappingOf, Range, Relation, Unused, dataset_rules, param, relation)
from fernb.report import Claim
from fernb.train import (STRATEGIES, FitConfig, History, Schedule, balanced_subset,
                         finetune_affect, fit, quadrants, sgd, train_bagging, train_esr)

LAB_DATASETS = ("synth-lab", "synth-wild", "ckplus", "jaffe", "folder")
# In-the-wild sets for ESR-9; the affect fine-tuning runs where they have valence/arousal.
WILD_DATASETS = ("synth-wild", "affectnet", "ferplus", "rafdb", "sfew", "fer2013", "folder")
_LAB_RELATIONS, _LAB_UNUSED = dataset_rules("dataset", "data_root", ("n_subjects",))
_WILD_RELATIONS, _WILD_UNUSED = dataset_rules("wild_dataset", "wild_root", ("wild_subjects",))


def _saliency_example(grid: Mapping[str, Sequence[int]]) -> str:
    options = [f"[{s}, {lv[0]}]" for s, lv in grid.items() if s != "interleaved" and lv]
    return options[0] if options else "[varied, 3]"


def _saliency_ok(v: Mapping) -> bool:
    run = v["saliency_run"]
    return (isinstance(run, (list, tuple)) and len(run) == 2 and run[0] != "interleaved"
            and run[1] in v["grid"].get(run[0], ()))


@dataclass(frozen=True)
class Settings(ChapterSettings):
    """The chapter's parameters (``notebooks/01_esr.ipynb``); defaults are the ``cpu``
    profile."""

    dataset: str = param("synth-lab", DatasetName(LAB_DATASETS),
                         'or a real dataset, e.g. "ckplus" (set data_root)')
    data_root: str = param("", None, "folder of a real dataset")
    n_subjects: int = param(40, Range(4, 10_000, integer=True), "synthetic subjects (CK+ has 123)")
    image_size: int = param(48, Range(48, 224, integer=True), "paper: 96")
    width: float = param(0.25, Range(0, 4, open_low=True),
                         "channel multiplier, 1.0 is the paper network")
    n_folds: int = param(6, Range(3, 100, integer=True), "subject-independent folds (paper: 10)")
    n_train_folds: int = param(4, POSITIVE_INT,
                               "training folds per trial (paper: 4), one bag per branch")
    trials: list[int] = param([0, 1, 2], ListOf(Range(0, integer=True), unique=True),
                              "test folds to run (paper: all ten)")
    grid: dict[str, list[int]] = param(
        {"varied": [3, 4, 5], "frozen": [3], "interleaved": [3]},
        MappingOf(Choice(*STRATEGIES), ListOf(Range(1, 5, integer=True), unique=True)),
        "strategy -> branching levels of the ESR-4 runs (paper: every level, varied)")
    epochs: int = param(6, POSITIVE_INT, "epochs per added branch or network")
    lr: float = param(0.05, LEARNING_RATE, "paper: 0.1")
    lr_trained: float = param(0.01, LEARNING_RATE,
                              "trained branches under the varied strategy (paper: 0.02)")
    lr_step: int = param(250, POSITIVE_INT,
                         "epochs between halvings of the learning rate (paper: 250)")
    batch_size: int = param(64, POSITIVE_INT, "mini-batch size (paper: 32)")
    augment: str = param("flip", Choice(*AUGMENTATIONS),
                         '"esr" is the paper augmentation (rotation, scale, jitter, flip)')
    milestones: list[int] = param([1, 3, 6], ListOf(POSITIVE_INT, unique=True),
                                  "epochs of a new branch at which saliency maps are drawn")
    saliency_run: list[str | int] = param(["varied", 3], None,
                                          "[strategy, level] of the ESR whose maps are drawn")
    wild_dataset: str = param("synth-wild", DatasetName(WILD_DATASETS),
                              'ESR-9 data; the paper uses "affectnet" (set wild_root)')
    wild_root: str = param("", None, "folder of the real in-the-wild dataset")
    wild_subjects: int = param(60, Range(4, 10_000, integer=True), "synth-wild subjects for ESR-9")
    wild_size: int = param(64, Range(56, 224, integer=True), "paper: 96")
    wild_width: float = param(0.125, Range(0, 4, open_low=True), "paper: 1.0")
    wild_branches: int = param(4, Range(1, 32, integer=True), "paper: 9")
    wild_per_class: int = param(150, POSITIVE_INT, "balanced subsets of up to this many "
                                "images per class (paper: 5000)")
    wild_epochs_first: int = param(8, POSITIVE_INT,
                                   "epochs of the first branch (authors' code: 50)")
    wild_epochs: int = param(8, POSITIVE_INT, "epochs of each later branch (authors' code: 20)")
    wild_lr: float = param(0.1, LEARNING_RATE, "paper: 0.1")
    wild_lr_trained: float = param(0.01, LEARNING_RATE, "trained branches (paper: 0.01)")
    wild_lr_step: int = param(10, POSITIVE_INT,
                              "epochs between halvings of the learning rate (paper: 10)")
    wild_augment: str = param("flip", Choice(*AUGMENTATIONS), 'paper: "esr"')
    affect_epochs: int = param(2, POSITIVE_INT,
                               "epochs per valence/arousal head (paper: not given)")

    RELATIONS: ClassVar[Sequence[Relation]] = (
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
                           f"time (not 'interleaved'), e.g. -p saliency_run "
                           f"\"{_saliency_example(v['grid'])}\""),
    )
    UNUSED: ClassVar[Sequence[Unused]] = (*_LAB_UNUSED, *_WILD_UNUSED)

INITS = ("own", "same")


@dataclass(frozen=True)
class Run:
    """One model trained and tested in one trial; ``init="same"`` is the control whose
    added branches all start from one identical draw."""

    trial: int
    model: str
    level: int = 0
    strategy: str = "-"
    saliency: bool = False
    init: str = "own"

    @property
    def key(self) -> str:
        if self.model == "ESR":
            suffix = "" if self.init == "own" else f"-{self.init}-init"
            return f"t{self.trial}-ESR-L{self.level}-{self.strategy}{suffix}"
        return f"t{self.trial}-{self.model}"

    @property
    def label(self) -> str:
        if self.model == "ESR":
            suffix = "" if self.init == "own" else ", identical starts"
            return f"ESR-4 Lvl. {self.level} ({self.strategy}{suffix})"
        return {"single": "Single network", "TE": "Traditional ensemble"}[self.model]


@dataclass(frozen=True)
class Config:
    """Training settings shared by every run (paper: SGD, momentum 0.9, lr 0.1, trained
    branches 0.02 under "varied", lr halved every 250 epochs, ESR's augmentation)."""

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> Config:
        """The settings from the chapter's parameters."""
        return cls(**{f: params[f] for f in cls.__dataclass_fields__ if f in params})

    epochs: int
    lr: float = 0.1
    lr_trained: float = 0.02
    lr_step: int | None = 250
    batch_size: int = 32
    width: float = 1.0
    n_train_folds: int = 4
    augment: str = "esr"
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0


def plan(trials: Sequence[int], grid: Mapping[str, Sequence[int]], *,
         saliency: tuple[str, int] | None = None, init_control: bool = False) -> list[Run]:
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
    if saliency is not None and saliency[1] not in grid.get(saliency[0], ()):
        raise ValueError(f"saliency run {saliency} is not in the grid {dict(grid)}")
    if saliency is not None and saliency[0] == "interleaved":
        raise ValueError("saliency milestones need branches added one at a time; choose a "
                         "strategy other than 'interleaved'")
    if init_control and saliency is None:
        raise ValueError("init_control compares the saliency run's ESR: give saliency=")
    runs = []
    for i, t in enumerate(trials):
        first = i == 0 and saliency is not None
        runs += [Run(t, "single"), Run(t, "TE", saliency=first)]
        runs += [Run(t, "ESR", lv, s, saliency=first and (s, lv) == tuple(saliency))
                 for s, lvs in grid.items() for lv in lvs]
        if init_control:
            runs.append(Run(t, "ESR", saliency[1], saliency[0], init="same"))
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


def milestone_keys(n_stages: int, milestones: Sequence[int]) -> list[str]:
    """The maps a saliency run records: ``stage{b}_epoch{e}``."""
    return [f"stage{b}_epoch{e}" for b in range(1, n_stages + 1) for e in milestones]


class _Milestones:
    """``on_epoch_end`` hook: Grad-CAM of the newest branch/network at chosen epochs."""

    def __init__(self, images: torch.Tensor, targets: np.ndarray, epochs: Sequence[int]
                 ) -> None:
        self.images, self.targets, self.epochs = images, targets, set(epochs)
        self.esr: ESR | None = None  # the model whose branches are being trained
        self.maps: dict[str, np.ndarray] = {}

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


def _train(run: Run, data: FaceDataset, folds: np.ndarray, split: Split, config: Config,
           out: Path, hook: _Milestones | None) -> tuple[nn.Module, list[History]]:
    # One initialisation seed per trial: member b of every model of a trial starts from the
    # same network b (ESR's branch b holds the unshared layers of TE network b), so an ESR
    # with one branch is exactly the single network (paper Fig. 5), resumed or not.
    seed = config.seed * 1000 + run.trial
    bags = leave_one_fold_out(split, folds)
    val = data.subset(split.val)
    fit_config = FitConfig(
        epochs=config.epochs, optimizer=sgd(config.lr), batch_size=config.batch_size,
        device=config.device, precision=config.precision, seed=config.seed,
        augment=BatchAugmentation(config.augment, data.image_size[0]),
        schedule=Schedule("StepLR", step_size=config.lr_step, gamma=0.5)
        if config.lr_step else None)
    n = data.n_classes
    if run.model == "single":
        model = single_network(n_classes=n, width=config.width, seed=seed)
        return model, [fit(model, data.subset(split.train), val, fit_config,
                           checkpoint=out / "ckpt")]
    if run.model == "TE":
        model = traditional_ensemble(n_networks=len(bags), n_classes=n, width=config.width,
                                     seed=seed)
        if hook is not None:
            hook.esr = model
        return train_bagging(model, data, bags, val, fit_config, checkpoint=out / "ckpt",
                             on_epoch_end=hook)
    model = ESR(arch="lab", level=run.level, n_branches=1, n_classes=n, width=config.width,
                seed=seed)
    if hook is not None:
        hook.esr = model
    return train_esr(model, data, bags, val, fit_config, strategy=run.strategy,
                     lr_trained=config.lr_trained, init="fresh" if run.init == "own" else "same",
                     checkpoint=out / "ckpt", on_epoch_end=hook)


def _complete(out: Path, run: Run, needed_maps: Sequence[str]) -> dict | None:
    """The stored result of a run if every artifact it needs is on disk, else None."""
    result = read_json(out / "result.json")
    if result is None or not (out / "test.npz").exists():
        return None
    if any(not (out / f"history_{i}.csv").exists() for i in range(1, result["stages"] + 1)):
        return None
    if needed_maps:
        path = out / "saliency.npz"
        if not path.exists() or set(needed_maps) - set(np.load(path).files):
            return None
    return result


def _discard(out: Path) -> None:
    """Forget a run whose artifacts are incomplete: its result record and its checkpoints
    (a finished checkpoint would skip the epochs whose maps are missing)."""
    (out / "result.json").unlink(missing_ok=True)
    for ckpt in (out / "ckpt").rglob("last.pt") if (out / "ckpt").exists() else ():
        ckpt.unlink()


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
            interrupted run resumes from its last finished epoch, and a run whose stored
            artifacts are incomplete is trained again.
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
        record = run.saliency and saliency_images is not None and bool(milestones)
        needed = milestone_keys(config.n_train_folds, milestones) if record else []
        result = _complete(out, run, needed)
        if result is None:
            _discard(out)
            hook = None
            if record:
                imgs, tgts = data.tensors(saliency_images)
                hook = _Milestones(imgs, tgts.numpy(), milestones)
            split = trials[run.trial]
            model, hist = _train(run, data, folds, split, config, out, hook)
            test_logits = predict(model, data.subset(split.test), device=config.device,
                                  precision=config.precision).numpy()
            test_labels = data.labels[split.test]
            for i, h in enumerate(hist, start=1):
                atomic_write_text(out / f"history_{i}.csv", h.to_frame().to_csv())
            atomic_savez(out / "test.npz", logits=test_logits, labels=test_labels)
            if hook is not None:
                atomic_savez(out / "saliency.npz", **hook.maps)
            members = (test_logits.argmax(-1) == test_labels[:, None]).mean(0)
            result = {**asdict(run), "key": run.key, "label": run.label,
                      "accuracy": float((plurality_vote(torch.from_numpy(test_logits)).numpy()
                                         == test_labels).mean()),
                      "member_accuracy": members.tolist(),
                      "params": count_parameters(model, trainable_only=False),
                      # summed over epochs, so a resumed run counts its earlier epochs too
                      "train_seconds": round(float(sum(h.to_frame()["seconds"].sum()
                                                       for h in hist)), 1),
                      "stages": len(hist)}
            atomic_write_json(out / "result.json", result)  # last: the run is complete
        stored_test = np.load(out / "test.npz")
        logits[run.key], labels[run.key] = stored_test["logits"], stored_test["labels"]
        histories[run.key] = [pd.read_csv(out / f"history_{i}.csv")
                              for i in range(1, result["stages"] + 1)]
        if (out / "saliency.npz").exists():
            saliency[run.key] = dict(np.load(out / "saliency.npz"))
        rows.append(result)
    table = pd.DataFrame(rows)
    return StudyResults(table, logits, labels, histories, saliency)


def saliency_images(data: FaceDataset, folds: np.ndarray, trial: int, n_train_folds: int
                    ) -> np.ndarray:
    """Indices of the test faces whose maps the saliency runs record: the last happiness and
    the last fear face of the trial's test fold (or its first two faces)."""
    test = esr_trials(folds, n_train_folds)[trial].test
    wanted = [data.classes.index(c) for c in ("happiness", "fear") if c in data.classes]
    picks = [test[data.labels[test] == c][-1] for c in wanted if np.any(data.labels[test] == c)]
    return np.array(picks or test[:2])


# ----------------------------------------------------------------------- reading the study

def pooled(results: StudyResults, saliency_run: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Test logits and labels of one ESR configuration, all trials together."""
    strategy, level = saliency_run
    keys = [k for k in results.table["key"] if k.endswith(f"-ESR-L{level}-{strategy}")]
    return (np.concatenate([results.logits[k] for k in keys]),
            np.concatenate([results.labels[k] for k in keys]))


def accuracy_runs(results: StudyResults) -> pd.DataFrame:
    """One row per run: trial, model, level, strategy, init, label, accuracy (%), trainable
    parameters and training seconds."""
    table = results.table.assign(accuracy=lambda d: 100 * d["accuracy"])
    return table[["trial", "model", "level", "strategy", "init", "label", "accuracy", "params",
                  "train_seconds"]]


def by_level(results: StudyResults) -> pd.DataFrame:
    """Mean and std (over trials) of ESR-4's accuracy (%) per strategy and level (Fig. 4);
    the std is 0 where there is one trial."""
    runs = accuracy_runs(results)
    esr = runs[(runs["model"] == "ESR") & (runs["init"] == "own")]
    table = esr.groupby(["strategy", "level"])["accuracy"].agg(["mean", "std"]).reset_index()
    return table.fillna({"std": 0.0})


def approaches(results: StudyResults, strategy: str) -> dict[str, pd.DataFrame]:
    """The runs of Table 1's approaches: single network, TE and ESR-4 at levels 3 and 4
    under ``strategy`` (the levels the grid holds)."""
    runs = accuracy_runs(results)
    own = runs[runs["init"] == "own"]
    picked = {"Single network": own[own["model"] == "single"],
              "Traditional ensemble": own[own["model"] == "TE"]}
    for level in (3, 4):
        rows = own[(own["model"] == "ESR") & (own["strategy"] == strategy)
                   & (own["level"] == level)]
        if len(rows):
            picked[f"ESR-4 Lvl. {level}"] = rows
    return picked


def table1(results: StudyResults, strategy: str, params: Mapping[str, int]) -> pd.DataFrame:
    """Table 1: accuracy (%) mean ± std over trials and the paper network's parameters."""
    picked = approaches(results, strategy)
    long = pd.concat([d.assign(approach=name) for name, d in picked.items()])
    table = aggregate_folds(long, by="approach", value="accuracy", decimals=1)
    table.insert(0, "parameters (paper network)", [int(params[n]) for n in table.index])
    return table[["parameters (paper network)", "mean ± std", "n"]].rename(
        columns={"mean ± std": "test accuracy (%)", "n": "trials"})


def table2(results: StudyResults, strategy: str) -> pd.DataFrame:
    """Table 2: paired t-tests between the approaches over the trials (empty with one)."""
    from fernb.evaluate import ttest_table
    scores = {n: d.sort_values("trial")["accuracy"].to_numpy()
              for n, d in approaches(results, strategy).items()}
    if len(next(iter(scores.values()))) < 2:
        return pd.DataFrame()
    return ttest_table(scores)


def diversity_table(results: StudyResults, strategy: str) -> pd.DataFrame:
    """Mean pairwise diversity of the members of each ensemble over the trials (Kuncheva &
    Whitaker: disagreement, Q-statistic, double fault) and its oracle accuracy."""
    rows = []
    for name, d in approaches(results, strategy).items():
        if name == "Single network":
            continue
        for key in results.table.loc[d.index, "key"]:
            rows.append({"ensemble": name, **diversity(results.logits[key], results.labels[key])})
    return _finite(pd.DataFrame(rows).groupby("ensemble", sort=False).mean(numeric_only=True))


def _finite(table: pd.DataFrame) -> pd.DataFrame:
    """Plain column names, accuracies (%) to 1 decimal and the rest to 3; an undefined
    value (e.g. a Q-statistic of members that are never both wrong) is shown as "-"."""
    table = table.rename(columns=DIVERSITY_LABELS)
    rounded = table.round({c: 1 if "%" in c else 3 for c in table.columns})
    return rounded.astype(object).where(table.notna(), "-")


def init_control(results: StudyResults, saliency_run: Sequence) -> pd.DataFrame:
    """The saliency run's ESR with its added branches from distinct draws (the book's
    default) against the same ESR whose added branches start from one identical draw:
    accuracy and member diversity, mean over trials."""
    strategy, level = saliency_run
    rows = []
    for _, run in results.table.iterrows():
        if run["model"] != "ESR" or run["strategy"] != strategy or run["level"] != level:
            continue
        rows.append({"initialisation of added branches": {
                        "own": "own draw per branch", "same": "one identical draw"}[run["init"]],
                     "accuracy (%)": 100 * run["accuracy"],
                     **diversity(results.logits[run["key"]], results.labels[run["key"]])})
    table = pd.DataFrame(rows).groupby("initialisation of added branches", sort=False).mean()
    return _finite(table)


def convergence(results: StudyResults, trial: int, saliency_run: Sequence
                ) -> pd.DataFrame:
    """Validation accuracy (%) per epoch of each newly added ESR branch and TE network in
    one trial (Fig. 5, left): columns epoch, member, model, accuracy."""
    strategy, level = saliency_run
    esr_key, te_key = f"t{trial}-ESR-L{level}-{strategy}", f"t{trial}-TE"
    curves = []
    for b, frame in enumerate(results.histories[esr_key], start=1):
        curves.append(frame.assign(member=f"branch/network {b}", model="ESR",
                                   accuracy=100 * frame[f"val_acc_{b}"]))
    for b, frame in enumerate(results.histories[te_key], start=1):
        curves.append(frame.assign(member=f"branch/network {b}", model="TE",
                                   accuracy=100 * frame["val_acc_1"]))
    return pd.concat(curves)[["epoch", "member", "model", "accuracy"]]


def cost_table(timing: pd.DataFrame) -> pd.DataFrame:
    """:func:`fernb.complexity.measured_cost` for a reader: time per image of a training step
    and of inference as "median (range)" ratios to the reference, next to the FLOPs and
    parameter ratios."""
    def cell(kind: str) -> list[str]:
        return [f"{m:.2f} ({r})" for m, r in zip(timing[f"{kind}_time_ratio"],
                                                 timing[f"{kind}_ratio_range"])]
    return pd.DataFrame({"training time": cell("train"), "inference time": cell("inference"),
                         "FLOPs": timing["flops_ratio"].round(2),
                         "parameters": timing["params_ratio"].round(2)}, index=timing.index)


def first_update(curves: pd.DataFrame) -> pd.DataFrame:
    """Validation accuracy (%) after the first epoch of each added member, ESR vs TE, and
    their ratio (the paper: "twice as accurate")."""
    first = curves[curves["epoch"] == 1].pivot(index="member", columns="model",
                                               values="accuracy")
    first["ESR / TE"] = first["ESR"] / first["TE"].where(first["TE"] > 0)
    return first


def evidence_table(results: StudyResults, masks: np.ndarray, trial: int,
                   saliency_run: Sequence, n_stages: int, milestones: Sequence[int]
                   ) -> pd.DataFrame:
    """Share of each milestone map's mass inside the images' evidence regions (mean over the
    images), per model, member and epoch, next to chance (a uniform map's score). An empty
    map (no positive evidence for the class) has no score and shows "-"."""
    strategy, level = saliency_run
    rows = []
    for name, key in (("ESR", f"t{trial}-ESR-L{level}-{strategy}"), ("TE", f"t{trial}-TE")):
        for key_map in milestone_keys(n_stages, milestones):
            stage, epoch = (int(x) for x in key_map.removeprefix("stage").split("_epoch"))
            scores = np.asarray(evidence_score(results.saliency[key][key_map], masks))
            scores = scores[np.isfinite(scores)]
            rows.append({"model": name, "member": stage, "epoch": epoch,
                         "score": float(scores.mean()) if len(scores) else np.nan})
    table = pd.DataFrame(rows).pivot_table(index=["model", "member"], columns="epoch",
                                           values="score", dropna=False)
    table.columns = [f"epoch {e}" for e in table.columns]
    table["chance"] = float(np.mean(chance_level(masks)))
    return _finite(table)


# ----------------------------------------------------------------------- ESR-9 in the wild

@dataclass(frozen=True)
class WildConfig:
    """ESR-9's schedule (paper, "Evaluation on the AffectNet Dataset", and the authors'
    code): SGD with momentum 0.9, lr 0.1 halved every 10 epochs, trained branches at 0.01,
    ESR's augmentation, 50 epochs for the first branch and 20 for each later one; affect
    heads at 0.01 (trained heads 0.001)."""

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> WildConfig:
        """The settings from the chapter's ``wild_*`` parameters (and batch size, device,
        seed)."""
        names = {"n_branches": "wild_branches", "per_class": "wild_per_class",
                 "affect_epochs": "affect_epochs", "batch_size": "batch_size",
                 "device": "device", "precision": "precision", "seed": "seed"}
        return cls(**{f: params[names.get(f, f"wild_{f}")] for f in cls.__dataclass_fields__
                      if names.get(f, f"wild_{f}") in params})

    n_branches: int = 9
    width: float = 1.0
    per_class: int = 5000
    epochs_first: int = 50
    epochs: int = 20
    lr: float = 0.1
    lr_trained: float = 0.01
    lr_step: int = 10
    augment: str = "esr"
    affect_epochs: int = 20
    batch_size: int = 32
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0


@dataclass
class WildResults:
    """ESR-9's test logits (N, M, C) and labels, per-member and ensemble accuracy (%), the
    valence/arousal RMSE table (empty for a dataset without valence/arousal) and the model."""

    logits: torch.Tensor
    labels: np.ndarray
    members: pd.DataFrame
    rmse: pd.DataFrame
    model: ESR = field(repr=False)


def run_wild(data: FaceDataset, config: WildConfig, out_dir: str | Path) -> WildResults:
    """Grow ESR-9 on class-balanced subsets of the training part of ``data`` (its official
    partition, else a subject-independent holdout; Algorithm 1, "varied"), then, where the
    data has valence/arousal, fine-tune its affect heads branch by branch on quadrant-balanced
    subsets; checkpoints in ``out_dir`` make an interrupted run resume."""
    split = standard_split(data.labels, data.subjects, data.split, seed=config.seed)
    train, val, test = (data.subset(i) for i in (split.train, split.val, split.test))
    out_dir = Path(out_dir)
    subsets = [balanced_subset(train.labels, config.per_class, seed=config.seed + b)
               for b in range(config.n_branches)]
    esr9 = ESR(arch="wild", n_branches=1, n_classes=train.n_classes, width=config.width,
               seed=config.seed)
    fit_config = FitConfig(epochs=config.epochs, optimizer=sgd(config.lr),
                           batch_size=config.batch_size, device=config.device,
                           precision=config.precision, seed=config.seed)
    esr9, _ = train_esr(esr9, train, subsets, val, fit_config.replace(
                            schedule=Schedule("StepLR", step_size=config.lr_step, gamma=0.5),
                            augment=BatchAugmentation(config.augment, train.image_size[0])),
                        strategy="varied",
                        epochs=[config.epochs_first] + [config.epochs] * (config.n_branches - 1),
                        lr_trained=config.lr_trained, checkpoint=out_dir / "emotion")
    logits = predict(esr9, test, device=config.device, precision=config.precision)
    members = accuracy_table(logits, test.labels, rules=("plurality",),
                             member_names=[f"branch {b + 1}" for b in range(config.n_branches)])
    members = members.assign(accuracy=lambda d: (100 * d["accuracy"]).round(1))
    if train.valence_arousal is None:
        return WildResults(logits, test.labels, members, pd.DataFrame(), esr9)
    quadrant_subsets = [balanced_subset(quadrants(train.valence_arousal), config.per_class,
                                        seed=config.seed + b) for b in range(config.n_branches)]
    esr9, _ = finetune_affect(esr9, train.with_options(target="valence_arousal"),
                              quadrant_subsets, val.with_options(target="valence_arousal"),
                              fit_config.replace(epochs=config.affect_epochs,
                                                 optimizer=sgd(0.01)),
                              lr_trained=0.001, checkpoint=out_dir / "affect")
    affect = predict(esr9, test, device=config.device, precision=config.precision,
                     output="forward_affect")
    rows = {"ESR-9 (mean of branches)": rmse(affect, test.valence_arousal)}
    rows |= {f"branch {m + 1}": rmse(affect[:, m], test.valence_arousal)
             for m in range(affect.shape[1])}
    rows["predict the training mean"] = rmse(
        np.broadcast_to(train.valence_arousal.mean(0), test.valence_arousal.shape),
        test.valence_arousal)
    return WildResults(logits, test.labels, members, pd.DataFrame(rows).T.round(3), esr9)


# ----------------------------------------------------------------------- paper vs this book

T2_PAIRS = {("Single network", "Traditional ensemble"): "ttest_single_te",
            ("Single network", "ESR-4 Lvl. 3"): "ttest_single_lvl3",
            ("Single network", "ESR-4 Lvl. 4"): "ttest_single_lvl4",
            ("Traditional ensemble", "ESR-4 Lvl. 3"): "ttest_te_lvl3",
            ("Traditional ensemble", "ESR-4 Lvl. 4"): "ttest_te_lvl4",
            ("ESR-4 Lvl. 3", "ESR-4 Lvl. 4"): "ttest_lvl3_lvl4"}


def _means(results: StudyResults, strategy: str) -> dict[str, float]:
    return {n: float(d["accuracy"].mean()) for n, d in approaches(results, strategy).items()}


def _best_level(results: StudyResults, strategy: str) -> int | None:
    levels = by_level(results)
    levels = levels[levels["strategy"] == strategy]
    return int(levels.loc[levels["mean"].idxmax(), "level"]) if len(levels) else None


def measured(results: StudyResults, strategy: str, cost: pd.DataFrame, first: pd.DataFrame,
             wild: WildResults, esr9_params: int) -> dict[str, float | int]:
    """This run's values for :func:`fernb.report.paper_vs_book` ("esr")."""
    means = _means(results, strategy)
    values: dict[str, float | int] = {
        "single_params": int(cost.loc["Single network", "params"]),
        "te_params": int(cost.loc["Traditional ensemble", "params"]),
        "esr4_lvl3_params": int(cost.loc["ESR-4 Lvl. 3", "params"]),
        "esr4_lvl4_params": int(cost.loc["ESR-4 Lvl. 4", "params"]),
        "lvl3_param_reduction": round(100 * (1 - cost.loc["ESR-4 Lvl. 3", "params_ratio"]), 1),
        "lvl4_param_reduction": round(100 * (1 - cost.loc["ESR-4 Lvl. 4", "params_ratio"]), 1),
        "esr9_params_millions": round(esr9_params / 1e6, 2),
    }
    names = {"Single network": "single_accuracy", "Traditional ensemble": "te_accuracy",
             "ESR-4 Lvl. 3": "esr4_lvl3_accuracy", "ESR-4 Lvl. 4": "esr4_lvl4_accuracy"}
    values |= {key: round(means[n], 1) for n, key in names.items() if n in means}
    ratio = first["ESR / TE"].iloc[1:].dropna()
    if len(ratio):
        values["first_update_ratio"] = round(float(ratio.mean()), 2)
    best = _best_level(results, strategy)
    if best is not None and len(by_level(results).query("strategy == @strategy")) > 1:
        values["best_branching_level"] = best
    scores = {n: d.sort_values("trial")["accuracy"].to_numpy()
              for n, d in approaches(results, strategy).items()}
    if len(next(iter(scores.values()))) > 1:
        values |= {key: round(paired_ttest(scores[a], scores[b]).p, 3)
                   for (a, b), key in T2_PAIRS.items() if a in scores and b in scores}
    member_acc = wild.members.loc[wild.members["kind"] == "member", "accuracy"]
    values |= {"esr9_affectnet_accuracy": round(100 * accuracy(wild.logits, wild.labels,
                                                               rule="plurality"), 1),
               "esr9_affectnet_best_branch": float(member_acc.max())}
    if len(wild.rmse):
        mean = wild.rmse.loc["ESR-9 (mean of branches)"]
        values |= {"esr9_rmse_valence": float(mean["valence"]),
                   "esr9_rmse_arousal": float(mean["arousal"])}
    return values


def claims(results: StudyResults, strategy: str, first: pd.DataFrame,
           wild: WildResults) -> list[Claim]:
    """The paper's claims, each checked on this run."""
    means = _means(results, strategy)
    single = means["Single network"]
    levels = by_level(results)
    at3 = levels[levels["level"] == 3].set_index("strategy")["mean"]
    t2 = table2(results, strategy)
    p_te3 = None
    if len(t2) and "Traditional ensemble" in t2.index and "ESR-4 Lvl. 3" in t2.columns:
        p_te3 = float(t2.loc["Traditional ensemble", "ESR-4 Lvl. 3"])
    ratio = first["ESR / TE"].iloc[1:].dropna()
    members = wild.members[wild.members["kind"] == "member"]["accuracy"]
    ens = float(wild.members[wild.members["kind"] == "ensemble"]["accuracy"].iloc[0])
    rm = wild.rmse
    others = {n: v for n, v in means.items() if n != "Single network"}
    return [
        Claim("ensembles beat the single network", "Table 1",
              all(v > single for v in others.values()),
              ", ".join(f"{n} {v:.1f}" for n, v in means.items())),
        Claim("ESR-4 Lvl. 3 is at least as accurate as the traditional ensemble", "Table 1",
              None if "ESR-4 Lvl. 3" not in means
              else means["ESR-4 Lvl. 3"] >= means["Traditional ensemble"],
              "" if "ESR-4 Lvl. 3" not in means else
              f"{means['ESR-4 Lvl. 3']:.1f} vs {means['Traditional ensemble']:.1f}"),
        Claim("ESR-4 Lvl. 3 and the traditional ensemble do not differ significantly",
              "Table 2", None if p_te3 is None else p_te3 > 0.05,
              "" if p_te3 is None else f"p = {p_te3:.3f}"),
        Claim("interleaved training is the weakest strategy at level 3", "Fig. 4",
              None if "interleaved" not in at3 or len(at3) < 2
              else at3.idxmin() == "interleaved",
              ", ".join(f"{s} {v:.1f}" for s, v in at3.items())),
        Claim("a new ESR branch is more accurate than a new TE network after one epoch",
              "Fig. 5", None if not len(ratio) else float(ratio.mean()) > 1,
              "" if not len(ratio) else f"mean ESR / TE ratio {ratio.mean():.2f}"),
        Claim("the ESR-9 ensemble beats every single branch", "Sec. AffectNet",
              ens > float(members.max()), f"ensemble {ens:.1f}, best branch {members.max():.1f}"),
        Claim("ESR-9 predicts valence and arousal better than the training mean", "Table 4",
              None if not len(rm) else float(rm.loc["ESR-9 (mean of branches)"].mean())
              < float(rm.loc["predict the training mean"].mean()),
              "no valence/arousal labels" if not len(rm) else
              f"RMSE {rm.loc['ESR-9 (mean of branches)'].mean():.3f} vs "
              f"{rm.loc['predict the training mean'].mean():.3f}"),
    ]
