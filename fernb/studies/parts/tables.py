"""Chapter 3's tables and figures, numeric until :meth:`fernb.report.Report.table` formats
them: the data, the cost of the network (Table II, Sec. IV-E), the training budget and how
far each stage moved the weights, Table I and III, the learning curve of the mechanism
regime, Fig. 10."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fernb.complexity import flops_per_layer
from fernb.ensemble import SoftmaxSum
from fernb.evaluate import to_predictions
from fernb.landmarks import PART_COLORS
from fernb.models.parts import (ENSEMBLE_PARTS, LANDMARK_SETS, PartNetwork, complexity_summary,
                                expression_network)
from fernb.studies.parts.protocol import (KIND_NAMES, KINDS, curve_kinds, subjects,
                                          transfer_config)
from fernb.studies.parts.results import Results
from fernb.transfer import TransferConfig

# Table I's columns, left to right.
COLUMNS = ("Baseline", "FTL", *ENSEMBLE_PARTS, "EL")
# The authors' notebook makes an epoch 30 steps of 32 images.
PAPER_STEPS_PER_EPOCH = 30
PROTOCOLS = {"lab": "lab test folds", "wild": "wild test set", "cross": "lab set (wild-trained)"}


# --------------------------------------------------------------------- Table II, IV-E

def complexity(n_classes: int = 8, image_size: int = 160) -> pd.DataFrame:
    """Sec. III-C and IV-E at the paper's input (160x160x3) and width, for CK+'s 8 classes
    (the worst case the paper reports): every component's trainable parameters, the Keras
    count (with BatchNorm's moving statistics), torch's FLOP count, eqs. 7-9 and the storage
    in MiB (2^20 bytes; the paper writes MB)."""
    table = complexity_summary(n_classes=n_classes, image_size=image_size)
    return table.rename(columns={"params": "parameters", "params_keras": "parameters (Keras)",
                                 "flops": "FLOPs (torch)", "flops_formula": "FLOPs (eqs. 7-9)",
                                 "storage_mb": "storage (MiB)"})


def conv_share(n_classes: int = 8, image_size: int = 160) -> float:
    """Share (%) of eqs. 7-9's FLOPs of a sub-network that its convolutions make."""
    layers = flops_per_layer(expression_network(PartNetwork(part=None, n_classes=n_classes)),
                             (3, image_size, image_size))
    return 100 * float(layers.loc[layers["kind"] == "conv", "flops"].sum()
                       / layers["flops"].sum())


# ----------------------------------------------------------------------- correctness

def places(results: Results) -> dict[str, list[str]]:
    """The default regime's places: the lab trials (pooled) and the wild set."""
    return {"lab": [f"lab-t{t}" for t in results.settings.trials], "wild": ["wild"]}


def _where(results: Results, protocol: str) -> tuple[list[str], str]:
    if protocol == "cross":
        return ["wild"], "cross"
    return places(results)[protocol], "test"


def logits(results: Results, protocol: str, kind: str, *, artifact: str | None = None,
           member: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The default regime's (N, M, C) logits of an ensemble (or one ``member``) on a
    protocol's test faces, lab trials pooled, and their labels; ``artifact="head"`` gives
    them after stage 2."""
    wheres, default = _where(results, protocol)
    artifact = artifact or default
    out, labels = [], []
    for where in wheres:
        z = results.logits("default", where, kind, artifact=artifact)
        out.append(z if member is None else z[:, [member]])
        labels.append(results.labels[("default", "cross" if protocol == "cross" else where)])
    return np.concatenate(out), np.concatenate(labels)


def column_logits(results: Results, protocol: str, column: str, *,
                  artifact: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`logits` of a Table I column: an ensemble (Baseline, FTL, EL) or one EL part
    network (its part's name)."""
    if column in ENSEMBLE_PARTS:
        return logits(results, protocol, "el", artifact=artifact,
                      member=ENSEMBLE_PARTS.index(column))
    kind = {name: k for k, name in KIND_NAMES.items()}[column]
    return logits(results, protocol, kind, artifact=artifact)


def correct(results: Results, protocol: str, column: str, *, artifact: str | None = None
            ) -> np.ndarray:
    """Whether a Table I column (an ensemble by eq. 4, or one EL part network) is right on
    each test face of a protocol (``"lab"``: every trial's test fold; ``"wild"``;
    ``"cross"``: the wild-trained networks on the lab set)."""
    z, y = column_logits(results, protocol, column, artifact=artifact)
    return to_predictions(z, SoftmaxSum()) == y


def accuracies(results: Results, protocol: str) -> dict[str, float]:
    """Test accuracy (%) of every Table I column on a protocol's faces."""
    return {c: 100 * float(correct(results, protocol, c).mean()) for c in COLUMNS}


def majority(labels: np.ndarray) -> float:
    """The most frequent class's share of ``labels``."""
    return float(np.bincount(labels).max() / len(labels))


def table1(results: Results, names: dict[str, str]) -> pd.DataFrame:
    """Table I (and III's lab row): accuracy (%) of the Baseline and FTL ensembles, each EL
    sub-network alone and EL, on each protocol's test faces (lab trials pooled), with the
    majority class's rate."""
    rows = {}
    for protocol, name in names.items():
        _, y = logits(results, protocol, "baseline")
        rows[name] = {**accuracies(results, protocol), "majority class": 100 * majority(y),
                      "faces": len(y)}
    return pd.DataFrame.from_dict(rows, orient="index")


def stage2_table(results: Results, names: dict[str, str]) -> pd.DataFrame:
    """The transfer ensembles' test accuracy (%) after stage 2 (the head on the frozen
    landmark extractor) and after fine-tuning, with the majority class's rate."""
    rows = {}
    for protocol in ("lab", "wild"):
        for column in ("FTL", "EL"):
            head = correct(results, protocol, column, artifact="head")
            final = correct(results, protocol, column)
            _, y = logits(results, protocol, "ftl")
            rows[(names[protocol], column)] = {"after stage 2 (%)": 100 * head.mean(),
                                               "after fine-tuning (%)": 100 * final.mean(),
                                               "majority class (%)": 100 * majority(y)}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["set", "ensemble"])
    return table


# -------------------------------------------------------------- the training budget

def _stages(config: TransferConfig) -> dict[str, tuple[int, float]]:
    return {"Baseline": (config.direct_epochs, config.direct_lr),
            "stage 1: landmarks": (config.landmark_epochs, config.landmark_lr),
            "stage 2: head": (config.head_epochs, config.head_lr),
            "stage 3: fine-tuning": (config.finetune_epochs, config.finetune_lr)}


def _trained_epochs(results: Results, regime: str, where: Sequence[str], stage: str) -> float:
    values = []
    for w in where:
        kinds = {"Baseline": ("baseline",), "stage 1: landmarks": ("ftl", "el")}.get(
            stage, ("ftl", "el"))
        for kind in kinds:
            for net in results.networks(regime, w, kind):
                if stage == "stage 1: landmarks":
                    values.append(results.stage1(net).record["summary"]["epochs"])
                elif stage == "stage 2: head":
                    values.append(results.entry(net).record["summary"]["head_epochs"])
                else:
                    values.append(results.entry(net).record["summary"]["epochs"])
    return float(np.mean(values)) if values else np.nan


def schedule(results: Results, names: dict[str, str], lab_paper: str = "ckplus"
             ) -> pd.DataFrame:
    """Every stage's budget in the paper (at :data:`PAPER_STEPS_PER_EPOCH` steps of 32
    images an epoch) and in this run: the most epochs, the rate, the epochs the networks
    trained on average (early stopping), and ``lr x steps``, the farthest Adam can move a
    weight (an Adam step is at most about the rate long) in the epochs trained."""
    settings = results.settings
    rate = float(results.rate.record["summary"]["rate"])
    rows = {}
    for protocol, paper_set in (("lab", lab_paper), ("wild", "sfew")):
        paper = _stages(TransferConfig.for_dataset(paper_set))
        ours = _stages(replace(transfer_config(settings, protocol), finetune_lr=rate))
        steps = math.ceil(settings.epoch_images / settings.batch_size)
        for stage, (epochs, lr) in ours.items():
            paper_epochs, paper_lr = paper[stage]
            trained = _trained_epochs(results, "default", places(results)[protocol], stage)
            rows[(names[protocol], stage)] = {
                "paper epochs": paper_epochs, "paper lr": paper_lr,
                "paper lr x steps": paper_epochs * PAPER_STEPS_PER_EPOCH * paper_lr,
                "epochs (most)": epochs, "lr": lr, "epochs trained": trained,
                "lr x steps": trained * steps * lr}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["set", "stage"])
    return table


