"""Soft labels and the label-level perturbation ensemble.

Gan, Chen and Xu, "Facial expression recognition boosted by soft label with a diverse
ensemble", Pattern Recognition Letters 125 (2019). Three steps (paper Fig. 2):

1. Train a network on the training set with hard labels (plain :func:`fernb.train.fit`).
2. Soft-label constructor (Sec. 3.2): the trained network predicts the validation set; the
   predicted distributions are averaged per true class (eq. 2) and L1-normalised (eq. 3) into
   the C x C matrix D whose row j is the soft label of class j
   (:func:`soft_labels_from_model`, :func:`construct_soft_labels`). The paper requires every
   row's largest entry to be on its own class (:func:`diagonal_violations`).
3. For each perturbation factor gamma, D is raised element-wise to the power gamma and its
   rows renormalised (eq. 4, :func:`perturb`); one base classifier is trained per gamma with
   the soft label of each sample's class as target (eq. 5,
   :class:`fernb.losses.SoftLabelLoss`) and the classifiers' scores are averaged (eq. 7)
   (:func:`train_gamma_ensemble`, then :class:`fernb.ensemble.ScoreAverage`).

Choices where the paper is ambiguous or silent:

- Rows, not columns. Sec. 3.2 first says each *row* of D is one class's soft label, then
  that d_j is "the jth column"; Table 1 is row-wise (its rows, not its columns, sum to 1), so
  row j is class j here.
- Eq. (7) averages "the C-dimensional score vector ... through the last full connected
  layer", i.e. the logits before the softmax of eq. (6): :class:`fernb.ensemble.ScoreAverage`
  (the mean of the members' logits) is eq. (7) as printed; averaging probabilities
  (:class:`fernb.ensemble.SoftmaxSum`) is the alternative the related-work section also names.
- A row of D whose maximum is off its own class (the paper requires none): with
  ``on_violation="raise"`` (the default) the constructor refuses it, because training
  class j towards another class's label defeats eq. (5); ``"warn"`` or ``"ignore"`` keep it.
  An entry tied with the row's maximum is not a violation.
- Members of the ensemble differ in their initial weights (each drawn under its own seed by
  :meth:`fernb.models.members.Members.build`; with pre-trained weights, the new C-way head)
  and in their mini-batch order, as independently trained Caffe models do; the paper's
  fixed-gamma ensembles (Tables 2, 4 and 6) have no other source of diversity.
  ``identical_start=True`` gives every member the same initial weights and batch order, so
  gamma is the only difference.
- The paper trains a fixed number of iterations and keeps the last weights; ``fit`` keeps
  the epoch of lowest validation loss when it has validation data: pass ``val_data=None``
  to follow the paper.
- The paper counts Caffe iterations of batches of 48; :meth:`PaperSetting.fit_config`
  converts them to epochs for a given training-set size (rounded, at least 1).
- Selecting the gamma set from the sweep (Sec. 4.3, Fig. 4) is described in words ("a
  better performance when gamma is in the range ..."); :func:`select_gammas` formalises it
  as the window of consecutive grid values with the highest mean validation accuracy, which
  is the shape of all three of the paper's choices.
"""
from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from scipy import stats
from scipy.spatial.distance import jensenshannon
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fernb.evaluate import predict
from fernb.losses import SoftLabelLoss
from fernb.models.members import Members
from fernb.seeding import derive_seed, seeded
from fernb.train import Data, FitConfig, History, Schedule, fit, sgd

ArrayLike = np.ndarray | torch.Tensor | Sequence
VIOLATION_POLICIES = ("raise", "warn", "ignore")

# Sec. 4.3: the perturbation factors of the sweep (Fig. 4).
GAMMA_GRID: tuple[float, ...] = (0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2, 2.4, 2.6, 2.8)

# Table 1: the soft labels the paper constructed on FER-2013 (rows: true class, in FER-2013's
# order; row j is d_j). Used for FER-2013, SFEW and RAF alike (Sec. 4.2).
TABLE_1_CLASSES: tuple[str, ...] = ("anger", "disgust", "fear", "happiness", "sadness",
                                    "surprise", "neutral")
