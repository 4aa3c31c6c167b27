"""Fig. 5 (confusion matrices) and Fig. 8 (Grad-CAM maps, and their evidence scores on the
synthetic faces' expression regions)."""
from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from fernb.ensemble import t2v_votes
from fernb.evaluate import TestResult, normalized_confusion, paired_ttest
from fernb.explain import chance_level, evidence_score, gradcam
from fernb.studies.faml.protocol import FGA, Regime, Results
from fernb.studies.faml.tables import name, rules

def confusion(regime: Regime, model: str, rule: object | None = None) -> pd.DataFrame:
    """Row-normalised confusion matrix pooled over replicates: of every network (``rule``
    None) or of the ensembles under ``rule``."""
    preds, labels = [], []
    for r in regime.replicates(model):
        z = regime.logits[(model, r)]
        if rule is None:
            preds.append(z.argmax(-1).T.reshape(-1))
            labels.append(np.tile(regime.labels, z.shape[1]))
        else:
            preds.append(rule(torch.from_numpy(z)).numpy())
            labels.append(regime.labels)
    return normalized_confusion(np.concatenate(preds), np.concatenate(labels), regime.classes)


def recalls(regime: Regime, model: str) -> pd.Series:
    """Recall of every class over all of ``model``'s networks, lowest first."""
    cm = confusion(regime, model)
    return pd.Series(np.diag(cm.to_numpy()), index=cm.index).sort_values(kind="stable")


def plot_confusions(results: Results) -> Figure:
    """Fig. 5: row-normalised confusion matrices of every R18 network, every R18+FAML
    network, and the R18+FAML-FGA-T2V ensembles (test faces pooled over replicates)."""
    d = results.default
    panels = (("R18 networks", confusion(d, "R18")),
              ("R18+FAML networks", confusion(d, "FAML")),
              ("R18+FAML-FGA-T2V", confusion(d, FGA, rules(results.settings)["T2V"])))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    short = [c[:3] for c in d.classes]
    for ax, (title, cm) in zip(axes, panels):
        ax.imshow(cm.to_numpy(), vmin=0, vmax=1, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm.to_numpy()):
            ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if v > 0.5 else "black")
        ax.set(title=title, xticks=range(len(short)), yticks=range(len(short)),
               xticklabels=short, yticklabels=short, xlabel="predicted", ylabel="true")
        ax.grid(False)
    fig.tight_layout()
    return fig


FIG8_ROWS = ("R18", "R18+FA", "FAML", FGA, "FAML-FGA-T2V")


def example_images(regime: Regime) -> np.ndarray:
    """Indices of one test image per class (the first of each), Fig. 8's columns."""
    return np.array([np.flatnonzero(regime.labels == c)[0] for c in range(len(regime.classes))
                     if np.any(regime.labels == c)])


def saliency(results: Results, images: np.ndarray) -> dict[str, np.ndarray]:
    """Grad-CAM maps (B, H, W) of the true class for each Fig. 8 row: the first network of
    R18, R18+FA, FAML and FAML-FGA, and FAML-FGA-T2V as the paper draws it, the maps of its
    networks summed with their T2V votes for the class (eq. 10-12), renormalised to [0, 1]."""
    d, s = results.default, results.settings
    x, y = d.test.tensors(images)
    maps = {}
    for row in FIG8_ROWS:
        model = row.removesuffix("-T2V")
        count = d.logits[(model, 0)].shape[1]
        members = range(count) if row.endswith("T2V") else range(1)
        per_net = [gradcam(results.network(model, 0, k), x, member=0, targets=y.tolist())
                   for k in members]
        if not row.endswith("T2V"):
            maps[row] = per_net[0]
            continue
        z = d.logits[(model, 0)][images]  # (B, M, C)
        votes = t2v_votes(z, s.alpha, s.beta).numpy()[np.arange(len(images)), :, y.numpy()]
        summed = np.einsum("bm,mbhw->bhw", votes, np.stack(per_net))
        peak = summed.max(axis=(1, 2), keepdims=True)
        maps[row] = np.where(peak > 0, summed / np.where(peak > 0, peak, 1), 0).astype(
            np.float32)
    return maps


def saliency_grid(regime: Regime, images: np.ndarray, maps: Mapping[str, np.ndarray]
                  ) -> Figure:
    """Fig. 8 analogue: the input faces (first row) and each model's map on them."""
    from fernb.explain import overlay
    from fernb.figures import image_grid
    gray = regime.test.images[images]
    tiles = list(gray)
    titles = [regime.classes[c] for c in regime.labels[images]]
    for row, m in maps.items():
        tiles += [overlay(g, cam) for g, cam in zip(gray, m)]
        titles += [(name(row) if i == 0 else "") + (" (empty)" if cam.max() == 0 else "")
                   for i, cam in enumerate(m)]
    return image_grid(tiles, titles, ncols=len(images))


def evidence(results: Results, n_images: int) -> pd.DataFrame | None:
    """Per test image (the first ``n_images`` with an evidence region), the share of the
    Grad-CAM mass inside the expression's evidence regions, mean over the networks of R18
    and of FAML (replicate 1), with chance (a uniform map's score); None without masks."""
    d = results.default
    if d.test.masks is None:
        return None
    chosen = np.flatnonzero(d.test.masks.reshape(len(d.test), -1).any(1))[:n_images]
    x, y = d.test.tensors(chosen)
    masks = d.test.masks[chosen]
    frame = pd.DataFrame({"image": chosen, "chance": chance_level(masks)})
    for model in ("R18", "FAML"):
        scores = [evidence_score(gradcam(results.network(model, 0, k), x, member=0,
                                         targets=y.tolist()), masks)
                  for k in range(d.logits[(model, 0)].shape[1])]
        frame[name(model)] = np.nanmean(np.stack(scores), axis=0)
    return frame.dropna().set_index("image")


def evidence_test(frame: pd.DataFrame) -> TestResult:
    """R18+FAML's evidence score against R18's, paired over images."""
    return paired_ttest(frame["R18+FAML"], frame["R18"], unit="images")


def evidence_summary(frame: pd.DataFrame | None) -> pd.DataFrame:
    """Mean evidence score (share of the map's mass on the expression's regions) of each
    model over the images, next to chance; a note when the faces carry no evidence masks."""
    if frame is None or not len(frame):
        return pd.DataFrame({"note": ["these faces carry no evidence masks (only the "
                                      "synthetic sets have them)"]})
    table = frame.mean().to_frame("mean evidence score").T
    table.insert(0, "images", len(frame))
    return table
