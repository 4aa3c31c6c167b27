"""The plan: every trained model of the chapter as a stored job (:mod:`fernb.store`), the
functions that train and score them, and the results loaded back from the store.

Regimes (each run is a :class:`Run`):

- ``default``, the paper's in-the-lab protocol scaled down (Tables 4-5): subject-independent
  folds; in each, every variant starts from the same weights (one initialisation seed per
  fold), so the comparison with the baseline is paired by fold.
- ``mechanism``, beyond the paper: the same faces and folds with a distractor cue in an image
  corner whose class agrees with the label with probability ``cue_strength`` on training and
  validation subjects, tested with cues drawn as in training, independent of the label, and
  misleading (:data:`~.data.CUE_CONDITIONS`). The landmark targets are zero on the cue, so a
  map that learned them gives the e-blocks a way to ignore it.
- ``figure``: the fully and weakly supervised variants with the other lambda of Figs. 9-10
  on the first fold; ``gate``: the ``gate_contrast`` variants with the other reading of
  eq. (1) on the first fold, for the training curves of both readings.
- ``pretrain`` and ``transfer``: Table 6's protocol, each variant pre-trained once on a large
  set of other people and fine-tuned on every fold of a small target set.

Every model keeps the epoch with the lowest validation cross-entropy (``select="val_ce"``),
whatever its loss, so variants are selected alike. A job's key holds the precision its
training resolves to here, not the device it runs on (the job's ``runtime``).
"""
from __future__ import annotations

import shutil
import time
from dataclasses import replace
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fernb.data.datasets import DataSpec
from fernb.data.splits import Split
from fernb.data.transforms import RelevanceAugmentation, WarpSets
from fernb.device import computed_precision
from fernb.losses import RelevanceLoss
from fernb.models.relevance import BaselineCNN, RelevanceNet
from fernb.store import Entry, Job, Store
from fernb.train import FitConfig, History, Schedule, adam, fit

from .data import (Prepared, cue_test_sets, fold_splits, pretrain_split, prepared, show_indices,
                   target_splits)
from .scoring import score
from .settings import LABELS, PAPER_SIZE, VAL_FRACTION, Settings

KIND = "relevance.run"


@dataclass(frozen=True)
class Arch:
    """How a variant's network is built: everything its initial weights depend on but the
    seed and the data's classes and channels."""

    variant: str
    image_size: int
    width: float
    n_eblocks: int = 2
    eblock_after: int = 3
    gate: str = "mean"
    map_start: float = 1.0
    map_activation: str = "linear"
    skip_connections: bool = False

    def build(self, n_classes: int, in_chans: int, seed: int) -> nn.Module:
        """The baseline CNN, or the proposed network; the same ``seed`` gives both the same
        representation and classification weights."""
        common = dict(n_classes=n_classes, image_size=self.image_size, in_chans=in_chans,
                      width=self.width, n_eblocks=self.n_eblocks,
                      eblock_after=self.eblock_after, seed=seed)
        if self.variant == "baseline":
            return BaselineCNN(**common)
        return RelevanceNet(gate=self.gate, map_start=self.map_start,
                            map_activation=self.map_activation,
                            skip_connections=self.skip_connections, **common)


@dataclass(frozen=True)
class Run:
    """What a reader calls one trained model: its regime, variant and fold, and ``tag`` for a
    setting that differs from the chapter's (e.g. ``"lambda = 5"``)."""

    regime: str
    variant: str
    fold: int
    tag: str = ""

    @property
    def key(self) -> str:
        tag = f"/{self.tag}" if self.tag else ""
        return f"{self.regime}/f{self.fold}/{self.variant}{tag}"

    @property
    def label(self) -> str:
        return LABELS[self.variant] + (f", {self.tag}" if self.tag else "")


def data_spec(s: Settings, *, cue: bool = False) -> DataSpec:
    """The faces of the default regime (``cue=False``) or of the mechanism regime: the same
    faces with the distractor cue painted at ``cue_strength``."""
    knobs = {"distractor": s.cue_strength} if cue else {}
    if s.dataset in ("synth-lab", "synth-wild"):
        return DataSpec.of(s.dataset, size=s.image_size, n_subjects=s.n_subjects, seed=s.seed,
                           **knobs)
    return DataSpec.of(s.dataset, s.data_root, size=s.image_size)


def wild_specs(s: Settings) -> tuple[DataSpec, DataSpec]:
    """Table 6's pre-training and target sets (other people: another generator seed)."""
    def spec(name: str, root: str, subjects: int, seed: int) -> DataSpec:
        if name in ("synth-lab", "synth-wild"):
            return DataSpec.of(name, size=s.image_size, n_subjects=subjects, seed=seed)
        return DataSpec.of(name, root, size=s.image_size)
    return (spec(s.pretrain_dataset, s.pretrain_root, s.pretrain_subjects, s.seed + 1),
            spec(s.wild_dataset, s.wild_root, s.wild_subjects, s.seed))