TABLE_1 = pd.DataFrame(
    [[0.6247, 0.0136, 0.1023, 0.0419, 0.1069, 0.0202, 0.0905],
     [0.2174, 0.5696, 0.0833, 0.0090, 0.1147, 0.0001, 0.0059],
     [0.0977, 0.0038, 0.5115, 0.0224, 0.1858, 0.0869, 0.0919],
     [0.0226, 0.0009, 0.0193, 0.8416, 0.0245, 0.0235, 0.0675],
     [0.1060, 0.0051, 0.1269, 0.0389, 0.5671, 0.0123, 0.1437],
     [0.0269, 0.0004, 0.0870, 0.0464, 0.0163, 0.8000, 0.0230],
     [0.0655, 0.0001, 0.0740, 0.0769, 0.1673, 0.0133, 0.6030]],
    index=pd.Index(TABLE_1_CLASSES, name="true class"),
    columns=pd.Index(TABLE_1_CLASSES, name="soft label"))


@dataclass(frozen=True)
class PaperSetting:
    """The paper's training protocol on one database (Sec. 4.2-4.3).

    Every network is VGG16 initialised from VGG-Face (``fernb.models.backbones.vgg16``),
    224x224 inputs, SGD with momentum 0.9, weight decay 0.0005, batch 48, dropout 0.5; the
    soft labels are those built on FER-2013 (Table 1) for all three databases.

    Attributes:
        gammas: the ensemble's perturbation factors, one base classifier each (Sec. 4.3).
        iterations: total Caffe iterations (batches).
        lr_step: iterations between decays of the learning rate by ``lr_decay``; None keeps
            it fixed.
    """

    gammas: tuple[float, ...]
    iterations: int
    lr_step: int | None
    lr: float = 0.01
    lr_decay: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0005
    batch_size: int = 48
    dropout: float = 0.5
    image_size: int = 224

    @property
    def n_members(self) -> int:
        return len(self.gammas)

    def _epochs(self, iterations: int, n_train: int) -> int:
        return max(1, round(iterations * self.batch_size / n_train))

    def fit_config(self, n_train: int, **changes: Any) -> FitConfig:
        """The :class:`~fernb.train.FitConfig` of the paper's training on ``n_train`` images:
        iterations as epochs, and the step decay as a per-epoch ``StepLR``; ``changes``
        (device, precision...) on top."""
        if n_train < 1:
            raise ValueError(f"n_train must be at least 1, got {n_train}")
        schedule = None if self.lr_step is None else Schedule(
            "StepLR", step_size=self._epochs(self.lr_step, n_train), gamma=self.lr_decay)
        return FitConfig(epochs=self._epochs(self.iterations, n_train),
                         optimizer=sgd(self.lr, momentum=self.momentum,
                                       weight_decay=self.weight_decay),
                         batch_size=self.batch_size, schedule=schedule, **changes)


PAPER_SETTINGS: dict[str, PaperSetting] = {
    # 8K iterations, lr x0.1 every 5K; 8 gammas 0.6..2.0.
    "fer2013": PaperSetting(gammas=GAMMA_GRID[1:9], iterations=8000, lr_step=5000),
    # 0.5K iterations at a fixed lr; 6 gammas 1.6..2.6.
    "sfew": PaperSetting(gammas=GAMMA_GRID[6:12], iterations=500, lr_step=None),
    # 6K iterations, lr x0.1 every 3K; 6 gammas 1.8..2.8.
    "rafdb": PaperSetting(gammas=GAMMA_GRID[7:13], iterations=6000, lr_step=3000),
}


def _matrix(values: ArrayLike, name: str) -> np.ndarray:
    arr = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else values
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"{name} must be a 2-d array with at least 2 columns, got shape "
                         f"{arr.shape}")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"{name} must be finite and non-negative")
    return arr


