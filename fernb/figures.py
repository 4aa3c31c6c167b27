"""The book's plots: one seaborn/matplotlib style and small functions returning Figures."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fernb.landmarks import PART_COLORS, PARTS


def set_style() -> None:
    """The book's look: seaborn "whitegrid" in notebook context, colour-blind palette."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 130, "axes.titleweight": "bold",
                         "image.cmap": "gray"})


def _image(img: Any) -> np.ndarray:
    """(C, H, W) tensor or (H, W[, C]) array -> (H, W) or (H, W, 3) numpy for imshow."""
    arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[2] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise ValueError(f"expected an image (H, W), (H, W, 3) or (C, H, W), got {arr.shape}")
    return arr


def _show(ax: Axes, img: Any) -> None:
    arr = _image(img)
    vmax = 255 if arr.dtype == np.uint8 else 1.0
    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=vmax)
    ax.set_axis_off()


def confusion_matrix(cm: np.ndarray | pd.DataFrame, classes: Sequence[str],
                     title: str | None = None) -> Figure:
    """Annotated heat-map of a (row-normalised) confusion matrix, true classes as rows."""
    values = np.asarray(cm, dtype=float)
    if values.shape != (len(classes), len(classes)):
        raise ValueError(f"cm has shape {values.shape} but there are {len(classes)} classes")
    normalized = values.max() <= 1.0
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(classes), 0.8 + 0.65 * len(classes)))
    sns.heatmap(values, annot=True, fmt=".2f" if normalized else ".0f", cmap="Blues",
                vmin=0, vmax=1.0 if normalized else None, square=True, cbar=False,
                xticklabels=classes, yticklabels=classes, ax=ax)
    ax.set(xlabel="predicted", ylabel="true", title=title or "")
    return fig


def image_grid(images: Sequence[Any] | np.ndarray | torch.Tensor,
               titles: Sequence[str] | None = None, ncols: int = 8,
               row_labels: Sequence[str] | None = None) -> Figure:
    """Images in a grid (uint8 in [0, 255] or floats in [0, 1]), optional titles and a label
    left of each row."""
    n = len(images)
    if n == 0 or ncols < 1:
        raise ValueError(f"need at least one image and ncols >= 1, got {n} images, ncols={ncols}")
    if titles is not None and len(titles) != n:
        raise ValueError(f"{len(titles)} titles for {n} images")
    cols = min(ncols, n)
    rows = -(-n // cols)
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"{len(row_labels)} row labels for {rows} rows")
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < n:
            _show(ax, images[i])
            if titles is not None:
                ax.set_title(titles[i], fontsize=9)
        else:
            ax.set_axis_off()
    for ax, label in zip(axes[:, 0], row_labels or ()):
        ax.text(-0.08, 0.5, label, transform=ax.transAxes, ha="right", va="center",
                fontsize=9, wrap=True)
    fig.tight_layout()
    return fig


