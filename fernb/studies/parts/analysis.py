"""What the stored networks and the landmarks show: Sec. V-A (how far each expression moves
each part's points, what a part's landmarks tell a linear probe), Sec. V-B (landmark errors
before and after fine-tuning, Fig. 10) and Sec. IV-C / V-C (Grad-CAM evidence, Fig. 11)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fernb.data.datasets import FaceDataset
from fernb.device import resolve_device
from fernb.explain import branch_maps, chance_level, evidence_score, union_map
from fernb.landmarks import N_LANDMARKS
from fernb.models.members import Members
from fernb.models.parts import ENSEMBLE_PARTS, LANDMARK_SETS, PartNetwork, normalise_landmarks, \
    pixel_landmarks
from fernb.studies.parts.protocol import Network
from fernb.studies.parts.results import Results
from fernb.transfer import inputs, predict_landmarks

# Points no action unit of the generator moves (the upper jaw corners and the top of the
# nose bridge): aligning faces on them removes pose, not expression.
RIGID_POINTS = (0, 1, 15, 16, 27, 28)


# ---------------------------------------------------------------------- stored networks

def network(results: Results, net: Network, state: str = "final") -> PartNetwork:
    """One stored network, after stage 1 (``state="stage1"``) or trained (``"final"``), in
    eval mode on the study's device."""
    standardize = state == "stage1" or net.job.spec.get("standardize", True)
    model = net.job.spec["net"].build(standardize=standardize)
    entry = results.stage1(net) if state == "stage1" else results.entry(net)
    model.load_state_dict(entry.state(state))
    return model.to(resolve_device(results.settings.device)).eval()


def ensemble(results: Results, regime: str, where: str, kind: str, *, seed: int = 0,
             state: str = "final") -> Members:
    """An ensemble's stored networks as :class:`~fernb.models.members.Members`."""
    return Members([network(results, n, state)
                    for n in results.networks(regime, where, kind, seed)])


# ---------------------------------------------------------------- V-A: the landmarks

