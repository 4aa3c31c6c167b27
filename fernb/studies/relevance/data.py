"""The faces as the study uses them: stretched images, landmark target maps (eq. 4, Fig. 6),
evidence masks, the subject-independent folds of Sec. IV-C, and the mechanism regime's
distractor cues repainted on test faces.

Everything here is a pure function of plain settings (a :class:`~fernb.data.datasets.DataSpec`
and numbers), so a stored job computes the same faces and splits in any process.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from fernb.data import synthetic
from fernb.data.datasets import DataSpec, FaceDataset
from fernb.data.splits import Split, standard_split, subject_folds
from fernb.data.transforms import contrast_normalize
from fernb.models.relevance import target_maps

from .settings import VAL_FRACTION

NEAR_SIGMAS = 2.0     # "marked by the landmarks": within 2 target sigmas of one
# Test conditions of the mechanism regime: the cue as in training (its strength), a cue
# independent of the label, and a cue showing another class than the label.
CUE_CONDITIONS = ("trained", "independent", "misleading")


@dataclass
class Prepared:
    """A dataset as the study uses it: min-max stretched images, labels, target maps of
    eq. (4), evidence masks and the landmark neighbourhoods (None where missing)."""

    x: torch.Tensor                  # (N, C, H, W) in [0, 1]
    labels: np.ndarray               # (N,)
    subjects: np.ndarray             # (N,)
    classes: tuple[str, ...]
    maps: torch.Tensor | None        # (N, 1, H, W) target relevance maps
    masks: np.ndarray | None         # (N, H, W) evidence regions
    near: np.ndarray | None          # (N, H, W) within NEAR_SIGMAS sigma of a landmark
    landmarks: np.ndarray | None     # (N, 68, 2) pixel (x, y)
    split: np.ndarray | None = None  # official partition names
    intensity: np.ndarray | None = None
    cue: np.ndarray | None = None    # (N,) class each image's corner cue shows
    cue_corner: np.ndarray | None = None
    name: str = ""

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return int(self.x.shape[1])


def stretch(data: FaceDataset) -> torch.Tensor:
    """Grayscale images stretched to [0, 1] (eq. 9 with p_L = 0, p_H = 100), so test faces
    match the range eq. (9) gives training faces. Every set is used in grayscale: FER-2013,
    the paper's pre-training set, has no colour."""
    x, _ = data.with_options(channels=1).tensors()
    return contrast_normalize(x, 0.0, 100.0)


def prepare(data: FaceDataset, sigma_fraction: float) -> Prepared:
    """The study's view of ``data``: stretched images and target maps (Gaussians of sigma =
    ``sigma_fraction`` x side at the landmarks, Fig. 6)."""
    side = min(data.image_size)
    maps = near = None
    if data.landmarks is not None:
        maps = target_maps(data.landmarks, data.image_size, sigma=sigma_fraction * side)
        near = (maps[:, 0] >= np.exp(-NEAR_SIGMAS**2 / 2)).numpy()
    masks = None if data.masks is None else data.masks.astype(bool)
    return Prepared(stretch(data), data.labels, data.subjects, data.classes, maps, masks, near,
                    data.landmarks, data.split, data.meta.get("intensity"),
                    data.meta.get("cue"), data.meta.get("cue_corner"), data.name)


@functools.lru_cache(maxsize=4)
def prepared(spec: DataSpec, sigma_fraction: float) -> Prepared:
    """:func:`prepare` of a spec's faces, computed once per process."""
    return prepare(spec.load(), sigma_fraction)


