"""Chapter 4's tables (numeric until :meth:`fernb.report.Report.table` formats them) and
figures."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from fernb.data.datasets import FaceDataset
from fernb.ensemble import diversity
from fernb.evaluate import normalized_confusion
from fernb.softlabels import (TABLE_1, TABLE_1_CLASSES, compare_soft_labels, logit_spread,
                              perturb, restrict_soft_labels, row_entropy)
from fernb.studies.softlabels.protocol import split
from fernb.studies.softlabels.results import RULE, Regime, Results, SoftLabels

GROUP_NAMES = {"hard": "hard labels", "fixed": "soft labels, fixed gamma",
               "perturbed": "soft labels, gamma perturbation",
               "other": "other D, gamma perturbation", "oracle": "oracle D, gamma perturbation"}


def group_name(regime: Regime, group: str) -> str:
    """An ensemble's name with the D it trains on."""
    d = regime.groups[group].d
    if d is None or group == "oracle":
        return GROUP_NAMES[group]
    return f"{GROUP_NAMES[group]} ({regime.soft_labels[d].built_on}'s D)"


def split_sizes(named: Mapping[str, FaceDataset], seed: int = 0) -> pd.DataFrame:
    """Images per split of each dataset (:func:`~.protocol.split`), and its classes."""
    rows = []
    for name, d in named.items():
        s = split(d, seed)
        rows.append({"data": name, "dataset": d.name, "classes": len(d.classes),
                     "train": len(s.train), "validation": len(s.val), "test": len(s.test)})
    return pd.DataFrame(rows).set_index("data")


def datasets(results: Results) -> dict[str, FaceDataset]:
    """The faces each part of the study trains on."""
    from fernb.studies.softlabels.protocol import source_spec
    named = {}
    if results.source is not None:
        named["source"] = source_spec(results.settings).load()
    for name, regime in results.regimes.items():
        named[f"{name} regime"] = regime.data
    return named


# ----------------------------------------------------------------------- D

def soft_label_table(regime: Regime) -> pd.DataFrame:
    """Each D of a regime: where it is built, its rows peaking on another class (Sec. 3.2
    requires none), its mean own entry, and how close it is to the oracle D (true mixtures;
    :func:`fernb.softlabels.compare_soft_labels`)."""
    oracle = regime.soft_labels.get("oracle")
    rows = []
    for name, d in regime.soft_labels.items():
        row = {"D": d.title, "rows peaking elsewhere": len(d.violations),
               "mean own entry": float(np.diag(d.matrix).mean())}
        if oracle is not None and name != "oracle":
            c = compare_soft_labels(d.matrix, oracle.matrix)
            row |= {"JS distance to oracle": c["js_distance"],
                    "same most related class as oracle (%)": 100 * c["top_other_agreement"]}
        rows.append(row)
    return pd.DataFrame(rows).set_index("D")


def diagonal_table(regime: Regime) -> pd.DataFrame:
    """Sec. 3.2's rule per row of each D: its own entry, the largest other entry and the
    class it is on."""
    rows = []
    for name, d in regime.soft_labels.items():
        for j, cls in enumerate(d.classes):
            row = d.matrix[j]
            other = int(np.argmax(np.where(np.arange(len(row)) == j, -1, row)))
            rows.append({"D": d.title, "class": cls, "own entry": row[j],
                         "largest other": d.classes[other], "its entry": row[other],
                         "peaks on own class": "yes" if row[j] >= row.max() else "no"})
    return pd.DataFrame(rows).set_index(["D", "class"])


def d_frames(regime: Regime) -> dict[str, pd.DataFrame]:
    """The regime's D matrices and the paper's Table 1, in the dataset's class order where
    the classes allow it."""
    frames = {d.title: d.frame() for d in regime.soft_labels.values()}
    order = list(regime.classes)
    if set(order) <= set(TABLE_1_CLASSES):
        frames["Gan et al., Table 1 (FER-2013)"] = pd.DataFrame(
            restrict_soft_labels(TABLE_1.to_numpy(), TABLE_1_CLASSES, order),
            index=pd.Index(order, name="true class"), columns=pd.Index(order, name="soft label"))
    return frames