def _similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The similarity transform (2, 3) that maps ``source`` (K, 2) points closest to
    ``target`` by least squares (rotation, uniform scale, shift)."""
    a = np.zeros((2 * len(source), 4))
    a[0::2] = np.c_[source[:, 0], -source[:, 1], np.ones(len(source)), np.zeros(len(source))]
    a[1::2] = np.c_[source[:, 1], source[:, 0], np.zeros(len(source)), np.ones(len(source))]
    p, *_ = np.linalg.lstsq(a, target.reshape(-1), rcond=None)
    return np.array([[p[0], -p[1], p[2]], [p[1], p[0], p[3]]])


def aligned(points: np.ndarray, reference: np.ndarray,
            rigid: Sequence[int] = RIGID_POINTS) -> np.ndarray:
    """(N, 68, 2) landmarks mapped onto ``reference`` (68, 2) by the similarity transform
    of their ``rigid`` points: what pose moved is undone, what an expression moved stays."""
    out = np.empty_like(points, dtype=np.float64)
    for i, face in enumerate(points):
        m = _similarity(face[list(rigid)], reference[list(rigid)])
        out[i] = face @ m[:, :2].T + m[:, 2]
    return out


def part_displacements(data: FaceDataset, *, align: bool = True) -> pd.DataFrame:
    """How far each expression moves each part's landmarks (pixels): per subject, the
    distance between a point's mean position on the emotion's images and on the subject's
    neutral ones, averaged over the part's points and the subjects. With ``align``, every
    face is first aligned on :data:`RIGID_POINTS` to its subject's mean neutral face, so
    that pose (rotation, scale, shift) does not count as motion. The last row,
    ``neutral (floor)``, compares each subject's neutral images split in two halves: what
    the statistic reads when nothing moves. Rows: emotions; columns: parts."""
    if "neutral" not in data.classes:
        raise ValueError(f"part_displacements needs neutral faces; {data.name!r} has classes "
                         f"{data.classes}")
    neutral = data.classes.index("neutral")
    shifts: dict[str, list[np.ndarray]] = {}
    for s in np.unique(data.subjects):
        mine = data.subjects == s
        rest = data.landmarks[mine & (data.labels == neutral)].astype(np.float64)
        if len(rest) < 2 or not np.isfinite(rest).all():
            continue
        reference = rest.mean(0)
        if align:
            rest = aligned(rest, reference)
            reference = rest.mean(0)
        half = len(rest) // 2
        shifts.setdefault("neutral (floor)", []).append(
            np.linalg.norm(rest[:half].mean(0) - rest[half:].mean(0), axis=-1))
        for c, emotion in enumerate(data.classes):
            faces = data.landmarks[mine & (data.labels == c)].astype(np.float64)
            if c == neutral or not len(faces) or not np.isfinite(faces).all():
                continue
            faces = aligned(faces, reference) if align else faces
            shifts.setdefault(emotion, []).append(
                np.linalg.norm(faces.mean(0) - reference, axis=-1))
    order = [e for e in data.classes if e in shifts] + ["neutral (floor)"]
    rows = {e: {p: float(np.mean(np.stack(shifts[e]), axis=0)[list(LANDMARK_SETS[p])].mean())
                for p in ENSEMBLE_PARTS} for e in order if e in shifts}
    return pd.DataFrame.from_dict(rows, orient="index")


def displacements(faces) -> pd.DataFrame:
    """:func:`part_displacements` of a face set (a :class:`~fernb.studies.parts.protocol.
    Faces`), or an empty table when it has no neutral faces to measure from."""
    data = faces.load()
    if "neutral" not in data.classes:
        return pd.DataFrame(columns=list(ENSEMBLE_PARTS), dtype=float)
    return part_displacements(data)


def probe_accuracy(train_points: np.ndarray, train_labels: np.ndarray,
                   test_points: np.ndarray, test_labels: np.ndarray) -> float:
    """Test accuracy of a logistic regression (standardised inputs) from landmark
    coordinates to expressions; rows with missing points are left out."""
    fit_rows = np.isfinite(train_points).all(1)
    test_rows = np.isfinite(test_points).all(1)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    probe.fit(train_points[fit_rows], train_labels[fit_rows])
    return float(probe.score(test_points[test_rows], test_labels[test_rows]))


def landmark_probe(results: Results, where: str | None = None) -> pd.DataFrame:
    """What each part's landmarks tell about the expression (Sec. V-A, made measurable) on
    a lab trial (default: the first) or on the wild set (``where="wild"``): a linear probe's
    test accuracy (%) from the part's true landmarks and from the landmarks the place's
    stage-1 networks predict (EL's parts, FTL's first network for all 68), and the
    networks' localisation error on the test faces (pixels)."""
    where = where or f"lab-t{results.settings.trials[0]}"
    if where == "wild":
        data, split = results.plan.wild.load(), results.plan.wild_split
    else:
        data = results.plan.lab.load()
        split = results.plan.lab_splits[int(where.removeprefix("lab-t"))]
    nets = {n.part: n for n in results.networks("default", where, "el")}
    nets["full"] = results.networks("default", where, "ftl")[0]
    x = inputs(data)
    rows = {}
    for part, net in nets.items():
        truth = normalise_landmarks(data.landmarks, data.image_size, part)
        guess = predict_landmarks(network(results, net, "stage1"), x).numpy()
        rows[part] = {
            "true landmarks (%)": 100 * probe_accuracy(
                truth[split.train], data.labels[split.train], truth[split.test],
                data.labels[split.test]),
            "predicted landmarks (%)": 100 * probe_accuracy(
                guess[split.train], data.labels[split.train], guess[split.test],
                data.labels[split.test]),
            "localisation error (px)": float(np.nanmean(np.abs(guess - truth)[split.test])
                                             * data.image_size[0])}
    return pd.DataFrame.from_dict(rows, orient="index")


# ------------------------------------------------------------- V-B: landmarks after

def error_table(results: Results, where: str = "wild") -> pd.DataFrame:
    """Sec. V-B: each transfer network's mean absolute landmark error (pixels) on the
    validation faces with the localisation head of stage 1, before and after fine-tuning,
    and a paired t-test over the faces (one network each: the faces are the units). Rows:
    (network, part): EL's part networks and each FTL network's part points."""
    from fernb.evaluate import paired_ttest
    size = results.settings.image_size
    rows = {}
    for kind in ("el", "ftl"):
        for net in results.networks("default", where, kind):
            errors = results.entry(net).arrays("errors")
            parts = [net.part] if kind == "el" else list(ENSEMBLE_PARTS)
            for part in parts:
                before, after = size * errors[f"before_{part}"], size * errors[f"after_{part}"]
                test = paired_ttest(after, before, unit="faces")
                rows[(f"EL {part}" if kind == "el" else net.name, part)] = {
                    "before (px)": float(before.mean()), "after (px)": float(after.mean()),
                    "change (px)": float(after.mean() - before.mean()),
                    "change (%)": 100 * float(after.mean() / before.mean() - 1),
                    "p": test.p, "faces": test.n}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["network", "part"])
    return table