def rate_table(results: Results) -> pd.DataFrame:
    """How far fine-tuning moved the first FTL network of the first lab trial at each
    measured rate (% of its kernels' size), as a share of how far stage 1 moved it."""
    summary = results.rate.record["summary"]
    travel = results.rate.frame("travel").set_index("lr")["travel"]
    return pd.DataFrame({"travel (%)": 100 * travel,
                         "share of stage 1's travel": travel / summary["stage1_travel"]})


def travel_table(results: Results) -> pd.DataFrame:
    """How far training moved the extractors (``||w1 - w0|| / ||w0||`` of the convolution
    kernels, %, mean over an ensemble's networks): during stage 1 and during expression
    training (fine-tuning for FTL, EL and the control; everything for the Baseline), per
    place of both regimes (mechanism: every curve point and seed together)."""
    rows = {}
    for regime, wheres in (("default", [w for ws in places(results).values() for w in ws]),
                           ("mechanism", [str(n) for n in sorted(results.settings.curve)])):
        for where in wheres:
            for kind in (KINDS if regime == "default" else curve_kinds(results.settings)):
                nets = results.networks(regime, where, kind)
                stage1 = [results.stage1(n).record["summary"]["travel"] for n in nets
                          if n.stage1 is not None]
                moved = [results.entry(n).record["summary"]["travel"] for n in nets]
                label = where if regime == "default" else subjects(int(where))
                rows[(regime, label, KIND_NAMES[kind])] = {
                    "stage 1 (%)": 100 * np.mean(stage1) if stage1 else np.nan,
                    "expressions (%)": 100 * np.mean(moved),
                    "share": np.mean(moved) / np.mean(stage1) if stage1 else np.nan}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["regime", "where", "kind"])
    return table