def landmarks_overlay(image: Any, landmarks: np.ndarray, ax: Axes | None = None) -> Figure:
    """An image with its 68 landmarks, one colour per face part (jaw, eyebrows, nose, eyes,
    mouth; :data:`fernb.landmarks.PART_COLORS`)."""
    points = np.asarray(landmarks, dtype=float)
    if points.shape != (68, 2):
        raise ValueError(f"landmarks must be (68, 2) pixel (x, y), got {points.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2, 3.2))
    _show(ax, image)
    for part, idx in PARTS.items():
        ax.scatter(points[list(idx), 0], points[list(idx), 1], s=10, c=PART_COLORS[part],
                   label=part)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return ax.figure


def history_curves(history: Any, columns: Sequence[str] | None = None) -> Figure:
    """Training curves: losses on the left, other metrics (e.g. accuracy) on the right.

    ``history`` is a :class:`fernb.train.History`, a DataFrame, a dict of per-epoch lists or
    a list of per-epoch dicts; an ``epoch`` column (or index) is the x axis. ``columns``
    picks what to plot; by default every numeric column except ``lr`` and ``seconds``.
    """
    df = history.to_frame() if hasattr(history, "to_frame") else pd.DataFrame(history)
    if df.empty:
        raise ValueError("history is empty")
    df = df.reset_index() if df.index.name == "epoch" else df
    x = df.pop("epoch") if "epoch" in df else pd.Series(np.arange(1, len(df) + 1))
    if columns is None:
        columns = [c for c in df if c not in ("lr", "seconds")
                   and pd.api.types.is_numeric_dtype(df[c])]
    _columns(df, *columns)
    losses = [c for c in columns if "loss" in str(c)]
    others = [c for c in columns if c not in losses]
    panels = [(cols, name) for cols, name in ((losses, "loss"), (others, "metric")) if cols]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.2), squeeze=False)
    for ax, (cols, name) in zip(axes.flat, panels):
        for c in cols:
            ax.plot(x, df[c], label=str(c))
        ax.set(xlabel="epoch", ylabel=name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _columns(df: pd.DataFrame, *names: str | None) -> None:
    missing = [n for n in names if n is not None and n not in df.columns]
    if missing:
        raise ValueError(f"df lacks column(s) {missing}; it has {list(df.columns)}")


def bar_with_error(df: pd.DataFrame, x: str, y: str, err: str,
                   hue: str | None = None) -> Figure:
    """Bars of ``y`` per ``x`` (grouped by ``hue``) with ``err`` error bars, e.g. mean ± std."""
    _columns(df, x, y, err, hue)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if hue is None:
        ax.bar(df[x].astype(str), df[y], yerr=df[err], capsize=4,
               color=sns.color_palette()[0])
    else:
        means = df.pivot(index=x, columns=hue, values=y)
        errors = df.pivot(index=x, columns=hue, values=err)
        means.plot.bar(yerr=errors, capsize=3, ax=ax, rot=0)
    ax.set(xlabel=x, ylabel=y)
    return fig


def line_with_error(df: pd.DataFrame, x: str, y: str, err: str,
                    hue: str | None = None) -> Figure:
    """Lines of ``y`` over ``x`` with a shaded ``y ± err`` band per ``hue`` group (e.g.
    accuracy against branching level per training strategy, ESR Fig. 4)."""
    _columns(df, x, y, err, hue)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    groups = df.groupby(hue, sort=False) if hue is not None else [(None, df)]
    for name, group in groups:
        g = group.sort_values(x)
        line, = ax.plot(g[x], g[y], marker="o", label=None if name is None else str(name))
        ax.fill_between(g[x], g[y] - g[err], g[y] + g[err], color=line.get_color(), alpha=0.2)
    if pd.api.types.is_integer_dtype(df[x]):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel=x, ylabel=y)
    if hue is not None:
        ax.legend(title=hue, fontsize=8)
    return fig


def class_grid(dataset: Any, n_rows: int = 5) -> Figure:
    """One image per class (columns) for the first ``n_rows`` subjects showing every class;
    a sequence's last (peak) frame is used."""
    subjects = [s for s in np.unique(dataset.subjects)
                if len(np.unique(dataset.labels[dataset.subjects == s])) == dataset.n_classes]
    if not subjects:
        raise ValueError("no subject shows every class; pass more subjects")
    images, titles = [], []
    for row, s in enumerate(subjects[:n_rows]):
        for c, name in enumerate(dataset.classes):
            idx = np.flatnonzero((dataset.subjects == s) & (dataset.labels == c))
            images.append(dataset.images[idx[-1]])
            titles.append(name if row == 0 else "")
    return image_grid(images, titles, ncols=dataset.n_classes)