def landmark_pairs(results: Results, x: torch.Tensor, where: str = "wild"
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Fig. 10: the 68 points EL's part networks predict for images ``x`` before and after
    fine-tuning (the stage-1 localisation heads throughout), (N, 68, 2) pixels each."""
    size = tuple(x.shape[-2:])
    pairs = []
    for state in ("stage1", "final"):
        points = np.full((len(x), N_LANDMARKS, 2), np.nan, dtype=np.float32)
        for net in results.networks("default", where, "el"):
            model = network(results, net, state)
            points[:, list(LANDMARK_SETS[net.part])] = pixel_landmarks(
                predict_landmarks(model, x), size)
        pairs.append(points)
    return pairs[0], pairs[1]


# ----------------------------------------------------------------- IV-C, V-C: Grad-CAM

# How each part's evidence region is drawn from its landmarks: a filled hull per group of
# points, or a thick line along them (the jaw is a line around the face).
_REGIONS: dict[str, tuple[str, tuple[tuple[int, ...], ...]]] = {
    "eyebrows": ("line", (tuple(range(17, 22)), tuple(range(22, 27)))),
    "eyes": ("hull", (tuple(range(36, 42)), tuple(range(42, 48)))),
    "nose": ("hull", (tuple(range(27, 36)),)),
    "mouth": ("hull", (tuple(range(48, 60)),)),
    "jaw": ("line", (tuple(range(0, 17)),)),
}


def part_masks(landmarks: np.ndarray, size: tuple[int, int], *, margin: float = 0.06
               ) -> dict[str, np.ndarray]:
    """Binary (N, H, W) region of each part around its landmarks: the eyes', nose's and
    mouth's hulls and lines along the eyebrows and the jaw, widened by ``margin`` of the
    image side on every side."""
    points = np.asarray(landmarks, dtype=np.float32)
    if points.ndim != 3 or points.shape[1:] != (N_LANDMARKS, 2):
        raise ValueError(f"expected (N, {N_LANDMARKS}, 2) landmarks, got {points.shape}")
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), got {margin}")
    h, w = size
    grow = max(1, round(margin * max(h, w)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    masks = {}
    for part, (shape, groups) in _REGIONS.items():
        out = np.zeros((len(points), h, w), dtype=np.uint8)
        for i, face in enumerate(points):
            if not np.isfinite(face).all():
                continue
            for group in groups:
                pts = np.round(face[list(group)]).astype(np.int32)
                if shape == "hull":
                    cv2.fillConvexPoly(out[i], cv2.convexHull(pts), 1)
                else:
                    cv2.polylines(out[i], [pts], False, 1, thickness=1)
            out[i] = cv2.dilate(out[i], kernel)
        masks[part] = out
    return masks


def gradcam_maps(results: Results, where: str, x: torch.Tensor, targets: np.ndarray
                 ) -> dict[str, np.ndarray]:
    """Grad-CAM maps (B, H, W) explaining the ``targets`` classes (Sec. IV-C, eqs. 5-6, at
    each network's last convolution): the union (pixel-wise maximum) of the Baseline's and
    of FTL's maps, as Fig. 11, and one map per EL part network."""
    targets = np.asarray(targets, dtype=np.int64)
    x = x.to(resolve_device(results.settings.device))
    maps: dict[str, np.ndarray] = {}
    for kind, name in (("baseline", "Baseline"), ("ftl", "FTL")):
        model = ensemble(results, "default", where, kind)
        maps[name] = union_map(branch_maps(model, x, targets=targets))
    el = ensemble(results, "default", where, "el")
    for part, part_maps in zip(ENSEMBLE_PARTS, branch_maps(el, x, targets=targets)):
        maps[f"EL {part}"] = part_maps
    return maps


def evidence_scores(maps: Mapping[str, np.ndarray], regions: Mapping[str, np.ndarray]
                    ) -> dict[str, dict[str, np.ndarray]]:
    """Each map's share of mass inside each region, per image (NaN where a map is empty)."""
    return {name: {region: np.asarray(evidence_score(cams, masks), dtype=float)
                   for region, masks in regions.items()} for name, cams in maps.items()}


def evidence_table(scores: Mapping[str, Mapping[str, np.ndarray]],
                   regions: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Mean evidence score of each map (rows) in each region (columns) over the images where
    the map has mass, and, last row, each region's share of the image (what a uniform map
    scores)."""
    rows = {name: {region: float(np.nanmean(v)) if np.isfinite(v).any() else np.nan
                   for region, v in by_region.items()} for name, by_region in scores.items()}
    rows["chance (area share)"] = {region: float(np.mean(chance_level(masks)))
                                   for region, masks in regions.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def gradcam_picks(data: FaceDataset, test: np.ndarray,
                  emotions: Sequence[str] = ("surprise", "disgust", "happiness")) -> np.ndarray:
    """Indices of one test face per emotion of Fig. 11 (surprise, disgust, happiness), the
    first of each with landmarks; falls back to the first test faces."""
    finite = np.isfinite(data.landmarks[test]).all(axis=(1, 2))
    picks = []
    for emotion in emotions:
        if emotion in data.classes:
            hits = test[(data.labels[test] == data.classes.index(emotion)) & finite]
            if len(hits):
                picks.append(hits[0])
    return np.array(picks or test[finite][:3])


def gradcam_evidence(results: Results, n_images: int, where: str | None = None
                     ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray],
                                pd.DataFrame]:
    """Grad-CAM evidence on up to ``n_images`` test faces of a lab trial (those with
    landmarks), explaining their true classes: the per-face scores of every map in every
    part's region (and the expression's, where the data have evidence masks), the regions,
    and :func:`evidence_table`."""
    where = where or f"lab-t{results.settings.trials[0]}"
    data = results.plan.lab.load()
    test = results.plan.lab_splits[int(where.removeprefix("lab-t"))].test
    faces = test[np.isfinite(data.landmarks[test]).all(axis=(1, 2))][:n_images]
    maps = gradcam_maps(results, where, inputs(data.subset(faces)), data.labels[faces])
    regions = part_masks(data.landmarks[faces], data.image_size)
    if data.masks is not None:
        regions["expression"] = data.masks[faces]
    scores = evidence_scores(maps, regions)
    return scores, regions, evidence_table(scores, regions)


def own_part_lift(evidence: pd.DataFrame) -> pd.DataFrame:
    """For each EL part network: its map's share in its own part's region divided by that
    region's chance share (1 = no preference)."""
    chance = evidence.loc["chance (area share)"]
    return pd.DataFrame({"own region share / chance": {
        part: evidence.at[f"EL {part}", part] / chance[part] for part in ENSEMBLE_PARTS}})


def gradcam_figure(results: Results, where: str | None = None):
    """Fig. 11: a surprised, a disgusted and a happy test face of a lab trial, and the
    Grad-CAM maps of the Baseline and FTL ensembles (union of their members' maps) and of
    each EL sub-network, explaining the true class."""
    from fernb import explain, figures
    where = where or f"lab-t{results.settings.trials[0]}"
    data = results.plan.lab.load()
    test = results.plan.lab_splits[int(where.removeprefix("lab-t"))].test
    picks = gradcam_picks(data, test)
    maps = gradcam_maps(results, where, inputs(data.subset(picks)), data.labels[picks])
    overlays, titles = [], []
    for i, face in enumerate(picks):
        overlays.append(data.images[face])
        titles.append(data.classes[data.labels[face]])
        for name, cams in maps.items():
            overlays.append(explain.overlay(data.images[face], cams[i]))
            titles.append(name.removeprefix("EL ") + (" (empty)" if cams[i].max() == 0 else ""))
    return figures.image_grid(overlays, titles, ncols=len(maps) + 1)


def landmark_figure_faces(results: Results, n: int = 4) -> tuple[np.ndarray, torch.Tensor]:
    """The first ``n`` wild test faces with landmarks, as images and as network inputs."""
    data = results.plan.wild.load()
    test = results.plan.wild_split.test
    shown = test[np.isfinite(data.landmarks[test]).all(axis=(1, 2))][:n]
    return data.images[shown], inputs(data.subset(shown))