def heatmaps(frames: Mapping[str, pd.DataFrame], per_row: int = 4) -> Figure:
    """Annotated heat-maps of soft-label matrices side by side (rows sum to 1)."""
    n = len(frames)
    cols = min(n, per_row)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols, 4.2 * rows), squeeze=False)
    for ax, (title, frame) in zip(axes.flat, frames.items()):
        sns.heatmap(frame, annot=True, fmt=".2f", cmap="Blues", vmin=0, vmax=1, square=True,
                    cbar=False, ax=ax, annot_kws={"fontsize": 7})
        ax.set(title=title, xlabel=frame.columns.name or "", ylabel=frame.index.name or "")
        ax.title.set_fontsize(9)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def trace_table(results: Results) -> pd.DataFrame:
    """Per epoch of each hard-label constructor: validation accuracy (%) and the rows of
    its D that peak on another class."""
    parts = []
    named = {f"{n} regime: dataset's constructor": r.constructor for n, r in
             results.regimes.items()}
    if results.source is not None:
        named = {"source network": results.source, **named}
    for name, network in named.items():
        t = network.trace.copy()
        t["val_accuracy"] *= 100
        parts.append(t.assign(network=name))
    table = pd.concat(parts).rename(columns={"val_accuracy": "validation accuracy (%)",
                                             "violations": "rows peaking elsewhere"})
    return table.set_index(["network", "epoch"])


def trace_figure(results: Results) -> Figure:
    """The constructors' validation accuracy and D's violating rows, epoch by epoch
    (:func:`trace_table`)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.3))
    t = trace_table(results).reset_index()
    for name, part in t.groupby("network", sort=False):
        axes[0].plot(part["epoch"], part["validation accuracy (%)"], marker="o", label=name)
        axes[1].plot(part["epoch"], part["rows peaking elsewhere"], marker="o", label=name)
    axes[0].set(xlabel="epoch", ylabel="validation accuracy (%)")
    axes[1].set(xlabel="epoch", ylabel="rows of D peaking elsewhere")
    axes[1].yaxis.get_major_locator().set_params(integer=True)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def order_kept(d: np.ndarray, gammas: Sequence[float]) -> bool:
    """Eq. (4) keeps the order of every row's entries, for every gamma (ties stay ties)."""
    def ranks(m: np.ndarray) -> np.ndarray:
        return np.argsort(np.argsort(-m, axis=1, kind="stable"), axis=1, kind="stable")
    return all(np.array_equal(ranks(perturb(d, g)), ranks(d)) for g in gammas)


def perturbation_table(d: SoftLabels, gammas: Sequence[float], row: str | None = None
                       ) -> pd.DataFrame:
    """One row of D (``row``; default fear's, the paper's example in Sec. 3.2, else the last
    class's) after eq. (4) for each gamma, with the row's entropy (nats)."""
    row = row or ("fear" if "fear" in d.classes else d.classes[-1])
    j = list(d.classes).index(row)
    table = pd.DataFrame([perturb(d.matrix, g)[j] for g in gammas], columns=list(d.classes),
                         index=pd.Index(list(gammas), name="gamma"))
    table["entropy"] = [float(row_entropy(perturb(d.matrix, g))[j]) for g in gammas]
    return table


# ----------------------------------------------------------------------- the sweep

