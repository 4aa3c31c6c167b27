"""Chapter 0 (the data): parameter constraints, the calibration baseline and the pictures of
the generator's knobs.

The calibration baseline trains ESR's single network (paper Fig. 3) from scratch on one
subject-independent split of a synthetic preset and tests it on unseen subjects, to show how
hard each preset is for a small network. The knob pictures render the same faces with a
mechanism knob off and on (:mod:`fernb.data.synthetic`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure

from fernb.data import synthetic
from fernb.data.datasets import FaceDataset
from fernb.data.splits import holdout
from fernb.evaluate import accuracy, per_class_recall, predict, top_confusions
from fernb.figures import image_grid
from fernb.models.esr import single_network
from fernb.params import (LEARNING_RATE, POSITIVE_INT, ChapterSettings, Range, Relation, Unused,
                          param, relation)
from fernb.train import FitConfig, History, fit, sgd

@dataclass(frozen=True)
class Settings(ChapterSettings):
    """The chapter's parameters (``notebooks/00_data.ipynb``); defaults are the ``cpu``
    profile."""

    n_subjects_lab: int = param(40, Range(4, 10_000, integer=True),
                                "subjects in synth-lab (CK+ has 123)")
    n_subjects_wild: int = param(60, Range(4, 10_000, integer=True),
                                 "subjects in synth-wild (40 images each)")
    display_size: int = param(96, Range(synthetic.MIN_SIZE, synthetic.MAX_SIZE, integer=True),
                              "image size of the figures")
    n_folds: int = param(10, Range(3, 100, integer=True),
                         "folds of the ESR protocol table (paper: 10)")
    image_size: int = param(48, Range(48, synthetic.MAX_SIZE, integer=True),
                            "image size of the synth-lab calibration baseline")
    wild_size: int = param(64, Range(48, synthetic.MAX_SIZE, integer=True),
                           "image size of the synth-wild baseline (blur and pose need pixels)")
    width: float = param(0.5, Range(0, 4, open_low=True),
                         "channel multiplier of the baseline network (1.0 is the paper network)")
    epochs: int = param(15, POSITIVE_INT, "training epochs of the synth-lab baseline")
    wild_width: float = param(0.25, Range(0, 4, open_low=True),
                              "channel multiplier of the synth-wild baseline")
    wild_epochs: int = param(20, POSITIVE_INT, "training epochs of the synth-wild baseline")
    batch_size: int = param(32, POSITIVE_INT, "mini-batch size of both baselines")
    lr: float = param(0.05, LEARNING_RATE, "SGD learning rate of both baselines")

    RELATIONS: ClassVar[Sequence[Relation]] = (
        relation(("n_folds", "n_subjects_lab"), lambda v: v["n_folds"] <= v["n_subjects_lab"],
                 lambda v: f"n_folds = {v['n_folds']} subject-independent folds need at least "
                           f"as many subjects: n_subjects_lab = {v['n_subjects_lab']}"),
    )
    UNUSED: ClassVar[Sequence[Unused]] = ()


@dataclass
class Calibration:
    """Test logits (N, 1, C) and labels of the baseline, its history and the classes."""

    logits: torch.Tensor
    labels: np.ndarray
    history: History
    classes: tuple[str, ...]


def calibrate(data: FaceDataset, *, width: float, epochs: int, lr: float, batch_size: int,
              seed: int, device: str = "auto", precision: str = "auto") -> Calibration:
    """Train the single network on a subject-independent split (20 % of subjects test, 15 %
    validation; :func:`fernb.data.splits.holdout`) with SGD (momentum 0.9), keeping the
    epoch with the lowest validation loss, and predict the test subjects."""
    split = holdout(data.labels, data.subjects, val_fraction=0.15, test_fraction=0.2, seed=seed)
    model = single_network(n_classes=data.n_classes, width=width, seed=seed)
    config = FitConfig(epochs=epochs, optimizer=sgd(lr), batch_size=batch_size, device=device,
                       precision=precision, seed=seed)
    history = fit(model, data.subset(split.train), data.subset(split.val), config)
    test = data.subset(split.test)
    return Calibration(predict(model, test, device=device, precision=precision), test.labels,
                       history, data.classes)


def calibration_table(calibrations: dict[str, Calibration]) -> pd.DataFrame:
    """Test images, test accuracy (%) and epochs trained per preset."""
    rows = [{"dataset": name, "test images": len(c.labels),
             "test accuracy (%)": round(100 * accuracy(c.logits, c.labels), 1),
             "epochs trained": len(c.history)} for name, c in calibrations.items()]
    return pd.DataFrame(rows).set_index("dataset")


def top_confusions_text(calibration: Calibration, k: int = 3) -> str:
    """The ``k`` largest confusions of a run in words, e.g. "fear taken for surprise (25%)"."""
    pairs = top_confusions(calibration.logits, calibration.labels, calibration.classes, k=k)
    return ", ".join(f"{t} taken for {p} ({100 * v:.0f}%)" for (t, p), v in pairs.items())


def weakest_classes_text(calibration: Calibration, k: int = 2) -> str:
    """The ``k`` classes recognised least (recall), e.g. "fear (31%) and disgust (40%)"."""
    recall = per_class_recall(calibration.logits, calibration.labels,
                              calibration.classes).dropna().sort_values(kind="stable")
    names = [f"{c} ({100 * v:.0f}%)" for c, v in recall.head(k).items()]
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def knob_table() -> pd.DataFrame:
    """Every knob's default per preset as text: "off" for a knob that is off by default, "-"
    for a knob of the other preset."""
    knobs = pd.DataFrame(synthetic.KNOBS).T
    text = knobs.astype(object).where(knobs.notna(), "-").astype(str)
    for name in knobs.columns:
        for preset in knobs.index:
            if name in synthetic.KNOBS[preset] and synthetic.KNOBS[preset][name] is None:
                text.loc[preset, name] = "off"
    return text


def _one_per_class(data: FaceDataset) -> np.ndarray:
    """Index of the first image of each class whose label is its clean label (on synth-lab a
    sequence's last frame, or its first for neutral)."""
    clean = data.meta.get("clean_label", data.labels)
    peak = True
    if "frame" in data.meta:
        peak = (data.meta["frame"] == data.meta["n_frames"] - 1) | (data.labels == 0)
    picks = []
    for c in range(data.n_classes):
        idx = np.flatnonzero((data.labels == c) & (clean == c) & peak)
        if not len(idx):
            raise ValueError(f"no image of class {data.classes[c]!r}; pass more subjects")
        picks.append(idx[0])
    return np.array(picks)


def cue_figure(size: int, seed: int, n_subjects: int = 4, small: int = 48) -> Figure:
    """The same synth-wild faces (one per class): without a cue, with a cue showing the label
    (``distractor=1``) at ``size`` and at ``small`` pixels, and with misleading cues (each
    cue another class's, as in a shortcut-reliance test)."""
    args = dict(n_subjects=n_subjects, seed=seed)
    plain = synthetic.generate("synth-wild", size=size, **args)
    cued = synthetic.generate("synth-wild", size=size, distractor=1.0, **args)
    tiny = synthetic.generate("synth-wild", size=small, distractor=1.0, **args)
    pick = _one_per_class(plain)
    flipped = synthetic.with_cues(cued.subset(pick), synthetic.misleading_cues(
        cued.labels[pick], cued.n_classes, seed))
    rows = {"no cue": (plain.images[pick], None),
            "cue = label": (cued.images[pick], cued.meta["cue"][pick]),
            f"cue = label,\n{small} px": (tiny.images[pick], tiny.meta["cue"][pick]),
            "misleading\ncue": (flipped.images, flipped.meta["cue"])}
    images, titles = [], []
    for images_row, cues in rows.values():
        images += list(images_row)
        titles += ([plain.classes[c] for c in plain.labels[pick]] if cues is None
                   else [f"cue: {plain.classes[c]}" for c in cues])
    return image_grid(images, titles, ncols=len(pick), row_labels=list(rows))


def blend_pairs_table() -> pd.DataFrame:
    """The structured-blend pairs (:data:`~fernb.data.synthetic.BLEND_PAIRS`) with the action
    units their prototypes share."""
    rows = []
    for a, b in synthetic.BLEND_PAIRS:
        shared = [au for au in synthetic.AU_NAMES
                  if au in synthetic.PROTOTYPES[a] and au in synthetic.PROTOTYPES[b]]
        rows.append({"emotions": f"{a} - {b}", "shared action units":
                     " + ".join(shared) or "none: neutral has no action unit"})
    return pd.DataFrame(rows).set_index("emotions")


def blend_figure(size: int, seed: int, n_subjects: int = 2) -> Figure:
    """The same synth-lab peak faces (one per class), every one blended with a second emotion
    at the largest weight: drawn uniformly (``blend_pairs="uniform"``) and from the FACS pairs
    (``"facs"``); titles name the two emotions. Neutral is left out: a neutral frame of a
    sequence shows no expression to blend."""
    args = dict(n_subjects=n_subjects, size=size, seed=seed, blend_prob=1.0,
                blend_strength=0.45)
    modes = {mode: synthetic.generate("synth-lab", blend_pairs=mode, **args)
             for mode in synthetic.BLEND_MODES}
    pick = _one_per_class(modes["uniform"])[1:]
    images, titles = [], []
    for data in modes.values():
        for i in pick:
            second = np.argsort(data.mixtures[i])[-2]
            images.append(data.images[i])
            titles.append(f"{data.classes[data.labels[i]]}\n+ {data.classes[second]}")
    return image_grid(images, titles, ncols=len(pick),
                      row_labels=[f"blend_pairs=\n{m!r}" for m in modes])


_ANNOTATION = {"label_noise": ("uniform flips (label_noise)", {}),
               "label_from_mixture": ("drawn from the mixture (facs blends)",
                                      dict(label_from_mixture=True, blend_pairs="facs"))}


def annotation_counts(n_subjects: int, seed: int) -> dict[str, pd.DataFrame]:
    """(clean label x annotated label) image counts of synth-wild at 48 px under the preset's
    uniform flips (key ``"label_noise"``) and under labels drawn from the visible mixture
    (``"label_from_mixture"``, with ``blend_pairs="facs"``)."""
    counts = {}
    for name, (_, knobs) in _ANNOTATION.items():
        data = synthetic.generate("synth-wild", n_subjects=n_subjects, size=48, seed=seed,
                                  **knobs)
        table = pd.crosstab(pd.Categorical.from_codes(data.meta["clean_label"], data.classes),
                            pd.Categorical.from_codes(data.labels, data.classes),
                            dropna=False)
        table.index.name, table.columns.name = "clean label", "annotated label"
        counts[name] = table
    return counts


def relabelled_share(counts: dict[str, pd.DataFrame]) -> dict[str, float]:
    """Share of images whose annotated label differs from the clean one, per setting."""
    return {name: 1 - np.trace(t.to_numpy()) / t.to_numpy().sum() for name, t in counts.items()}


def annotation_figure(counts: dict[str, pd.DataFrame]) -> Figure:
    """Where relabelled images go: for each clean class (rows), the percentage of its images
    annotated as each other class (diagonal left blank), one panel per setting."""
    shares = {name: 100 * t.div(t.sum(axis=1).clip(lower=1), axis=0)
              for name, t in counts.items()}
    top = max(float(np.max(v.to_numpy() * (1 - np.eye(len(v))))) for v in shares.values())
    fig, axes = plt.subplots(1, len(counts), figsize=(5.2 * len(counts), 4.4), squeeze=False)
    for ax, (name, share) in zip(axes[0], shares.items()):
        sns.heatmap(share, mask=np.eye(len(share), dtype=bool), annot=True, fmt=".1f",
                    cmap="Blues", vmin=0, vmax=top, cbar=False, square=True, ax=ax,
                    annot_kws={"fontsize": 8})
        ax.grid(False)
        ax.set_title(f"labels {_ANNOTATION[name][0]}, % of row", fontsize=11)
    fig.tight_layout()
    return fig


def motion_figure(size: int, seed: int, n_subjects: int = 2) -> Figure:
    """The same synth-lab peak faces (one per class) with the AUs' landmark motion at full
    scale, at half and removed (``motion`` 1, 0.5, 0): at 0 only texture cues remain."""
    scales = (1.0, 0.5, 0.0)
    sets = [synthetic.generate("synth-lab", n_subjects=n_subjects, size=size, seed=seed,
                               motion=m) for m in scales]
    pick = _one_per_class(sets[0])
    images = [img for data in sets for img in data.images[pick]]
    titles = [sets[0].classes[c] for c in sets[0].labels[pick]]
    titles += [""] * (len(images) - len(titles))
    return image_grid(images, titles, ncols=len(pick), row_labels=[f"motion={m}" for m in scales])
