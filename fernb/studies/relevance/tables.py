"""The chapter's tables, numeric until :meth:`fernb.report.Report.table` formats them: what the
cpu profile scales down, parameter counts, the size of each loss term, accuracies with their
paired tests, did-it-learn checks, map statistics and scores, and the mechanism regime's
shortcut table."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from fernb.complexity import count_parameters
from fernb.evaluate import TestResult, normalized_confusion, paired_ttest
from fernb.explain import evidence_score, pointing_game
from fernb.losses import relevance_contiguity, relevance_mse, relevance_sparsity
from fernb.models.relevance import BaselineCNN, RelevanceNet, target_maps
from fernb.verdicts import Learning, learned

from .data import Prepared
from .protocol import Results, arch
from .scoring import peak_area, spread
from .settings import LABELS, PAPER_SIZE, Settings

MAIN = {"default": "test", "mechanism": "independent", "transfer": "test"}


def scaled_down(s: Settings, prep: Prepared) -> pd.DataFrame:
    """What this run keeps of the paper's protocol and what it scales down (text)."""
    n = len(prep.labels)
    rows = {
        "faces": ("120 x 120; CK+ (1,308 images), JAFFE (213), FER-2013 then SFEW",
                  f"{s.image_size} x {s.image_size}; {prep.name}, {len(np.unique(prep.subjects))}"
                  f" subjects, {n:,} images"),
        "network": ("filters 32-64-128 (this book's reading of the missing Table 3)",
                    f"the same layers with {s.width:g} of the filters; the dense layers keep "
                    f"their 512 units"),
        "folds": ("10 (CK+), 3 (JAFFE), subject-independent, 80/20 inner split",
                  f"{s.n_folds}, subject-independent, 80/20 inner split"),
        "training": ("Adam, batch 50, lr x 0.99 per epoch; epochs not printed",
                     f"Adam (lr {s.lr:g}), batch {s.batch_size}, lr x {s.lr_decay:g} per "
                     f"epoch, {s.epochs} epochs; the epoch with the lowest validation "
                     f"cross-entropy is kept"),
        "augmentation": ("eq. 8 warp and eq. 9 contrast",
                         "eqs. 8-9" if s.augment else "off (shown below, not trained with)"),
        "Table 6": ("pre-train on FER-2013, fine-tune about 25 epochs on SFEW",
                    f"pre-train {s.pretrain_epochs} epochs on {s.pretrain_subjects} "
                    f"{s.pretrain_dataset} subjects, fine-tune {s.finetune_epochs} epochs on "
                    f"{s.wild_folds} folds of {s.wild_subjects} others"
                    if s.wild_variants else "not run (wild_variants = [])"),
    }
    return pd.DataFrame(rows, index=["paper", "this run"]).T.rename_axis("")


def parameter_counts(s: Settings, n_classes: int) -> pd.DataFrame:
    """Trainable parameters of the baseline, the proposed network and its facial-parts
    component, at the paper's size (120 px, width 1) and this run's."""
    sizes = {"paper (120 px, width 1)": (PAPER_SIZE, 1.0),
             f"this run ({s.image_size} px, width {s.width:g})": (s.image_size, s.width)}
    out = {}
    for name, (size, width) in sizes.items():
        common = dict(n_classes=n_classes, image_size=size, width=width,
                      n_eblocks=s.n_eblocks, eblock_after=s.eblock_after)
        net = RelevanceNet(skip_connections=s.skip_connections, **common)
        out[name] = {"baseline CNN": count_parameters(BaselineCNN(**common)),
                     "proposed network": count_parameters(net),
                     "of which facial parts": count_parameters(net.facial_parts)}
    return pd.DataFrame(out)