def sweep_table(results: Results) -> pd.DataFrame:
    """Fig. 4: validation and test accuracy (%) of one network per gamma, with its D's mean
    entropy (nats) and own entry."""
    d = results.default.soft_labels[results.default.main].matrix
    t = results.sweep.table.copy()
    t[["val accuracy", "test accuracy"]] *= 100
    t["mean entropy"] = [float(row_entropy(perturb(d, g)).mean()) for g in t["gamma"]]
    t["mean own entry"] = [float(np.diag(perturb(d, g)).mean()) for g in t["gamma"]]
    return t.set_index("gamma").rename(columns={"val accuracy": "validation accuracy (%)",
                                                "test accuracy": "test accuracy (%)"})


def sweep_figure(results: Results) -> Figure:
    """Validation accuracy against gamma (Fig. 4), the chosen set shaded, the fixed gamma
    marked, the hard-label constructor's validation accuracy as a dashed line."""
    sweep, c = results.sweep, results.default.constructor
    fig, ax = plt.subplots(figsize=(6, 3.5))
    t = sweep.table
    ax.axvspan(min(sweep.gammas) - 0.05, max(sweep.gammas) + 0.05, color="C2", alpha=0.15,
               label="chosen gamma set")
    ax.plot(t["gamma"], 100 * t["val accuracy"], marker="o", label="soft labels, one network")
    ax.axvline(sweep.fixed_gamma, color="C1", ls=":", label=f"fixed gamma {sweep.fixed_gamma:g}")
    ax.axhline(100 * np.mean(c.val.argmax(1) == c.val_labels), color="gray", ls="--",
               label="hard labels (the constructor)")
    ax.set(xlabel="perturbation factor gamma", ylabel="validation accuracy (%)")
    ax.legend(fontsize=8)
    return fig


# ----------------------------------------------------------------------- ensembles

def accuracy_table(regime: Regime) -> pd.DataFrame:
    """Tables 2, 4 and 6 for one regime: per ensemble, its gammas, test accuracy (%) under
    eq. (7) (scores averaged) and with probabilities averaged, its single networks' mean,
    and where the generator knows them the clean-label accuracy (%) and the negative
    log-likelihood of the true mixtures (nats); means over the repeats."""
    rows = []
    for name, g in regime.groups.items():
        sc = regime.scores(name)
        row = {"ensemble": group_name(regime, name),
               "gamma": ", ".join("–" if x is None else f"{x:g}" for x in dict.fromkeys(g.gammas)),
               "accuracy, eq. 7 (%)": 100 * sc.correct.mean(),
               "accuracy, probabilities averaged (%)": 100 * sc.correct_probabilities.mean(),
               "single networks (%)": 100 * sc.member_correct.mean()}
        if sc.clean is not None:
            row |= {"clean-label accuracy (%)": 100 * sc.clean.mean(),
                    "single networks, clean label (%)": 100 * sc.member_clean.mean()}
        if sc.nll is not None:
            row |= {"NLL of the true mixture (nats)": sc.nll.mean(),
                    "single networks, NLL (nats)": sc.member_nll.mean()}
        rows.append(row)
    return pd.DataFrame(rows).set_index("ensemble")


def diversity_table(regime: Regime) -> pd.DataFrame:
    """Mean pairwise diversity of each ensemble's members on the test split, over the
    repeats (disagreement, Q-statistic, double fault; Kuncheva and Whitaker) and its oracle
    accuracy; ensembles of one member have none."""
    rows = []
    for name, g in regime.groups.items():
        z = g.logits()
        if z.shape[2] < 2:
            continue
        values = pd.DataFrame([diversity(e, regime.test_labels) for e in z]).mean()
        rows.append({"ensemble": group_name(regime, name), **values.to_dict()})
    columns = ["ensemble", "disagreement", "q_statistic", "double_fault", "oracle_accuracy"]
    table = pd.DataFrame(rows, columns=columns).set_index("ensemble")
    return table.rename(columns={"q_statistic": "Q-statistic", "double_fault": "double fault",
                                 "oracle_accuracy": "oracle accuracy"})