def class_means(probs: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """Eq. (2): row j is the mean of the distributions ``probs`` of the samples of class j.

    Args:
        probs: (N, C) predicted distributions q_i (or any per-sample distributions, e.g.
            ``FaceDataset.mixtures``).
        labels: (N,) true classes in [0, C).

    Returns:
        (C, C) unnormalised soft labels q-bar.
    """
    q = _matrix(probs, "probs")
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else labels
    y = np.asarray(y).reshape(-1)
    n, c = q.shape
    if len(y) != n:
        raise ValueError(f"{n} distributions but {len(y)} labels")
    if not np.issubdtype(y.dtype, np.integer) or (n and (y.min() < 0 or y.max() >= c)):
        raise ValueError(f"labels must be integer classes in [0, {c - 1}]")
    counts = np.bincount(y, minlength=c)
    if (counts == 0).any():
        raise ValueError(f"classes {np.flatnonzero(counts == 0).tolist()} have no samples: "
                         f"eq. (2) averages over each class's validation samples")
    sums = np.zeros((c, c))
    np.add.at(sums, y, q)
    return sums / counts[:, None]


def normalize_rows(matrix: ArrayLike) -> np.ndarray:
    """Eq. (3): every row divided by its L1 norm, so it sums to 1."""
    m = _matrix(matrix, "matrix")
    norms = m.sum(axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"rows {np.flatnonzero(norms[:, 0] == 0).tolist()} are all zero and "
                         f"cannot be normalised")
    return m / norms


class Violation(NamedTuple):
    """A row of D whose largest entry is not on its own class."""

    row: int
    argmax: int
    own: float
    maximum: float


def diagonal_violations(soft_labels: ArrayLike) -> list[Violation]:
    """Every row j of a square D with ``D[j, j] < max(D[j])`` (Sec. 3.2 requires
    j = argmax_k d_{j,k} for every class); ties with the maximum are allowed."""
    d = _matrix(soft_labels, "soft_labels")
    if d.shape[0] != d.shape[1]:
        raise ValueError(f"soft_labels must be square (C, C), got shape {d.shape}")
    return [Violation(j, int(row.argmax()), float(row[j]), float(row.max()))
            for j, row in enumerate(d) if row[j] < row.max()]


def _check_policy(on_violation: str) -> None:
    if on_violation not in VIOLATION_POLICIES:
        raise ValueError(f"on_violation must be one of {VIOLATION_POLICIES}, got "
                         f"{on_violation!r}")


def construct_soft_labels(probs: ArrayLike, labels: ArrayLike, *,
                          on_violation: str = "raise") -> np.ndarray:
    """The soft-label matrix D of eqs. (2) and (3), checked as Sec. 3.2 requires.

    Args:
        probs: (N, C) predicted distributions of the validation samples.
        labels: (N,) their true classes.
        on_violation: what to do when a row's maximum is off its own class
            (:func:`diagonal_violations`): ``"raise"`` a ValueError, ``"warn"`` and return
            D, or ``"ignore"``.

    The same call on a synthetic dataset's ``mixtures`` and ``labels`` gives the generator's
    reference matrix, the mean true mixture of each class.
    """
    _check_policy(on_violation)
    d = normalize_rows(class_means(probs, labels))
    bad = diagonal_violations(d)
    if bad and on_violation != "ignore":
        detail = "; ".join(f"row {v.row}: max {v.maximum:.4f} at class {v.argmax}, own "
                           f"{v.own:.4f}" for v in bad)
        message = (f"{len(bad)} soft label(s) peak on another class ({detail}); Sec. 3.2 "
                   f"requires each row's maximum on its own class. Train the constructor "
                   f"longer, or pass on_violation='warn'")
        if on_violation == "raise":
            raise ValueError(message)
        warnings.warn(message, stacklevel=2)
    return d


def soft_labels_from_model(model: nn.Module, data: Dataset | DataLoader | torch.Tensor,
                           labels: ArrayLike | None = None, *, on_violation: str = "raise",
                           device: str | torch.device = "auto",
                           batch_size: int = 256) -> np.ndarray:
    """The constructor's second step: D from a trained network's predictions on ``data``.

    Args:
        model: the hard-label network (output (B, 1, C)); its softmax gives q (eq. 1).
        data: the validation split, e.g. a FaceDataset.
        labels: the true classes of ``data``; taken from ``data.labels`` when omitted.
        on_violation: see :func:`construct_soft_labels`.
    """
    _check_policy(on_violation)
    if labels is None:
        if not hasattr(data, "labels"):
            raise ValueError("pass labels=: data has no .labels (a FaceDataset has)")
        labels = data.labels
    logits = predict(model, data, device=device, batch_size=batch_size)  # (N, M, C)
    if logits.shape[1] != 1:
        raise ValueError(f"the constructor is one network (members = 1), got "
                         f"{logits.shape[1]} members")
    probs = logits[:, 0].double().softmax(dim=1)  # (N, C), eq. (1)
    return construct_soft_labels(probs, labels, on_violation=on_violation)


def restrict_soft_labels(soft_labels: ArrayLike, classes: Sequence[str],
                         to: Sequence[str]) -> np.ndarray:
    """D built on one dataset, for another dataset's classes (Sec. 4.2: the FER-2013 labels
    serve SFEW and RAF): the rows and columns of the classes ``to``, in that order, each
    row renormalised to sum 1 (eq. 3).

    Args:
        soft_labels: (C, C) matrix whose rows and columns follow ``classes``.
        classes: the class names of ``soft_labels``.
        to: the target dataset's class names; every one must be in ``classes``.
    """
    d = _matrix(soft_labels, "soft_labels")
    if d.shape != (len(classes), len(classes)):
        raise ValueError(f"soft_labels has shape {d.shape} but {len(classes)} classes were "
                         f"named")
    missing = [c for c in to if c not in classes]
    if missing:
        raise ValueError(f"the soft labels have no row for {missing}: they were built on the "
                         f"classes {list(classes)}; build them on a dataset with every class "
                         f"of {list(to)}")
    index = [list(classes).index(c) for c in to]
    return normalize_rows(d[np.ix_(index, index)])


def perturb(soft_labels: ArrayLike, gamma: float) -> np.ndarray:
    """Eq. (4): every entry raised to the power ``gamma``, each row renormalised to sum 1.

    The order of the entries within a row is kept for any gamma > 0; gamma < 1 smooths the
    rows towards uniform, gamma > 1 sharpens them towards one-hot, gamma = 1 only
    renormalises.
    """
    if not (np.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma must be a positive number (eq. 4), got {gamma}")
    return normalize_rows(_matrix(soft_labels, "soft_labels") ** gamma)


def row_entropy(soft_labels: ArrayLike) -> np.ndarray:
    """(C,) Shannon entropy in nats of every row: how smooth each soft label is."""
    d = normalize_rows(soft_labels)
    return stats.entropy(d, axis=1)


def compare_soft_labels(soft_labels: ArrayLike, reference: ArrayLike) -> dict[str, float]:
    """How close D is to a reference matrix of the same classes (e.g. the generator's).

    Returns:
        ``mean_abs_diff`` and ``max_abs_diff`` over all entries; ``js_distance``, the mean
        over rows of the Jensen-Shannon distance (base 2, in [0, 1]); ``offdiag_pearson``
        and ``offdiag_spearman``, correlations of the off-diagonal entries (which classes
        each class is related to; NaN when either side is constant);
        ``top_other_agreement``, the share of rows whose largest off-diagonal entry is on
        the same class in both.
    """
    d, r = normalize_rows(soft_labels), normalize_rows(reference)
    if d.shape != r.shape or d.shape[0] != d.shape[1]:
        raise ValueError(f"soft_labels and reference must be square and of one shape, got "
                         f"{d.shape} and {r.shape}")
    off = ~np.eye(len(d), dtype=bool)
    a, b = d[off], r[off]
    constant = np.isclose(a.min(), a.max()) or np.isclose(b.min(), b.max())
    masked_d, masked_r = np.where(off, d, -np.inf), np.where(off, r, -np.inf)
    return {
        "mean_abs_diff": float(np.abs(d - r).mean()),
        "max_abs_diff": float(np.abs(d - r).max()),
        "js_distance": float(np.mean(jensenshannon(d, r, axis=1, base=2))),
        "offdiag_pearson": np.nan if constant else float(stats.pearsonr(a, b)[0]),
        "offdiag_spearman": np.nan if constant else float(stats.spearmanr(a, b)[0]),
        "top_other_agreement": float(np.mean(masked_d.argmax(1) == masked_r.argmax(1))),
    }


def mean_probabilities(logits: ArrayLike) -> np.ndarray:
    """(N, C) the ensemble's predictive distribution: the mean over members of each
    member's softmax (eq. 6) of (N, M, C) logits, or the softmax of (N, C) logits.

    Eq. (7) averages scores (logits) and takes the arg-max; this is the distribution the
    probability average gives, which a negative log-likelihood needs."""
    z = logits.detach().cpu().numpy() if isinstance(logits, torch.Tensor) else logits
    z = np.asarray(z, dtype=np.float64)
    if z.ndim == 2:
        z = z[:, None]
    if z.ndim != 3:
        raise ValueError(f"logits must be (N, M, C) or (N, C), got shape {z.shape}")
    return torch.from_numpy(z).softmax(-1).mean(1).numpy()


def mixture_nll(probs: ArrayLike, mixtures: ArrayLike, eps: float = 1e-12) -> np.ndarray:
    """(N,) the negative log-likelihood of each sample's true mixture under the predicted
    distribution, -sum_k m_k log p_k (nats): the cross-entropy of eq. (5) with the face's
    own mixture in place of its class's soft label. Its minimum over p is the mixture's
    entropy, reached at p = m; a one-hot prediction on the wrong emotion of a mixture is
    penalised by -log eps."""
    p, m = _matrix(probs, "probs"), _matrix(mixtures, "mixtures")
    if p.shape != m.shape:
        raise ValueError(f"probs and mixtures must have one shape, got {p.shape} and {m.shape}")
    return -(m * np.log(np.clip(p, eps, None))).sum(1)


def logit_spread(logits: ArrayLike) -> np.ndarray:
    """(M,) each member's weight in eq. (7): the mean over samples of the standard deviation
    of its C scores. At a member's optimum its scores are gamma log d + constant (eq. 4), so
    the spread grows with gamma and an unweighted score average listens most to the members
    trained at the largest gamma."""
    z = logits.detach().cpu().numpy() if isinstance(logits, torch.Tensor) else logits
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 3:
        raise ValueError(f"logits must be (N, M, C), got shape {z.shape}")
    return z.std(axis=2).mean(axis=0)


def select_gammas(gammas: Sequence[float], accuracies: Sequence[float], n: int
                  ) -> tuple[float, ...]:
    """The ``n`` consecutive values of an ascending gamma grid with the highest mean
    validation accuracy (the sweep of Sec. 4.3, Fig. 4); ties go to the smaller gammas."""
    g, acc = np.asarray(gammas, dtype=float), np.asarray(accuracies, dtype=float)
    if g.ndim != 1 or g.shape != acc.shape:
        raise ValueError(f"give one accuracy per gamma: {g.shape} gammas, {acc.shape} "
                         f"accuracies")
    if np.any(np.diff(g) <= 0):
        raise ValueError(f"gammas must be strictly ascending, got {g.tolist()}")
    if not 1 <= n <= len(g):
        raise ValueError(f"n must be in [1, {len(g)}], got {n}")
    means = np.convolve(acc, np.ones(n) / n, mode="valid")  # mean of each window
    start = int(np.argmax(means))
    return tuple(float(x) for x in g[start:start + n])


def train_gamma_ensemble(builder: Callable[[], nn.Module], soft_labels: ArrayLike,
                         gammas: Sequence[float], train: Data, val: Data | None,
                         config: FitConfig, *, checkpoint: str | Path | None = None,
                         identical_start: bool = False) -> tuple[Members, list[History]]:
    """Sec. 3.4: one base classifier per gamma, trained on ``perturb(soft_labels, gamma)``.

    Args:
        builder: returns one untrained network (output (B, C) or (B, 1, C)), e.g.
            ``lambda: vgg16(n_classes=7, weights="vgg_face.pth")``.
        soft_labels: the constructor's (C, C) matrix D.
        gammas: one perturbation factor per member; repeat a value for a fixed-gamma
            ensemble (the paper's "gamma = 1.4" rows).
        train, val: as for :func:`fernb.train.fit`, with class-index targets.
        config: how each member trains (:meth:`PaperSetting.fit_config` gives the paper's);
            its loss is eq. (5) with the member's soft labels, and network k is built under
            ``seeded(config.seed, k)`` and shuffled with its own seed.
        checkpoint: member k checkpoints to ``<checkpoint>/member_<k>_gamma_<gamma>``, so an
            interrupted run resumes where it stopped.
        identical_start: every member starts from network 0's weights and batch order.

    Returns:
        The ensemble (output (B, M, C), member k trained with ``gammas[k]``) and each
        member's History. Combine the members with :class:`fernb.ensemble.ScoreAverage`
        (eq. 7).
    """
    if not len(gammas):
        raise ValueError("gammas is empty: give one perturbation factor per member")
    targets = [perturb(soft_labels, g) for g in gammas]  # validates every gamma first
    seed = config.seed
    if identical_start:
        with seeded(seed, 0):
            first = builder()
        model = Members([first] + [copy.deepcopy(first) for _ in gammas[1:]])
    else:
        model = Members.build(builder, len(gammas), seed=seed)
    histories = []
    for k, (gamma, d) in enumerate(zip(gammas, targets)):
        member_dir = (None if checkpoint is None
                      else Path(checkpoint) / f"member_{k}_gamma_{gamma:g}")
        histories.append(fit(model.member(k), train, val, config.replace(
            loss=SoftLabelLoss(d), seed=derive_seed(seed, "fit", 0 if identical_start else k)),
            checkpoint=member_dir))
    return model, histories