def arch(s: Settings, variant: str, gate: str | None = None) -> Arch:
    """The network of ``variant`` under the chapter's choices; ``gate`` overrides the
    reading of eq. (1). A literal gate starts its (linear) map at 1, so the network starts as
    the baseline; a mean-normalised gate starts as the baseline from any constant map. The
    baseline has no map, so the map's settings stay at their defaults in its key."""
    if variant == "baseline":
        return Arch(variant, s.image_size, s.width, s.n_eblocks, s.eblock_after)
    gate = gate or s.gate
    start = 1.0 if gate == "literal" and s.map_activation == "linear" else s.map_start
    return Arch(variant, s.image_size, s.width, s.n_eblocks, s.eblock_after, gate, start,
                s.map_activation, s.skip_connections)


def loss(s: Settings, variant: str, *, lambda_fully: float | None = None,
         lambda_weakly: float | None = None) -> RelevanceLoss | None:
    """Eq. (2) for a variant; None (plain cross-entropy, eq. 3) for the baseline and for the
    map without a map loss. With ``weak_reduction="sum"`` the weakly supervised lambda
    weighs eqs. (6)-(7) summed over a 120 x 120 map: their per-pixel means times 14,400."""
    if variant in ("baseline", "unguided"):
        return None
    pixels = PAPER_SIZE**2 if s.weak_reduction == "sum" else 1
    lam_f = s.lambda_fully if lambda_fully is None else lambda_fully
    lam_w = s.lambda_weakly if lambda_weakly is None else lambda_weakly
    return RelevanceLoss(variant, lambda_fully=lam_f, lambda_weakly=lam_w * pixels,
                         gamma=s.gamma)


def augmentation(s: Settings, with_maps: bool) -> RelevanceAugmentation | None:
    """Eq. (8) then eq. (9) on every training batch, moving the target maps along (zeros
    outside the warped map); the paper's translations of 0-5 px at 120 px scaled to the
    image size."""
    if not s.augment:
        return None
    shift = max(1, round(5 * s.image_size / PAPER_SIZE))
    return RelevanceAugmentation(targets=("label", "map") if with_maps else ("label",),
                                 warp=WarpSets(translations=tuple(range(shift + 1))))


def fit_config(s: Settings, variant: str, epochs: int, **lambdas: float) -> FitConfig:
    """How a variant trains: Adam with the learning rate x ``lr_decay`` per epoch (Sec. IV-A),
    its loss, and the epoch with the lowest validation cross-entropy kept. The device is left
    to the job's ``runtime`` (:func:`_config`); the precision is the one it resolves to."""
    objective = loss(s, variant, **lambdas)
    with_maps = objective is not None and objective.needs_target_maps
    return FitConfig(
        epochs=epochs, optimizer=adam(s.lr, weight_decay=s.weight_decay),
        schedule=Schedule("ExponentialLR", gamma=s.lr_decay), loss=objective,
        forward="forward" if objective is None else "forward_with_map",
        batch_size=s.batch_size, augment=augmentation(s, with_maps), select="val_ce",
        early_stopping=s.patience or None,
        precision=computed_precision(s.precision, s.device), seed=s.seed)


def _config(job: Job) -> FitConfig:
    """The job's training configuration on the device it runs on."""
    return replace(job.spec["fit"], device=job.runtime.get("device", "auto"))


def _fold_job(s: Settings, run: Run, spec: DataSpec, *, gate: str | None = None,
              cues: Mapping[str, Any] | None = None, **lambdas: float) -> Job:
    return Job(KIND, {
        "data": spec, "sigma_fraction": s.sigma_fraction, "n_folds": s.n_folds,
        "fold": run.fold, "split_seed": s.seed, "arch": arch(s, run.variant, gate),
        "init_seed": s.seed * 1000 + run.fold,
        "fit": fit_config(s, run.variant, s.epochs, **lambdas), "cues": cues,
        "n_show": s.n_show, "cam_faces": s.cam_faces}, train_fold, label=f"{run.key}",
               runtime={"device": s.device})