def valence_arousal_scatter(points: pd.DataFrame,
                            prototypes: dict[str, tuple[float, float]]) -> Figure:
    """Samples' (valence, arousal) coloured by ``emotion``, with each emotion's circumplex
    prototype marked."""
    _columns(points, "valence", "arousal", "emotion")
    fig, ax = plt.subplots(figsize=(5, 4.5))
    sns.scatterplot(points, x="valence", y="arousal", hue="emotion", s=8, alpha=0.5,
                    linewidth=0, ax=ax)
    for name, (v, a) in prototypes.items():
        if name in set(points["emotion"]):
            ax.scatter([v], [a], marker="x", c="black", s=30)
            ax.annotate(name, (v, a), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(xlim=(-1, 1), ylim=(-1, 1))
    ax.axhline(0, c="gray", lw=0.5)
    ax.axvline(0, c="gray", lw=0.5)
    ax.legend(fontsize=7, markerscale=2, loc="lower left")
    return fig


def facet_lines(df: pd.DataFrame, x: str, y: str, hue: str, col: str) -> Figure:
    """One panel per ``col`` value with a line per ``hue`` value (e.g. ESR Fig. 5, left:
    validation accuracy per epoch of each added branch, ESR vs TE)."""
    _columns(df, x, y, hue, col)
    grid = sns.relplot(df, x=x, y=y, hue=hue, col=col, kind="line", height=2.8, aspect=1.0,
                       facet_kws={"sharey": True})
    grid.set_titles("{col_name}")
    return grid.figure


CURVE_METRICS = ("loss", "accuracy")


def curves_frame(histories: dict[str, Sequence[Any]]) -> pd.DataFrame:
    """Training curves in long form: ``histories`` maps a model kind or stage (e.g.
    ``"Baseline"``, ``"FTL stage 2"``) to its runs' histories (a
    :class:`fernb.train.History` or its frame per member, fold or seed). Returns one row per
    (model, run, epoch, split) with ``loss`` and ``accuracy`` (%, the ensemble's) or, for
    regression, ``rmse``."""
    rows = []
    for model, runs in histories.items():
        for unit, history in enumerate(runs):
            frame = history.to_frame() if hasattr(history, "to_frame") else history
            frame = frame.reset_index() if "epoch" not in frame.columns else frame
            for split in ("train", "val"):
                if f"{split}_loss" not in frame.columns:
                    continue
                part = pd.DataFrame({"model": model, "run": unit, "epoch": frame["epoch"],
                                     "split": split, "loss": frame[f"{split}_loss"]})
                if f"{split}_acc_ens" in frame.columns:
                    part["accuracy"] = 100 * frame[f"{split}_acc_ens"]
                elif f"{split}_rmse_ens" in frame.columns:
                    part["rmse"] = frame[f"{split}_rmse_ens"]
                rows.append(part)
    if not rows:
        raise ValueError("no history has a train_loss column: pass fernb.train.History objects "
                         "or their frames")
    return pd.concat(rows, ignore_index=True)


def training_curves(curves: pd.DataFrame, *, majority: float | None = None,
                    title: str | None = None) -> Figure:
    """Loss and accuracy per epoch (training solid, validation dashed), one colour per model
    kind or stage, the band spanning its runs (members, folds or seeds; min to max):
    whether, and how far, every model learned. ``curves`` is :func:`curves_frame`'s;
    ``majority`` (a fraction) draws the majority-class rate, the floor a model must beat."""
    _columns(curves, "model", "epoch", "split", "loss")
    metrics = [m for m in ("loss", "accuracy", "rmse") if m in curves.columns
               and curves[m].notna().any()]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sns.lineplot(data=curves.dropna(subset=[metric]), x="epoch", y=metric, hue="model",
                     style="split", style_order=["train", "val"], errorbar=("pi", 100),
                     ax=ax, legend=ax is axes[0][-1])
        if metric == "accuracy" and majority is not None:
            ax.axhline(100 * majority, color="gray", ls=":", lw=1)
            ax.annotate("majority class", (0.01, 100 * majority), xycoords=("axes fraction",
                        "data"), va="bottom", fontsize=8, color="gray")
        ax.set(ylabel=metric + (" (%)" if metric == "accuracy" else ""))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    legend = axes[0][-1].get_legend()
    if legend is not None:
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=8,
                        title=None, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