# ----------------------------------------------------------------- Table III

def table3(results: Results, wild_name: str, lab_name: str) -> pd.DataFrame:
    """Table III: trained in the wild, tested on the wild test set and on the lab set (the
    classes the wild set has)."""
    rows = {(wild_name, f"{wild_name} (test)"): accuracies(results, "wild"),
            (wild_name, lab_name): accuracies(results, "cross")}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["train", "test"])
    return table[list(COLUMNS)]


# --------------------------------------------------------- the mechanism regime

def curve_correct(results: Results, n: int, kind: str, *, artifact: str = "test"
                  ) -> np.ndarray:
    """(R, N): whether kind's ensemble (by eq. 4) at ``n`` labelled subjects is right on each
    held-out test face, one row per curve seed."""
    y = results.labels[("mechanism", str(n))]
    return np.stack([to_predictions(results.logits("mechanism", str(n), kind, seed=r,
                                                   artifact=artifact), SoftmaxSum()) == y
                     for r in results.settings.curve_seeds])


def curve_table(results: Results) -> pd.DataFrame:
    """The learning curve: test accuracy (%) of each kind at each number of
    expression-labelled subjects (mean over the curve seeds), FTL and EL after stage 2, the
    majority class's rate, the labelled training faces (EL where the curve trains it,
    :func:`~fernb.studies.parts.protocol.curve_kinds`)."""
    rows = {}
    kinds = curve_kinds(results.settings)
    for n in sorted(results.settings.curve):
        net = results.networks("mechanism", str(n), "baseline")[0]
        y = results.labels[("mechanism", str(n))]
        row = {KIND_NAMES[k]: 100 * curve_correct(results, n, k).mean() for k in kinds}
        row |= {f"{KIND_NAMES[k]} after stage 2": 100 * curve_correct(
            results, n, k, artifact="head").mean() for k in ("ftl", "el") if k in kinds}
        rows[n] = {**row, "majority class": 100 * majority(y),
                   "labelled faces": len(net.job.spec["train"])}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "labelled subjects"
    return table


CURVE_STYLE = {"Baseline": ("tab:gray", "o"), "control": ("tab:purple", "s"),
               "FTL": ("tab:blue", "^"), "EL": ("tab:red", "D")}


def curve_figure(table: pd.DataFrame) -> Figure:
    """The learning curve: accuracy against the expression-labelled subjects (log scale),
    one line per kind, the majority class's rate dotted."""
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for name, (colour, marker) in CURVE_STYLE.items():
        if name not in table:
            continue
        ax.plot(table.index, table[name], marker=marker, color=colour, label=name)
    ax.plot(table.index, table["majority class"], ls=":", color="k", lw=1,
            label="majority class")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(table.index), [str(n) for n in table.index])
    ax.set(xlabel="expression-labelled subjects", ylabel="test accuracy (%)", ylim=(0, 100))
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------- Fig. 10

