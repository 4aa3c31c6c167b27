"""The chapter's figures: target maps (Fig. 6), the augmentation moving them (Figs. 7-8),
relevance maps with their scale (Figs. 9-10), Grad-CAM before and after the map, the training
curves of both readings of eq. (1), and the mechanism regime's cue."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from fernb import figures
from fernb.data import synthetic
from fernb.data.datasets import FaceDataset
from fernb.figures import curves_frame, training_curves
from fernb.models.relevance import target_maps

from .data import Prepared
from .protocol import Results, augmentation
from .settings import Settings
from .tables import gate_histories


def targets(prep: Prepared, index: int, fractions: Sequence[float]) -> Figure:
    """Fig. 6: a face and its target maps for growing sigma (as fractions of the side)."""
    if prep.maps is None:
        raise ValueError(f"{prep.name} has no landmarks, so no target maps")
    side = prep.x.shape[-1]
    images = [prep.x[index, 0].numpy()]
    titles = ["face"]
    for f in fractions:
        images.append(target_maps(prep.landmarks[index][None], prep.x.shape[-2:],
                                  sigma=f * side)[0, 0].numpy())
        titles.append(f"sigma = {f * side:.1f} px")
    return figures.image_grid(images, titles, ncols=len(images))


def augmented(prep: Prepared, indices: np.ndarray, s: Settings, seed: int = 0
              ) -> tuple[Figure, dict[str, float]]:
    """Figs. 7-8: faces (top), the same faces after eqs. (8)-(9) (middle) and their target
    maps moved by the same warp (bottom), with what the border does to the maps: the largest
    value of a moved map in the band the warp brought in from outside (0 with zeros outside;
    a mirrored border would copy a landmark's peak there) and its largest value overall."""
    aug = augmentation(replace(s, augment=True), with_maps=prep.maps is not None)
    x = prep.x[indices]
    maps = prep.maps[indices] if prep.maps is not None else None
    labels = torch.from_numpy(prep.labels[indices])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        warped, ys = aug(x, (labels, maps) if maps is not None else labels)
    rows = [list(x[:, 0].numpy()), list(warped[:, 0].numpy())]
    labels_left = ["face", "eqs. 8-9"]
    border = {}
    if maps is not None:
        moved = ys[1][:, 0]
        rows.append(list(moved.numpy().clip(0, 1)))
        labels_left.append("moved target")
        # Where the warp reads outside the image: warp an all-ones map with zeros outside.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _, (_, inside) = aug(x, (labels, torch.ones_like(maps)))
        outside = inside[:, 0] == 0
        border = {"outside_peak": float(moved[outside].max()) if outside.any() else 0.0,
                  "moved_peak": float(moved.max()),
                  "outside_share": float(outside.float().mean())}
    fig = figures.image_grid([im for row in rows for im in row], ncols=len(indices),
                             row_labels=labels_left)
    return fig, border


def map_rows(rows: Sequence[tuple[str, np.ndarray]], faces: np.ndarray,
             titles: Sequence[str], *, cmap: str = "magma") -> Figure:
    """A row of faces, then one row per ``(label, maps (N, H, W))``, each row shown on its
    own colour scale from 0 to its largest value (99th percentile), with a colour bar giving
    that scale, so a map's structure shows whatever its size."""
    n = len(faces)
    fig, axes = plt.subplots(1 + len(rows), n + 1, figsize=(1.5 * n + 0.9, 1.6 * (1 + len(rows))),
                             gridspec_kw={"width_ratios": [1] * n + [0.08]}, squeeze=False)
    for j in range(n):
        axes[0, j].imshow(faces[j], cmap="gray", vmin=0, vmax=1)
        axes[0, j].set_title(titles[j], fontsize=8)
    axes[0, n].set_axis_off()
    for i, (label, maps) in enumerate(rows, start=1):
        top = float(np.percentile(maps, 99)) or float(maps.max()) or 1.0
        for j in range(n):
            image = axes[i, j].imshow(maps[j], cmap=cmap, vmin=0, vmax=top)
        fig.colorbar(image, cax=axes[i, n])
        axes[i, n].tick_params(labelsize=7)
        axes[i, 0].text(-0.08, 0.5, label, transform=axes[i, 0].transAxes, ha="right",
                        va="center", fontsize=8, wrap=True)
    for ax in axes[:, :n].flat:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def relevance_maps(results: Results, prep: Prepared, rows: Sequence[tuple[str, str]], *,
                   fold: int = 0, show_targets: bool = False) -> Figure | None:
    """Figs. 9-10: the shown test faces of ``fold``, optionally their target maps, then one
    row of |x_hat| per ``(run key, label)``; None when a run is missing or has no map."""
    if any(key not in results.shown or "map" not in results.shown[key] for key, _ in rows):
        return None
    first = results.shown[rows[0][0]]
    index = first["index"]
    maps = []
    if show_targets and prep.maps is not None:
        maps.append(("target", prep.maps[index, 0].numpy()))
    maps += [(label, results.shown[key]["map"]) for key, label in rows]
    titles = [prep.classes[c] for c in prep.labels[index]]
    return map_rows(maps, first["image"], titles)


def fig9(results: Results, prep: Prepared) -> Figure | None:
    """Fig. 9: the targets and the fully supervised maps at both lambdas (first fold)."""
    s = results.settings
    low = results.select("figure", "fully")
    if low.empty:
        return None
    return relevance_maps(results, prep, [("default/f0/fully", f"lambda = {s.lambda_fully:g}"),
                                          (low["key"].iloc[0], f"lambda = {s.lambda_fully_low:g}")],
                          show_targets=True)


def fig10(results: Results, prep: Prepared) -> Figure | None:
    """Fig. 10: the weakly supervised maps at both lambdas (first fold)."""
    s = results.settings
    high = results.select("figure", "weakly")
    if high.empty:
        return None
    return relevance_maps(results, prep,
                          [("default/f0/weakly", f"lambda = {s.lambda_weakly:g}"),
                           (high["key"].iloc[0], f"lambda = {s.lambda_weakly_high:g}")])


def gradcam_rows(results: Results, prep: Prepared, variants: Sequence[str], *,
                 regime: str = "default", fold: int = 0) -> Figure | None:
    """Grad-CAM of ``variants`` on the shown faces of ``fold``: before the map multiplies
    the features and after (each row on its own scale; Grad-CAM maps lie in [0, 1])."""
    keys = {v: f"{regime}/f{fold}/{v}" for v in variants}
    keys = {v: k for v, k in keys.items() if k in results.shown}
    if not keys:
        return None
    first = results.shown[next(iter(keys.values()))]
    rows = []
    for variant, key in keys.items():
        rows.append((f"{variant}: before", results.shown[key]["cam"]))
        if variant != "baseline":
            rows.append((f"{variant}: after", results.shown[key]["gated"]))
    titles = [prep.classes[c] for c in prep.labels[first["index"]]]
    return map_rows(rows, first["image"], titles, cmap="inferno")


def gate_curves(results: Results, *, majority: float | None = None) -> Figure | None:
    """Training curves on the first fold of the baseline and of each ``gate_contrast``
    variant under both readings of eq. (1): the literal product and the mean-normalised
    gate."""
    histories = gate_histories(results)
    if len(histories) < 2:
        return None
    return training_curves(curves_frame(histories), majority=majority,
                           title="Both readings of eq. 1, fold 0")


def cue_examples(faces: FaceDataset, indices: np.ndarray, strength: float, seed: int
                 ) -> Figure:
    """The mechanism regime's faces ``indices`` of ``faces``: each with its cue as in
    training, independent of the label and misleading (label / cue class in the titles)."""
    chosen = faces.subset(indices)
    n, k = len(indices), chosen.n_classes
    cues = {"as trained": synthetic.sample_cues(chosen.labels, strength, k, seed),
            "independent": synthetic.sample_cues(chosen.labels, 0.0, k, seed + 1),
            "misleading": synthetic.misleading_cues(chosen.labels, k, seed + 2)}
    images, titles = [], []
    for c in cues.values():
        images += list(synthetic.with_cues(chosen, c).images)
        titles += [f"{chosen.classes[y][:5]} / cue {chosen.classes[q][:5]}"
                   for y, q in zip(chosen.labels, c)]
    return figures.image_grid(images, titles, ncols=n, row_labels=list(cues))