def _inner_split(labels: np.ndarray, subjects: np.ndarray, idx: np.ndarray,
                 val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation indices of ``idx``, split by subject (Sec. IV-C: 80/20; with
    fewer than 1 / ``val_fraction`` subjects, one subject in as many validates)."""
    n_subjects = len(np.unique(subjects[idx]))
    if n_subjects < 2:
        raise ValueError(f"{n_subjects} training subject(s) cannot be split into training and "
                         f"validation by subject; use more subjects or fewer folds")
    k = min(max(2, round(1 / val_fraction)), n_subjects)
    inner = subject_folds(labels[idx], subjects[idx], k, seed=seed)
    return idx[inner != 0], idx[inner == 0]


def fold_splits(prep: Prepared, n_folds: int, *, val_fraction: float = VAL_FRACTION,
                seed: int = 0) -> list[Split]:
    """The subject-independent stratified k-fold protocol (Sec. IV-C/D): fold ``k`` tests,
    the others are split by subject into training and validation."""
    if np.any(prep.subjects < 0):
        raise ValueError(f"{prep.name} has no subject ids, so it has no subject-independent "
                         f"folds; use a dataset with subjects")
    folds = subject_folds(prep.labels, prep.subjects, n_folds, seed=seed)
    out = []
    for k in range(n_folds):
        train, val = _inner_split(prep.labels, prep.subjects, np.flatnonzero(folds != k),
                                  val_fraction, seed)
        out.append(Split(train=train, val=val, test=np.flatnonzero(folds == k)))
    return out


def target_splits(prep: Prepared, n_folds: int, *, val_fraction: float = VAL_FRACTION,
                  seed: int = 0) -> list[Split]:
    """The fine-tuning target's splits: its official partition when it has one (SFEW:
    train, and its validation set as the test set, Sec. IV-E), else subject folds."""
    if prep.split is not None:
        return [standard_split(prep.labels, prep.subjects, prep.split, seed=seed)]
    return fold_splits(prep, n_folds, val_fraction=val_fraction, seed=seed)


def pretrain_split(prep: Prepared, val_fraction: float = VAL_FRACTION, seed: int = 0) -> Split:
    """Training and validation parts of the pre-training set: its official train and
    validation parts when it has them (FER-2013), else an 80/20 split by subject."""
    if prep.split is not None and (prep.split == "val").any():
        return Split(train=np.flatnonzero(prep.split == "train"),
                     val=np.flatnonzero(prep.split == "val"), test=np.zeros(0, np.int64))
    if np.any(prep.subjects < 0):
        return standard_split(prep.labels, prep.subjects, None, seed=seed)
    train, val = _inner_split(prep.labels, prep.subjects, np.arange(len(prep.labels)),
                              val_fraction, seed)
    return Split(train=train, val=val, test=np.zeros(0, np.int64))


def show_indices(prep: Prepared, test: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` test faces for the map figures: one per class (expressions first, the most
    intense face of each)."""
    order = [c for c in range(prep.n_classes) if prep.classes[c] != "neutral"]
    order += [c for c in range(prep.n_classes) if prep.classes[c] == "neutral"]
    picked = []
    for c in order:
        members = test[prep.labels[test] == c]
        if len(members):
            strength = prep.intensity[members] if prep.intensity is not None else -members
            picked.append(int(members[np.argmax(strength)]))
    return np.array(picked[:n], dtype=np.int64)


def cue_test_sets(spec: DataSpec, test: np.ndarray, strength: float, seed: int
                  ) -> dict[str, tuple[torch.Tensor, np.ndarray]]:
    """The mechanism regime's test faces under each of :data:`CUE_CONDITIONS`: (stretched
    images, the class each cue shows). ``trained`` redraws cues at the training ``strength``
    (what the network was trained on, on new subjects), ``independent`` draws them
    independently of the label, ``misleading`` shows another class than the label on every
    face (:func:`fernb.data.synthetic.sample_cues`,
    :func:`~fernb.data.synthetic.misleading_cues`)."""
    faces = spec.load().subset(test)
    n = faces.n_classes
    cues = {"trained": synthetic.sample_cues(faces.labels, strength, n, seed),
            "independent": synthetic.sample_cues(faces.labels, 0.0, n, seed + 1),
            "misleading": synthetic.misleading_cues(faces.labels, n, seed + 2)}
    return {name: (stretch(synthetic.with_cues(faces, c)), c) for name, c in cues.items()}


def cue_masks(prep: Prepared, index: np.ndarray) -> np.ndarray:
    """(N, H, W) boolean masks of the cue patch of the faces ``index``."""
    h, w = prep.x.shape[-2:]
    corners = prep.cue_corner[index] if prep.cue_corner is not None else \
        np.zeros(len(index), np.int64)
    out = np.zeros((len(index), h, w), bool)
    for i, corner in enumerate(corners):
        rows, cols = synthetic.cue_region((h, w), int(corner))
        out[i, rows, cols] = True
    return out
