"""Pictures and tables of the synthetic generator's knobs for the data chapter: the same
faces with a mechanism knob off and on (:mod:`fernb.data.synthetic`)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from fernb.data import synthetic
from fernb.data.datasets import FaceDataset
from fernb.figures import image_grid


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
    """The same synth-lab peak faces (one per class) with the AUs' landmark motion doubled,
    at the default scale, at half and removed (``motion`` 2, 1, 0.5, 0): at 0 only texture
    cues remain."""
    scales = (2.0, 1.0, 0.5, 0.0)
    sets = [synthetic.generate("synth-lab", n_subjects=n_subjects, size=size, seed=seed,
                               motion=m) for m in scales]
    pick = _one_per_class(sets[0])
    images = [img for data in sets for img in data.images[pick]]
    titles = [sets[0].classes[c] for c in sets[0].labels[pick]]
    titles += [""] * (len(images) - len(titles))
    return image_grid(images, titles, ncols=len(pick), row_labels=[f"motion={m}" for m in scales])