def landmark_figure(images: np.ndarray, before: np.ndarray, after: np.ndarray) -> Figure:
    """Fig. 10: each face twice, the points predicted before fine-tuning (top) and after
    (bottom), coloured by part, on axes fixed to the image (a point off the face shows as
    off the image, not as a shrunken panel)."""
    n = len(images)
    h, w = images.shape[1:3]
    fig, axes = plt.subplots(2, n, figsize=(1.9 * n, 4.0), squeeze=False)
    for row, (points, title) in enumerate(((before, "before"), (after, "after"))):
        for i in range(n):
            ax = axes[row, i]
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=255, extent=(-0.5, w - 0.5,
                                                                          h - 0.5, -0.5))
            for part in ENSEMBLE_PARTS:
                idx = list(LANDMARK_SETS[part])
                ax.scatter(points[i, idx, 0], points[i, idx, 1], s=6, c=PART_COLORS[part],
                           label=part, clip_on=True)
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
            ax.set_axis_off()
            ax.set_title(f"{title} fine-tuning", fontsize=8)
    axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7,
                       frameon=False)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- the data

def names(settings) -> dict[str, str]:
    """How the tables name each protocol: the lab set, the wild set, and the wild-trained
    networks tested on the lab set."""
    return {"lab": settings.dataset, "wild": settings.wild_dataset,
            "cross": f"{settings.dataset} (trained on {settings.wild_dataset})"}


def data_table(plan) -> pd.DataFrame:
    """Every face set of both regimes: faces, subjects, classes and the faces of each
    part of its split (the first lab trial's); None where a set has no such part."""
    lab_split = plan.lab_splits[plan.settings.trials[0]]
    rows = {}
    for name, faces, split in (("lab", plan.lab, lab_split), ("wild", plan.wild, plan.wild_split)):
        data = faces.load()
        rows[f"{name}: {data.name}"] = {
            "faces": len(data), "subjects": len(np.unique(data.subjects)),
            "classes": data.n_classes, "train": len(split.train), "validation": len(split.val),
            "test": len(split.test)}
    pool = plan.pool.load()
    rows["mechanism: landmark pool"] = {
        "faces": len(pool), "subjects": len(np.unique(pool.subjects)),
        "classes": None, "train": None, "validation": None, "test": None}
    mech = plan.mechanism.load()
    rows["mechanism: labelled set"] = {
        "faces": len(mech), "subjects": len(np.unique(mech.subjects)),
        "classes": mech.n_classes, "train": None,
        "validation": len(plan.mechanism_split["val"]),
        "test": len(plan.mechanism_split["test"])}
    # object columns keep counts integers beside the sets' missing parts
    return pd.DataFrame(list(rows.values()), index=list(rows), dtype=object)


def data_figure(plan) -> Figure:
    """A face of each set with its 68 landmarks coloured by part, and a landmark-pool
    sequence: every frame from neutral to the expression's peak."""
    from fernb import figures
    lab, wild, pool = plan.lab.load(), plan.wild.load(), plan.pool.load()
    sequence = pool.meta["sequence"] == pool.meta["sequence"][
        np.flatnonzero(pool.labels == pool.classes.index("surprise"))[0]]
    frames = np.flatnonzero(sequence)
    fig, axes = plt.subplots(1, 2 + len(frames), figsize=(1.7 * (2 + len(frames)), 2.2))
    for ax, data, title in ((axes[0], lab, lab.name), (axes[1], wild, wild.name)):
        face = int(np.flatnonzero(np.isfinite(data.landmarks).all(axis=(1, 2)))[0])
        figures.landmarks_overlay(data.images[face], data.landmarks[face], ax=ax)
        ax.set_title(f"{title}: {data.classes[data.labels[face]]}", fontsize=8)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    for ax, i in zip(axes[2:], frames):
        ax.imshow(pool.images[i], cmap="gray", vmin=0, vmax=255)
        ax.scatter(*pool.landmarks[i].T, s=2, c="tab:red")
        ax.set_title(f"pool, frame {pool.meta['frame'][i]}", fontsize=8)
        ax.set_axis_off()
    fig.tight_layout()
    return fig