def plan(s: Settings) -> list[tuple[Run, Job]]:
    """Every model the chapter trains, as (run, job) pairs in the order they run."""
    out: list[tuple[Run, Job]] = []
    clean = data_spec(s)
    for fold in range(s.n_folds):
        for variant in s.variants:
            run = Run("default", variant, fold)
            out.append((run, _fold_job(s, run, clean)))
    if "fully" in s.variants:
        run = Run("figure", "fully", 0, f"lambda = {s.lambda_fully_low:g}")
        out.append((run, _fold_job(s, run, clean, lambda_fully=s.lambda_fully_low)))
    if "weakly" in s.variants:
        run = Run("figure", "weakly", 0, f"lambda = {s.lambda_weakly_high:g}")
        out.append((run, _fold_job(s, run, clean, lambda_weakly=s.lambda_weakly_high)))
    other = "literal" if s.gate == "mean" else "mean"
    for variant in s.gate_contrast:
        run = Run("gate", variant, 0, f"{other} gate")
        out.append((run, _fold_job(s, run, clean, gate=other)))
    if s.mechanism_variants:
        cued = data_spec(s, cue=True)
        cues = {"strength": s.cue_strength, "seed": s.seed}
        for fold in range(s.n_folds):
            for variant in s.mechanism_variants:
                run = Run("mechanism", variant, fold)
                out.append((run, _fold_job(s, run, cued, cues=cues)))
    if s.wild_variants:
        source, target = wild_specs(s)
        for variant in s.wild_variants:
            pre = Job("relevance.pretrain", {
                "data": source, "sigma_fraction": s.sigma_fraction, "split_seed": s.seed,
                "arch": arch(s, variant), "init_seed": s.seed * 1000 + 999,
                "fit": fit_config(s, variant, s.pretrain_epochs)}, pretrain,
                label=f"pretrain/{variant}", runtime={"device": s.device})
            out.append((Run("pretrain", variant, -1), pre))
            for fold in range(s.wild_folds):
                run = Run("transfer", variant, fold)
                out.append((run, Job("relevance.finetune", {
                    "data": target, "sigma_fraction": s.sigma_fraction,
                    "n_folds": s.wild_folds, "fold": fold, "split_seed": s.seed,
                    "arch": arch(s, variant), "fit": fit_config(s, variant, s.finetune_epochs),
                    "n_show": s.n_show, "cam_faces": s.cam_faces}, finetune, needs=(pre,),
                    label=run.key, runtime={"device": s.device})))
    return out


# ----------------------------------------------------------------------------- job functions

def _dataset(prep: Prepared, idx: np.ndarray, config: FitConfig) -> TensorDataset:
    parts = [prep.x[idx], torch.from_numpy(prep.labels[idx])]
    if isinstance(config.loss, RelevanceLoss) and config.loss.needs_target_maps:
        if prep.maps is None:
            raise ValueError(f"{config.loss.mode!r} needs target maps (eq. 4), but {prep.name} "
                             f"has no landmarks")
        parts.append(prep.maps[idx])
    return TensorDataset(*parts)


def _train(model: nn.Module, prep: Prepared, split: Split, config: FitConfig,
           entry: Entry) -> History:
    history = fit(model, _dataset(prep, split.train, config), _dataset(prep, split.val, config),
                  config, checkpoint=entry.checkpoint)
    entry.save_frame("history", history.to_frame().reset_index())
    shutil.rmtree(entry.checkpoint, ignore_errors=True)  # the resume state, no longer needed
    return history


def _score_and_store(model: nn.Module, prep: Prepared, spec: DataSpec, split: Split,
                     job: Job, entry: Entry, history: History, seconds: float
                     ) -> dict[str, Any]:
    cues = job.spec.get("cues")
    test = split.test
    if cues is None:
        conditions = {"test": (prep.x[test], None)}
    else:
        conditions = cue_test_sets(spec, test, cues["strength"], cues["seed"])
    show = show_indices(prep, test, job.spec["n_show"])
    config = _config(job)
    arrays, scores, shown = score(model, prep, test, conditions, show,
                                  cam_faces=job.spec["cam_faces"], device=config.device,
                                  precision=config.precision)
    entry.save_arrays("test", **arrays)
    entry.save_frame("scores", scores)
    entry.save_arrays("shown", **shown)
    main = "test" if cues is None else "independent"
    accuracy = float((scores[f"pred_{main}"] == scores["label"]).mean())
    return {"accuracy": accuracy, "best_epoch": history.best_epoch,
            "epochs_run": len(history), "train_seconds": round(seconds, 2)}


def train_fold(job: Job, entry: Entry, store: Store) -> dict[str, Any]:
    """Train one variant on one fold's training subjects (keeping the epoch with the lowest
    validation cross-entropy) and score it on the fold's test subjects."""
    spec = job.spec
    prep = prepared(spec["data"], spec["sigma_fraction"])
    split = fold_splits(prep, spec["n_folds"], seed=spec["split_seed"])[spec["fold"]]
    model = spec["arch"].build(prep.n_classes, prep.in_chans, spec["init_seed"])
    start = time.perf_counter()
    history = _train(model, prep, split, _config(job), entry)
    return _score_and_store(model, prep, spec["data"], split, job, entry, history,
                            time.perf_counter() - start)