def loss_scales(prep: Prepared, s: Settings, n: int = 64) -> pd.DataFrame:
    """The size of each term of eq. (2) before training, unweighted and weighted, under the
    printed per-pixel means of eqs. (6)-(7) and as sums over a 120 x 120 map
    (``weak_reduction="sum"``). Eq. (4) compares the starting map with the targets; eqs.
    (6)-(7) are taken on a map shaped like the landmark targets (a centred Gaussian blob
    where the dataset has no landmarks), a map the regularisers should accept."""
    h, w = prep.x.shape[-2:]
    example = prep.maps[:n] if prep.maps is not None else target_maps(
        np.array([[[(w - 1) / 2, (h - 1) / 2]]], np.float32), (h, w), sigma=min(h, w) / 8)
    start = torch.full_like(example, arch(s, "fully").map_start)
    pixels = PAPER_SIZE**2
    ce = float(np.log(prep.n_classes))
    rows = [{"term": "cross-entropy at chance, eq. (3)", "value": ce, "weight": 1.0,
             "weighted, printed mean": ce, "weighted, 120 x 120 sum": ce}]
    if prep.maps is not None:
        mse = float(relevance_mse(start, example).mean())
        rows.append({"term": "eq. (4), starting map vs targets", "value": mse,
                     "weight": s.lambda_fully, "weighted, printed mean": s.lambda_fully * mse,
                     "weighted, 120 x 120 sum": s.lambda_fully * mse})
    for name, value, weight in (
            ("eq. (6), sparsity of a target-shaped map",
             float(relevance_sparsity(example).mean()), s.lambda_weakly),
            ("eq. (7), contiguity of a target-shaped map",
             float(relevance_contiguity(example).mean()), s.lambda_weakly * s.gamma)):
        rows.append({"term": name, "value": value, "weight": weight,
                     "weighted, printed mean": weight * value,
                     "weighted, 120 x 120 sum": weight * value * pixels})
    return pd.DataFrame(rows).set_index("term")


def contiguity_gradient_at_start(s: Settings, size: int = 8) -> float:
    """The largest gradient eq. (7) gives any pixel of the starting map (constant): zero,
    since total variation is flat at every constant map."""
    start = torch.full((1, 1, size, size), arch(s, "contiguity").map_start, requires_grad=True)
    relevance_contiguity(start).sum().backward()
    return float(start.grad.abs().max())


# ----------------------------------------------------------------------------- accuracies

def fold_scores(results: Results, regime: str, variant: str, condition: str | None = None
                ) -> pd.Series:
    """Test accuracy (fraction) per fold of one variant under one test condition."""
    condition = condition or MAIN[regime]
    rows = results.select(regime, variant)
    return pd.Series({int(r.fold): float((results.scores[r.key][f"pred_{condition}"]
                                          == results.scores[r.key]["label"]).mean())
                      for r in rows.itertuples()}, dtype=float)


def compare(results: Results, regime: str, a: str, b: str, condition: str | None = None,
            *, b_condition: str | None = None) -> TestResult | None:
    """Paired t-test over folds of ``a``'s and ``b``'s accuracies (None with fewer than two
    shared folds)."""
    x = fold_scores(results, regime, a, condition)
    y = fold_scores(results, regime, b, b_condition or condition)
    shared = x.index.intersection(y.index)
    if len(shared) < 2:
        return None
    return paired_ttest(x[shared].to_numpy(), y[shared].to_numpy(), unit="folds")


def accuracy_table(results: Results, regime: str = "default") -> pd.DataFrame:
    """Tables 4-6 layout: per variant the mean test accuracy (%) over folds, its standard
    deviation, the gain over the baseline (points) with the 95 % interval and p-value of a
    paired t-test over folds, and the number of folds."""
    rows = []
    for variant in results.variants(regime):
        acc = 100 * fold_scores(results, regime, variant)
        test = None if variant == "baseline" else compare(results, regime, variant, "baseline")
        base = 100 * fold_scores(results, regime, "baseline")
        rows.append({"variant": LABELS[variant], "accuracy (%)": acc.mean(),
                     "std over folds": acc.std(ddof=1) if len(acc) > 1 else np.nan,
                     "gain over baseline": acc.mean() - base.mean(),
                     "gain 95% CI low": np.nan if test is None else 100 * test.ci[0],
                     "gain 95% CI high": np.nan if test is None else 100 * test.ci[1],
                     "p (paired t-test)": np.nan if test is None else test.p,
                     "folds": len(acc)})
    return pd.DataFrame(rows).set_index("variant")


