"""Scores of one trained model on its test faces: predictions under each test condition, the
relevance map's statistics and where its mass lies, and Grad-CAM before and after the map
multiplies the features.

Beyond the paper, the synthetic faces know where each expression's evidence lies
(:attr:`fernb.data.datasets.FaceDataset.masks`), so every map is scored per face: the share of
its mass inside the evidence regions (:func:`fernb.explain.evidence_score`), whether its peak
falls inside (:func:`fernb.explain.pointing_game`), the share of its mass on evidence *away*
from the landmarks (more than two target sigmas from every one: forehead, glabella, cheek and
chin texture), which the landmark targets of eq. (4) cannot ask for, and, where a distractor
cue is painted, the share on the cue's patch. Each has its chance level (a map without
information: the region's share of the image).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from fernb.evaluate import predict
from fernb.explain import chance_level, evidence_score, gradcam, pointing_game

from .data import Prepared, cue_masks

HALF = 0.5  # a map's "peak area": the share of its pixels at or above half its peak


def peak_area(maps: np.ndarray) -> np.ndarray:
    """(N,) share of each map's pixels at or above half of its own peak: a measure of how
    sparse a map is that does not depend on its scale (1 for a flat map; NaN for an
    all-zero one)."""
    peak = maps.max(axis=(-2, -1), keepdims=True)
    share = (maps >= HALF * peak).mean(axis=(-2, -1))
    return np.where(peak[..., 0, 0] > 0, share, np.nan)


def spread(maps: np.ndarray) -> tuple[np.ndarray, float]:
    """How much maps vary: within each face, the coefficient of variation of its pixels
    ((N,), 0 for a flat map), and between faces, the mean over pixels of the standard
    deviation across faces divided by the mean map's mean (0 when every face gets the same
    map)."""
    mean = maps.mean(axis=(-2, -1))
    within = np.where(mean > 0, maps.std(axis=(-2, -1)) / np.where(mean > 0, mean, 1), np.nan)
    overall = float(maps.mean())
    between = float(maps.std(axis=0).mean() / overall) if overall > 0 else float("nan")
    return within, between


def _shares(prefix: str, maps: np.ndarray, regions: Mapping[str, np.ndarray],
            rows: dict[str, np.ndarray]) -> None:
    for name, region in regions.items():
        rows[f"{prefix}_{name}"] = evidence_score(maps, region)
    if "evidence" in regions:
        rows[f"{prefix}_pointing"] = pointing_game(maps, regions["evidence"])


def score(model: nn.Module, prep: Prepared, test: np.ndarray,
          conditions: Mapping[str, tuple[torch.Tensor, np.ndarray | None]],
          show: np.ndarray, *, cam_faces: int = 0, device: str = "auto",
          precision: str = "auto"
          ) -> tuple[dict[str, np.ndarray], pd.DataFrame, dict[str, np.ndarray]]:
    """Score ``model`` on the faces ``test`` of ``prep``.

    Args:
        conditions: test condition -> (images (N, C, H, W), the class each face's cue shows
            or None); the first condition's images are the ones whose maps are scored.
        show: test faces (indices into ``prep``) whose maps are kept for the figures.
        cam_faces: Grad-CAM (two backward passes per face) is scored on this many test faces,
            evenly spaced, and the shown ones (0: every face); its columns are NaN elsewhere.

    Returns:
        ``arrays``: ``index``, ``label``, ``classes`` and ``logits_<condition>`` (N, C);
        ``scores``: one row per face with ``pred_<condition>`` (and ``cue_<condition>``), and
        for the first condition the relevance map's ``map_l1`` (mean |x_hat|, eq. 6 per
        pixel), ``map_peak_area``, ``map_within`` (coefficient of variation), ``map_mse``
        (error to the targets, eq. 4), its mass shares (``map_evidence``, ``map_pointing``,
        ``map_away``, ``map_cue``), the same for Grad-CAM before the products (``cam_*``) and
        after them (``gated_*``), and the chance level of each region (``chance_*``);
        ``shown``: the shown faces' ``index``, ``image``, ``map`` (|x_hat|), ``cam`` and
        ``gated`` maps, and ``between`` (the maps' spread between faces).
    """
    names = list(conditions)
    run = dict(device=device, precision=precision)
    arrays: dict[str, np.ndarray] = {"index": test, "label": prep.labels[test],
                                     "classes": np.array(prep.classes)}
    rows: dict[str, np.ndarray] = {"index": test, "label": prep.labels[test]}
    for name, (x, cues) in conditions.items():
        logits = predict(model, x, **run)[:, 0].numpy()  # (N, C)
        arrays[f"logits_{name}"] = logits
        rows[f"pred_{name}"] = logits.argmax(1)
        if cues is not None:
            rows[f"cue_{name}"] = np.asarray(cues)
    x = conditions[names[0]][0]
    regions: dict[str, np.ndarray] = {}
    if prep.masks is not None:
        regions["evidence"] = prep.masks[test]
        if prep.near is not None:
            regions["away"] = prep.masks[test] & ~prep.near[test]
    if conditions[names[0]][1] is not None:
        regions["cue"] = cue_masks(prep, test)
    for name, region in regions.items():
        rows[f"chance_{name}"] = chance_level(region)

    relevance = None
    if hasattr(model, "forward_with_map"):
        signed = predict(model, x, output="forward_with_map", **run)[1][:, 0].numpy()
        relevance = np.abs(signed)  # (N, H, W): eq. (6)'s |x_hat|, what the scores weigh
        rows["map_l1"] = relevance.mean(axis=(1, 2))
        rows["map_peak_area"] = peak_area(relevance)
        rows["map_within"], between = spread(relevance)
        if prep.maps is not None:
            rows["map_mse"] = ((signed - prep.maps[test, 0].numpy()) ** 2).mean(axis=(1, 2))
        _shares("map", relevance, regions, rows)
    else:
        between = float("nan")
    pos = np.searchsorted(test, show)
    n = len(test)
    chosen = np.arange(n) if not cam_faces or cam_faces >= n else \
        np.union1d(np.linspace(0, n - 1, cam_faces).round().astype(int), pos)
    param = next(model.parameters())
    images, labels = x[chosen].to(param.device), prep.labels[test][chosen].tolist()
    cams = {"cam": gradcam(model, images, member=0, targets=labels),
            "gated": gradcam(model, images, model.gated_layer(), member=0, targets=labels)}
    for name, maps in cams.items():
        found: dict[str, np.ndarray] = {}
        _shares(name, maps, {k: v[chosen] for k, v in regions.items()}, found)
        for column, values in found.items():
            rows[column] = np.full(n, np.nan)
            rows[column][chosen] = values

    at = np.searchsorted(chosen, pos)
    shown = {"index": show, "image": x[pos, 0].numpy(), "cam": cams["cam"][at],
             "gated": cams["gated"][at], "between": np.array(between)}
    if relevance is not None:
        shown["map"] = relevance[pos]
    return arrays, pd.DataFrame(rows), shown
