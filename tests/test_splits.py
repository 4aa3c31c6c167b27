"""Subject-independent splits and ESR's fold protocol."""
from __future__ import annotations

import numpy as np
import pytest

from fernb.data import splits


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    subjects = np.repeat(np.arange(30), 16)
    labels = np.tile(np.repeat(np.arange(8), 2), 30)
    perm = rng.permutation(len(labels))
    return labels[perm], subjects[perm]


def test_subject_folds_are_disjoint_and_stratified(data) -> None:
    labels, subjects = data
    folds = splits.subject_folds(labels, subjects, 5, seed=1)
    for s in np.unique(subjects):
        assert len(np.unique(folds[subjects == s])) == 1
    overall = np.bincount(labels) / len(labels)
    for f in range(5):
        share = np.bincount(labels[folds == f], minlength=8) / np.sum(folds == f)
        assert np.abs(share - overall).max() < 0.05
    assert np.array_equal(folds, splits.subject_folds(labels, subjects, 5, seed=1))


def test_esr_fold_assignment_iterates_subjects_and_folds(data) -> None:
    _, subjects = data
    folds = splits.esr_subject_folds(subjects, n_folds=10)
    for s in range(30):
        assert set(folds[subjects == s]) == {s % 10}


def test_esr_trials_test_t_validate_t_plus_1_train_first_four(data) -> None:
    _, subjects = data
    folds = splits.esr_subject_folds(subjects, n_folds=10)
    trials = splits.esr_trials(folds, n_train_folds=4)
    assert len(trials) == 10
    assert trials[0].train_folds == (2, 3, 4, 5)
    assert trials[9].train_folds == (1, 2, 3, 4)  # test 9, validation 0
    for t, trial in enumerate(trials):
        assert set(folds[trial.test]) == {t} and set(folds[trial.val]) == {(t + 1) % 10}
        sets = [set(subjects[i]) for i in (trial.train, trial.val, trial.test)]
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


def test_leave_one_fold_out_bags(data) -> None:
    _, subjects = data
    folds = splits.esr_subject_folds(subjects, n_folds=10)
    trial = splits.esr_trials(folds)[0]
    bags = splits.leave_one_fold_out(trial, folds)
    assert len(bags) == 4
    for out, bag in zip(trial.train_folds, bags):
        assert set(folds[bag]) == set(trial.train_folds) - {out}


def test_holdout_is_subject_disjoint(data) -> None:
    labels, subjects = data
    split = splits.holdout(labels, subjects, val_fraction=0.2, test_fraction=0.2, seed=0)
    parts = [set(subjects[i]) for i in (split.train, split.val, split.test)]
    assert all(parts) and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert len(split.train) + len(split.val) + len(split.test) == len(labels)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="between 2"):
        splits.subject_folds(np.zeros(4), np.array([0, 0, 1, 1]), 3)
    with pytest.raises(ValueError, match="differ in length"):
        splits.subject_folds(np.zeros(4), np.zeros(3), 2)
    with pytest.raises(ValueError, match="n_train_folds"):
        splits.esr_trials(np.arange(5), n_train_folds=4)
    with pytest.raises(ValueError, match="train/val/test"):
        splits.official_split(np.array(["train", "Training"]))


def test_standard_split_uses_the_official_partition(data) -> None:
    labels, subjects = data
    names = np.array(["train"] * (len(labels) - 60) + ["val"] * 60)
    split = splits.standard_split(labels, subjects, names, seed=0)
    assert np.array_equal(split.test, np.flatnonzero(names == "val"))
    assert set(split.train) | set(split.val) == set(np.flatnonzero(names == "train"))
    assert not set(split.val) & set(split.train) and not set(split.val) & set(split.test)
    with_test = np.where(np.arange(len(labels)) % 5 == 0, "test", names)
    official = splits.standard_split(labels, subjects, with_test)
    assert np.array_equal(official.test, np.flatnonzero(with_test == "test"))
    assert np.array_equal(official.val, np.flatnonzero(with_test == "val"))
    no_partition = splits.standard_split(labels, subjects, seed=3)
    ref = splits.holdout(labels, subjects, seed=3)
    assert np.array_equal(no_partition.test, ref.test)
    with pytest.raises(ValueError, match="neither a test nor a validation"):
        splits.standard_split(labels, subjects, np.array(["train"] * len(labels)))
