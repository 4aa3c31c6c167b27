"""Subject-independent splits: stratified group k-fold, ESR's fold protocol, holdout.

Every split here keeps each subject on one side only, so test faces are of people the model
has never seen (the protocol all five papers use on CK+ and JAFFE).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split


@dataclass(frozen=True)
class Split:
    """Index arrays of one trial; ``train_folds`` lists the fold ids used for training."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    train_folds: tuple[int, ...] = ()


def _check(labels: np.ndarray, subjects: np.ndarray, n_folds: int) -> None:
    if len(labels) != len(subjects):
        raise ValueError(f"labels ({len(labels)}) and subjects ({len(subjects)}) differ in length")
    n_subjects = len(np.unique(subjects))
    if n_folds < 2 or n_folds > n_subjects:
        raise ValueError(f"n_folds must be between 2 and the number of subjects "
                         f"({n_subjects}); got {n_folds}")


def subject_folds(labels: np.ndarray, subjects: np.ndarray, n_folds: int, *,
                  seed: int = 0) -> np.ndarray:
    """Fold id (N,) per sample from scikit-learn's StratifiedGroupKFold: subject-disjoint
    folds with class proportions kept as close to the whole set's as the subjects allow."""
    labels, subjects = np.asarray(labels), np.asarray(subjects)
    _check(labels, subjects, n_folds)
    folds = np.empty(len(labels), dtype=np.int64)
    sgkf = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, test) in enumerate(sgkf.split(np.zeros(len(labels)), labels, subjects)):
        folds[test] = fold
    return folds


def esr_subject_folds(subjects: np.ndarray, n_folds: int = 10) -> np.ndarray:
    """ESR's fold assignment (Siqueira et al., Methodology): folds are populated "by
    iterating the subject id and the fold id", i.e. the i-th subject in id order goes to fold
    ``i % n_folds``."""
    subjects = np.asarray(subjects)
    _check(subjects, subjects, n_folds)
    ids = np.unique(subjects)
    fold_of = dict(zip(ids.tolist(), (np.arange(len(ids)) % n_folds).tolist()))
    return np.array([fold_of[s] for s in subjects.tolist()], dtype=np.int64)


def esr_trials(folds: np.ndarray, n_train_folds: int = 4) -> list[Split]:
    """ESR's trials: in trial t, fold t tests, fold t+1 validates, and the first
    ``n_train_folds`` of the remaining folds (in fold order) train (paper: 4 of the 8)."""
    folds = np.asarray(folds)
    k = int(folds.max()) + 1
    if n_train_folds < 1 or n_train_folds > k - 2:
        raise ValueError(f"n_train_folds must be in [1, {k - 2}] with {k} folds; "
                         f"got {n_train_folds}")
    trials = []
    for t in range(k):
        val_fold = (t + 1) % k
        rest = [f for f in range(k) if f not in (t, val_fold)][:n_train_folds]
        trials.append(Split(train=np.flatnonzero(np.isin(folds, rest)),
                            val=np.flatnonzero(folds == val_fold),
                            test=np.flatnonzero(folds == t),
                            train_folds=tuple(rest)))
    return trials


def leave_one_fold_out(split: Split, folds: np.ndarray) -> list[np.ndarray]:
    """Bagging subsets of a trial's training folds, each leaving one fold out (ESR's
    traditional ensemble: four networks, each on three of the four training folds)."""
    folds = np.asarray(folds)
    return [np.flatnonzero(np.isin(folds, [f for f in split.train_folds if f != out]))
            for out in split.train_folds]


def holdout(labels: np.ndarray, subjects: np.ndarray, *, val_fraction: float = 0.15,
            test_fraction: float = 0.2, seed: int = 0) -> Split:
    """One subject-independent, stratified train/val/test split: the subjects are dealt into
    up to 20 stratified group folds, and whole folds go to test and validation."""
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError("val_fraction and test_fraction must be in (0, 1) and sum below 1")
    labels, subjects = np.asarray(labels), np.asarray(subjects)
    n_folds = min(len(np.unique(subjects)), 20)
    n_test = max(1, round(test_fraction * n_folds))
    n_val = max(1, round(val_fraction * n_folds))
    if n_test + n_val >= n_folds:
        raise ValueError(f"{n_folds} subjects are too few for val_fraction={val_fraction} and "
                         f"test_fraction={test_fraction}: no training subject would be left")
    folds = subject_folds(labels, subjects, n_folds, seed=seed)
    test_f, val_f = np.arange(n_test), np.arange(n_test, n_test + n_val)
    return Split(train=np.flatnonzero(folds >= n_test + n_val),
                 val=np.flatnonzero(np.isin(folds, val_f)),
                 test=np.flatnonzero(np.isin(folds, test_f)),
                 train_folds=tuple(range(n_test + n_val, n_folds)))


def official_split(split_names: np.ndarray) -> Split:
    """A dataset's own partition (e.g. FER-2013 Training/PublicTest/PrivateTest) as a Split;
    when it has no validation part, ``val`` is empty."""
    names = np.asarray(split_names)
    unknown = set(names.tolist()) - {"train", "val", "test"}
    if unknown:
        raise ValueError(f"split names must be train/val/test; found {sorted(unknown)}")
    return Split(train=np.flatnonzero(names == "train"), val=np.flatnonzero(names == "val"),
                 test=np.flatnonzero(names == "test"))


def standard_split(labels: np.ndarray, subjects: np.ndarray,
                   split_names: np.ndarray | None = None, *, val_fraction: float = 0.15,
                   test_fraction: float = 0.2, seed: int = 0) -> Split:
    """The split a chapter trains on: a dataset's own partition when it has one, else a
    subject-independent :func:`holdout`.

    A partition without a test part (AffectNet, SFEW) is evaluated on its validation part,
    as the papers do; model selection then uses a stratified tenth of the training part, so
    the reported images are never used to pick weights.
    """
    if split_names is None:
        return holdout(labels, subjects, val_fraction=val_fraction,
                       test_fraction=test_fraction, seed=seed)
    split = official_split(split_names)
    if len(split.test):
        return split
    if not len(split.val):
        raise ValueError("the dataset's partition has neither a test nor a validation part")
    train, val = train_test_split(split.train, test_size=0.1, random_state=seed,
                                  stratify=np.asarray(labels)[split.train])
    return Split(train=np.sort(train), val=np.sort(val), test=split.val)