def per_fold_table(results: Results, regime: str = "default") -> pd.DataFrame:
    """Test accuracy (%) of every variant (rows) in every fold (columns)."""
    table = pd.DataFrame({LABELS[v]: 100 * fold_scores(results, regime, v)
                          for v in results.variants(regime)}).T
    table.columns = [f"fold {c}" for c in table.columns]
    return table


def pooled(results: Results, regime: str, variant: str, condition: str | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """(logits (N, C), labels (N,)) of a variant over every fold's test faces."""
    condition = condition or MAIN[regime]
    keys = results.select(regime, variant)["key"]
    logits = np.concatenate([results.tests[k][f"logits_{condition}"] for k in keys])
    labels = np.concatenate([results.tests[k]["label"] for k in keys])
    return logits, labels


def learning_checks(results: Results, regime: str = "default", *,
                    condition: str | None = None) -> dict[str, Learning]:
    """Did each variant learn? Its test accuracy over all folds against the majority class
    (:func:`fernb.verdicts.learned`); the mechanism regime checks the faces with cues as in
    training (the task the networks were given)."""
    if condition is None:
        condition = "trained" if regime == "mechanism" else MAIN[regime]
    n_classes = len(results.wild_classes if regime == "transfer" else results.classes)
    out = {}
    for variant in results.variants(regime):
        logits, labels = pooled(results, regime, variant, condition)
        out[variant] = learned(LABELS[variant], logits, labels, n_classes=n_classes)
    return out


def folds_learned(results: Results, regime: str, variant: str) -> tuple[int, int]:
    """(folds whose model learned, folds): each fold's model checked on its own test faces."""
    condition = "trained" if regime == "mechanism" else MAIN[regime]
    n_classes = len(results.wild_classes if regime == "transfer" else results.classes)
    rows = results.select(regime, variant)
    ok = sum(learned(variant, results.tests[r.key][f"logits_{condition}"],
                     results.tests[r.key]["label"], n_classes=n_classes).ok
             for r in rows.itertuples())
    return int(ok), len(rows)


def _curves(history: pd.DataFrame) -> pd.DataFrame:
    """A history whose losses are the cross-entropy (eq. 3), the objective every variant
    shares and keeps its epoch by, whatever map terms its training loss adds."""
    return history.assign(train_loss=history["train_ce"], val_loss=history["val_ce"])


def histories(results: Results, regime: str) -> dict[str, list[pd.DataFrame]]:
    """Each variant's training histories over folds, for the training curves (losses: the
    cross-entropy)."""
    return {LABELS[v]: [_curves(results.histories[k]) for k in results.select(regime, v)["key"]]
            for v in results.variants(regime)}


def gate_histories(results: Results) -> dict[str, list[pd.DataFrame]]:
    """Fold 0's training histories of the baseline and of each ``gate_contrast`` variant
    under both readings of eq. (1)."""
    s = results.settings
    out: dict[str, list[pd.DataFrame]] = {}
    base = results.select("default", "baseline")
    if len(base):
        out[LABELS["baseline"]] = [_curves(results.histories[base["key"].iloc[0]])]
    for row in results.select("gate").itertuples():
        main = results.select("default", row.variant)
        if len(main):
            key = main["key"].iloc[0]
            out[f"{LABELS[row.variant]}, {s.gate} gate"] = [_curves(results.histories[key])]
        out[row.label] = [_curves(results.histories[row.key])]
    return out


def majority(results: Results, regime: str = "default") -> float:
    """The majority class's share of the regime's test faces."""
    variant = results.variants(regime)[0]
    labels = pooled(results, regime, variant)[1]
    return float(np.bincount(labels).max() / len(labels))


def confusion_variant(results: Results) -> str:
    """The variant whose confusion matrix the chapter shows: the hybrid model, as the paper's
    Fig. 11, or without it the last of ``variants``."""
    ran = results.variants("default")
    return "hybrid" if "hybrid" in ran else ran[-1]


def confusion(results: Results, variant: str, regime: str = "default") -> pd.DataFrame:
    """Row-normalised confusion matrix of ``variant`` over all folds' test faces."""
    logits, labels = pooled(results, regime, variant)
    classes = results.wild_classes if regime == "transfer" else results.classes
    return normalized_confusion(logits, labels, classes)


# ----------------------------------------------------------------------------- maps

def _mean(results: Results, keys: Sequence[str], column: str) -> float:
    values = [results.scores[k][column] for k in keys if column in results.scores[k]]
    if not values:
        return np.nan
    joined = pd.concat(values)
    return float(np.nanmean(joined)) if joined.notna().any() else np.nan


def map_statistics(results: Results, prep: Prepared) -> pd.DataFrame:
    """How the maps look, in numbers: per variant of the default regime (means over folds)
    and per extra run of the first fold (Figs. 9-10's other lambda, the other gate), the mean
    of |x_hat|, the share of its pixels above half its peak (scale-free sparsity), its spread
    within a face and between faces (:func:`~.scoring.spread`) and its error to the landmark
    targets (eq. 4); rows for the targets themselves and for the best constant map (the
    targets' mean), whose error a map that learned nothing about the landmarks reaches."""
    columns = {"mean |x_hat|": "map_l1", "peak area": "map_peak_area",
               "spread within a face": "map_within", "error to targets (eq. 4)": "map_mse"}
    rows = []
    runs = [(LABELS[v], list(results.select("default", v)["key"]))
            for v in results.variants("default") if v != "baseline"]
    runs += [(f"{r.label} (fold 0)", [r.key]) for r in results.runs.itertuples()
             if r.regime in ("figure", "gate") and r.variant != "baseline"]
    for label, keys in runs:
        row = {"map": label, **{name: _mean(results, keys, col) for name, col in columns.items()}}
        row["spread between faces"] = float(np.mean([results.shown[k]["between"] for k in keys]))
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    if prep.maps is not None:
        target = prep.maps[:, 0].numpy()
        within, between = spread(target)
        rows.append({"map": "Landmark targets (eq. 4)", "mean |x_hat|": float(target.mean()),
                     "peak area": float(np.nanmean(peak_area(target))),
                     "spread within a face": float(np.nanmean(within)),
                     "spread between faces": between, "error to targets (eq. 4)": 0.0})
        rows.append({"map": "Best constant map (the targets' mean)",
                     "mean |x_hat|": float(target.mean()), "peak area": 1.0,
                     "spread within a face": 0.0, "spread between faces": 0.0,
                     "error to targets (eq. 4)": constant_map_error(prep)})
    return pd.DataFrame(rows).set_index("map")[[*list(columns)[:3], "spread between faces",
                                               "error to targets (eq. 4)"]].astype(float)


def constant_map_error(prep: Prepared, index: np.ndarray | None = None) -> float:
    """Eq. (4)'s error of the best constant map (the targets' mean) on faces ``index``."""
    target = prep.maps[:, 0].numpy() if index is None else prep.maps[index, 0].numpy()
    return float(((target - target.mean()) ** 2).mean())


def map_scores(results: Results, prep: Prepared, regime: str = "default") -> pd.DataFrame:
    """Beyond the paper: each variant's maps scored against the evidence regions, averaged
    over every test face of every fold: the relevance map x_hat, Grad-CAM before the map
    multiplies the features (where the representation responds) and after (what the
    classifier receives). Evidence = share of the mass inside the regions, pointing = share
    of peaks inside, away = share of the mass on evidence more than two target sigmas from
    every landmark. Rows for the landmark targets and for chance (a uniform map)."""
    columns = {"x_hat evidence": "map_evidence", "x_hat pointing": "map_pointing",
               "x_hat away from landmarks": "map_away",
               "Grad-CAM before evidence": "cam_evidence",
               "Grad-CAM before pointing": "cam_pointing",
               "Grad-CAM after evidence": "gated_evidence",
               "Grad-CAM after pointing": "gated_pointing"}
    rows = []
    for variant in results.variants(regime):
        keys = list(results.select(regime, variant)["key"])
        rows.append({"map": LABELS[variant],
                     **{name: _mean(results, keys, col) for name, col in columns.items()}})
    if prep.maps is not None and prep.masks is not None:
        first = results.select(regime)["key"]
        idx = np.unique(np.concatenate([results.tests[k]["index"] for k in first]))
        target, mask = prep.maps[idx, 0].numpy(), prep.masks[idx]
        away = mask & ~prep.near[idx]
        rows.append({"map": "Landmark targets (eq. 4)",
                     "x_hat evidence": float(np.nanmean(evidence_score(target, mask))),
                     "x_hat pointing": float(np.nanmean(pointing_game(target, mask))),
                     "x_hat away from landmarks": float(np.nanmean(evidence_score(target, away)))})
    keys = list(results.select(regime)["key"])
    chance, away = _mean(results, keys, "chance_evidence"), _mean(results, keys, "chance_away")
    rows.append({"map": "Chance (uniform map)", "x_hat evidence": chance,
                 "x_hat pointing": chance, "x_hat away from landmarks": away,
                 "Grad-CAM before evidence": chance, "Grad-CAM before pointing": chance,
                 "Grad-CAM after evidence": chance, "Grad-CAM after pointing": chance})
    return pd.DataFrame(rows).set_index("map").astype(float)


def fold_means(results: Results, regime: str, variant: str, column: str) -> pd.Series:
    """A per-face score's mean per fold of one variant."""
    rows = results.select(regime, variant)
    return pd.Series({int(r.fold): float(np.nanmean(results.scores[r.key][column]))
                      for r in rows.itertuples() if column in results.scores[r.key]}, dtype=float)


# ----------------------------------------------------------------------------- mechanism

def follows_cue(results: Results, key: str, condition: str = "misleading") -> float:
    """Share of faces whose prediction is the class their cue shows."""
    scores = results.scores[key]
    return float((scores[f"pred_{condition}"] == scores[f"cue_{condition}"]).mean())


def mechanism_table(results: Results) -> pd.DataFrame:
    """The mechanism regime: per variant (means over folds), test accuracy (%) with cues as
    in training, independent of the label and misleading, the share of faces (%) whose
    prediction follows a misleading cue, and the share of the map's and of Grad-CAM's mass on
    the cue patch (with the patch's share of the image: chance)."""
    rows = []
    for variant in results.variants("mechanism"):
        keys = list(results.select("mechanism", variant)["key"])
        row: dict[str, Any] = {"variant": LABELS[variant]}
        for condition, name in (("trained", "as in training"), ("independent", "independent"),
                                ("misleading", "misleading")):
            row[f"accuracy, cue {name} (%)"] = 100 * fold_scores(
                results, "mechanism", variant, condition).mean()
        row["follows a misleading cue (%)"] = 100 * np.mean([follows_cue(results, k)
                                                             for k in keys])
        row["x_hat mass on the cue"] = _mean(results, keys, "map_cue")
        row["Grad-CAM before, on the cue"] = _mean(results, keys, "cam_cue")
        row["Grad-CAM after, on the cue"] = _mean(results, keys, "gated_cue")
        row["cue patch's share of the image"] = _mean(results, keys, "chance_cue")
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant").astype(float)