def spread_table(regime: Regime, group: str = "perturbed") -> pd.DataFrame:
    """Each member's weight in eq. (7): its gamma, the spread of its scores
    (:func:`fernb.softlabels.logit_spread`), its share of the ensemble's total spread and its
    test accuracy (%); means over the repeats."""
    g = regime.groups[group]
    z = g.logits()  # (R, N, M, C)
    spread = np.stack([logit_spread(e) for e in z]).mean(0)
    acc = np.stack([(e.argmax(-1) == regime.test_labels[:, None]).mean(0) for e in z]).mean(0)
    return pd.DataFrame({"member": np.arange(1, len(spread) + 1),
                         "gamma": [np.nan if x is None else x for x in g.gammas],
                         "score spread": spread, "share of eq. 7's weight (%)":
                         100 * spread / spread.sum(), "test accuracy (%)": 100 * acc}
                        ).set_index("member")


def confusion(regime: Regime, group: str = "perturbed") -> pd.DataFrame:
    """Row-normalised confusion matrix (%) of a group's ensembles (eq. 7), repeats pooled
    (Tables 3, 5 and 7)."""
    z = regime.groups[group].logits()
    logits = np.concatenate(list(z))
    labels = np.concatenate([regime.test_labels] * len(z))
    return 100 * normalized_confusion(logits, labels, regime.classes, rule=RULE)


# The paper's remarks on its confusion matrices (Secs. 4.4-4.6): (true class, the classes it is
# said to be mistaken for, where).
OBSERVATIONS = (
    ("disgust", ("anger",), "Sec. 4.4, Table 3"),
    ("anger", ("sadness",), "Sec. 4.4, Table 3"),
    ("fear", ("sadness", "surprise"), "Secs. 4.4 and 4.6, Tables 3 and 7"),
)


def mistakes_table(cm: pd.DataFrame, d: SoftLabels | None) -> pd.DataFrame:
    """Per true class: the class it is most often mistaken for and its share (%), and the
    class D's row puts most weight on after its own (or instead of it: a row peaking
    elsewhere), so that a reader sees whether the confusions follow D."""
    rows = []
    for true in cm.index:
        row = cm.loc[true].drop(true)
        top = str(row.idxmax())
        entry: dict[str, Any] = {"true class": true, "recall (%)": float(cm.loc[true, true]),
                                 "most frequent mistake": top, "its share (%)": float(row.max())}
        if d is not None:
            j = list(d.classes).index(true)
            drow = d.matrix[j]
            other = int(np.argmax(np.where(np.arange(len(drow)) == j, -1, drow)))
            entry |= {"D's row: largest other class": d.classes[other],
                      "D peaks on": d.classes[int(np.argmax(drow))],
                      "mistake follows D": "yes" if d.classes[other] == top else "no"}
        rows.append(entry)
    return pd.DataFrame(rows).set_index("true class")


def observations(cm: pd.DataFrame) -> pd.DataFrame:
    """Each of the paper's remarks checked on a confusion matrix: the class a true class is
    most often mistaken for, its share (%), the share of the class(es) the paper names;
    no rows when the classes lack the remarked ones (e.g. a folder of other expressions)."""
    columns = ["true class", "paper: mistaken for", "where", "share named (%)",
               "most frequent mistake", "its share (%)"]
    rows = []
    for true, named, where in OBSERVATIONS:
        if true not in cm.index or any(c not in cm.columns for c in named):
            continue
        row = cm.loc[true].drop(true)
        rows.append({"true class": true, "paper: mistaken for": " or ".join(named),
                     "where": where, "share named (%)": float(row[list(named)].max()),
                     "most frequent mistake": str(row.idxmax()),
                     "its share (%)": float(row.max())})
    return pd.DataFrame(rows, columns=columns).set_index("true class")


def histories(regime: Regime) -> dict[str, list[pd.DataFrame]]:
    """Training curves of every ensemble kind of a regime (a band over its members)."""
    return {f"{regime.name}: {GROUP_NAMES[name]}": [n.history for n in g.members]
            for name, g in regime.groups.items()}