def pretrain(job: Job, entry: Entry, store: Store) -> dict[str, Any]:
    """Table 6: pre-train a variant on the large set (80/20 by subject, or its official
    parts) and store its weights."""
    spec = job.spec
    prep = prepared(spec["data"], spec["sigma_fraction"])
    split = pretrain_split(prep, VAL_FRACTION, spec["split_seed"])
    model = spec["arch"].build(prep.n_classes, prep.in_chans, spec["init_seed"])
    history = _train(model, prep, split, _config(job), entry)
    entry.save_state("model", model.state_dict())
    return {"best_epoch": history.best_epoch, "epochs_run": len(history)}


def finetune(job: Job, entry: Entry, store: Store) -> dict[str, Any]:
    """Table 6: fine-tune the pre-trained variant on one split of the small target set and
    score it on the split's test part."""
    spec = job.spec
    (pre,) = job.needs
    source = prepared(pre.spec["data"], pre.spec["sigma_fraction"])
    prep = prepared(spec["data"], spec["sigma_fraction"])
    if source.classes != prep.classes:
        raise ValueError(f"the pre-training classes {source.classes} differ from the target's "
                         f"{prep.classes}; pre-train on a set with the same classes")
    split = target_splits(prep, spec["n_folds"], seed=spec["split_seed"])[spec["fold"]]
    model = spec["arch"].build(prep.n_classes, prep.in_chans, 0)
    model.load_state_dict(store.get(pre).state("model"))
    start = time.perf_counter()
    history = _train(model, prep, split, _config(job), entry)
    return _score_and_store(model, prep, spec["data"], split, job, entry, history,
                            time.perf_counter() - start)


# ----------------------------------------------------------------------------- results

@dataclass
class Results:
    """Every run of the chapter: ``runs`` has one row per :class:`Run` (regime, variant,
    fold, tag, key, label, accuracy, best epoch, seconds, and each per-image score's mean);
    the other mappings are keyed by :attr:`Run.key`: per-epoch histories, test arrays
    (labels, logits per test condition), per-image scores and the shown faces' maps."""

    runs: pd.DataFrame
    histories: dict[str, pd.DataFrame]
    tests: dict[str, dict[str, np.ndarray]]
    scores: dict[str, pd.DataFrame]
    shown: dict[str, dict[str, np.ndarray]]
    classes: tuple[str, ...]
    settings: Settings
    wild_classes: tuple[str, ...] = field(default=())

    def select(self, regime: str, variant: str | None = None) -> pd.DataFrame:
        """The rows of one regime (and variant), ordered by fold."""
        rows = self.runs[self.runs["regime"] == regime]
        if variant is not None:
            rows = rows[rows["variant"] == variant]
        return rows.sort_values("fold", kind="stable")

    def variants(self, regime: str) -> list[str]:
        """The variants a regime ran, in the chapter's order."""
        present = set(self.select(regime)["variant"])
        order = {"default": self.settings.variants, "mechanism": self.settings.mechanism_variants,
                 "transfer": self.settings.wild_variants}.get(regime, sorted(present))
        return [v for v in order if v in present]


def _means(scores: pd.DataFrame) -> dict[str, float]:
    skip = ("index", "label") + tuple(c for c in scores.columns if c.startswith(("pred_", "cue_")))
    return {c: float(np.nanmean(scores[c])) if scores[c].notna().any() else np.nan
            for c in scores.columns if c not in skip}


def load(planned: Sequence[tuple[Run, Job]], store: Store, s: Settings) -> Results:
    """The stored results of every planned run (the store must hold them: :func:`run`)."""
    rows, histories, tests, scores, shown = [], {}, {}, {}, {}
    classes: tuple[str, ...] = ()
    wild: tuple[str, ...] = ()
    for run, job in planned:
        entry = store.get(job)
        record = entry.record
        row = {"regime": run.regime, "variant": run.variant, "fold": run.fold, "tag": run.tag,
               "key": run.key, "label": run.label, "seconds": record["seconds"], **record["summary"]}
        histories[run.key] = entry.frame("history")
        if run.regime != "pretrain":
            tests[run.key] = entry.arrays("test")
            scores[run.key] = entry.frame("scores")
            shown[run.key] = entry.arrays("shown")
            row.update(_means(scores[run.key]))
            names = tuple(str(c) for c in tests[run.key]["classes"])
            if run.regime == "transfer":
                wild = names
            else:
                classes = names
        rows.append(row)
    return Results(pd.DataFrame(rows), histories, tests, scores, shown, classes, s, wild)


def run(s: Settings, store: Store) -> Results:
    """Train (or reuse from ``store``) every model of the chapter and load the results."""
    planned = plan(s)
    store.run([job for _, job in planned])
    return load(planned, store, s)

