"""ESR's branching-level study: plan, train, store, resume."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fernb.data.datasets import FaceDataset
from fernb.data.splits import esr_subject_folds
from fernb.studies import esr as study


@pytest.fixture
def data() -> FaceDataset:
    rng = np.random.default_rng(0)
    n = 96
    labels = np.tile(np.arange(3), n // 3)
    images = rng.integers(0, 60, (n, 48, 48), dtype=np.uint8)
    images[labels == 1, 10:20, 10:20] = 250          # class cues a network can learn
    images[labels == 2, 30:40, 30:40] = 250
    return FaceDataset(images=images, labels=labels, subjects=np.repeat(np.arange(12), 8),
                       classes=("neutral", "happiness", "sadness"), name="toy")


def test_plan_covers_models_levels_and_strategies() -> None:
    runs = study.plan([0, 1], {"varied": [3, 4], "frozen": [3, 4]}, saliency=("varied", 3))
    assert len(runs) == 2 * (2 + 4)
    assert {r.key for r in runs if r.saliency} == {"t0-TE", "t0-ESR-L3-varied"}
    with pytest.raises(ValueError, match="strategies"):
        study.plan([0], {"sometimes": [3]})
    with pytest.raises(ValueError, match="levels"):
        study.plan([0], {"varied": [6]})
    with pytest.raises(ValueError, match="saliency"):
        study.plan([0], {"varied": [3]}, saliency=("frozen", 3))


def test_study_trains_stores_and_resumes(data: FaceDataset, tmp_path, monkeypatch) -> None:
    folds = esr_subject_folds(data.subjects, n_folds=4)
    runs = study.plan([0], {"varied": [3]}, saliency=("varied", 3))
    config = study.Config(epochs=2, lr=0.05, width=0.25, n_train_folds=2, augment="flip",
                          lr_step=None, device="cpu")
    res = study.run_study(data, folds, runs, config, tmp_path, saliency_images=np.array([1, 2]),
                          milestones=(1, 2), progress=False)
    table = res.table.set_index("key")
    assert list(table.index) == ["t0-single", "t0-TE", "t0-ESR-L3-varied"]
    assert table["accuracy"].between(0, 1).all()
    assert table.loc["t0-ESR-L3-varied", "stages"] == 2
    assert len(table.loc["t0-TE", "member_accuracy"]) == 2
    assert [list(h["epoch"]) for h in res.histories["t0-ESR-L3-varied"]] == [[1, 2], [1, 2]]
    assert res.logits["t0-TE"].shape == (len(res.labels["t0-TE"]), 2, 3)
    assert table.loc["t0-single", "params"] < table.loc["t0-ESR-L3-varied", "params"] < \
        table.loc["t0-TE", "params"]
    maps = res.saliency["t0-ESR-L3-varied"]
    assert set(maps) == {f"stage{s}_epoch{e}" for s in (1, 2) for e in (1, 2)}
    assert maps["stage2_epoch2"].shape == (2, 48, 48)
    assert set(res.saliency["t0-TE"]) == set(maps)

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")
    monkeypatch.setattr(study, "_train", refuse)
    again = study.run_study(data, folds, runs, config, tmp_path, progress=False)
    assert again.table["accuracy"].tolist() == res.table["accuracy"].tolist()


def test_bad_trials_fail_before_training(data: FaceDataset, tmp_path) -> None:
    folds = esr_subject_folds(data.subjects, n_folds=4)
    config = study.Config(epochs=1, n_train_folds=2)
    with pytest.raises(ValueError, match="trials"):
        study.run_study(data, folds, study.plan([7], {"varied": [3]}), config, tmp_path)
    with pytest.raises(ValueError, match="n_train_folds"):
        study.run_study(data, folds, study.plan([0], {"varied": [3]}),
                        study.Config(epochs=1, n_train_folds=3), tmp_path)


def test_first_branch_equals_first_te_network(data: FaceDataset, tmp_path) -> None:
    """One seed per trial: an ESR with one branch is the TE's first network (paper Fig. 5)."""
    folds = esr_subject_folds(data.subjects, n_folds=4)
    config = study.Config(epochs=2, lr=0.05, width=0.25, n_train_folds=2, augment="flip",
                          lr_step=None, device="cpu")
    res = study.run_study(data, folds, study.plan([0], {"varied": [3]}), config, tmp_path,
                          progress=False)
    esr_first = res.histories["t0-ESR-L3-varied"][0]["val_acc_1"]
    te_first = res.histories["t0-TE"][0]["val_acc_1"]
    assert esr_first.tolist() == te_first.tolist()


def test_changed_settings_and_bad_milestones_are_refused(data: FaceDataset, tmp_path) -> None:
    folds = esr_subject_folds(data.subjects, n_folds=4)
    runs = study.plan([0], {"varied": [5]})
    config = study.Config(epochs=1, width=0.25, n_train_folds=2, augment="none", device="cpu")
    study.run_study(data, folds, runs[:1], config, tmp_path, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        study.run_study(data, folds, runs[:1], study.Config(epochs=2, width=0.25,
                        n_train_folds=2), tmp_path, progress=False)
    with pytest.raises(ValueError, match="milestones"):
        study.run_study(data, folds, runs, config, tmp_path / "other", milestones=(1, 5),
                        saliency_images=np.array([0]))
    with pytest.raises(ValueError, match="interleaved"):
        study.plan([0], {"interleaved": [3]}, saliency=("interleaved", 3))


def test_a_run_with_missing_artifacts_is_trained_again(data: FaceDataset, tmp_path,
                                                       monkeypatch) -> None:
    """A folder left by a crash (or another run) must never break later runs: a run whose
    result record exists but whose maps or logits do not is recomputed, not half-loaded."""
    folds = esr_subject_folds(data.subjects, n_folds=4)
    runs = study.plan([0], {"varied": [3]}, saliency=("varied", 3))
    config = study.Config(epochs=2, lr=0.05, width=0.25, n_train_folds=2, augment="flip",
                          lr_step=None, device="cpu")
    kwargs = dict(saliency_images=np.array([1, 2]), milestones=(1, 2), progress=False)
    first = study.run_study(data, folds, runs, config, tmp_path, **kwargs)
    (tmp_path / "t0-ESR-L3-varied" / "saliency.npz").unlink()
    (tmp_path / "t0-single" / "test.npz").unlink()
    # Mark every stored record: a run trained again writes a new one, a loaded run keeps it.
    for run in runs:
        path = tmp_path / run.key / "result.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "accuracy": -1.0}))
    trained = []
    original = study._train

    def spy(run, *args, **kw):
        trained.append(run.key)
        return original(run, *args, **kw)

    monkeypatch.setattr(study, "_train", spy)
    again = study.run_study(data, folds, runs, config, tmp_path, **kwargs)
    assert trained == ["t0-single", "t0-ESR-L3-varied"]
    assert set(again.saliency["t0-ESR-L3-varied"]) == set(first.saliency["t0-ESR-L3-varied"])
    accuracy = again.table.set_index("key")["accuracy"]
    assert accuracy["t0-TE"] == -1.0  # complete: loaded, not trained
    retrained = first.table.set_index("key").loc[["t0-single", "t0-ESR-L3-varied"], "accuracy"]
    assert accuracy[retrained.index].tolist() == retrained.tolist()  # same seeds, same runs


def test_identical_starts_control(data: FaceDataset, tmp_path) -> None:
    runs = study.plan([0, 1], {"varied": [3]}, saliency=("varied", 3), init_control=True)
    assert [r.key for r in runs if r.init == "same"] == ["t0-ESR-L3-varied-same-init",
                                                          "t1-ESR-L3-varied-same-init"]
    with pytest.raises(ValueError, match="saliency"):
        study.plan([0], {"varied": [3]}, init_control=True)
    folds = esr_subject_folds(data.subjects, n_folds=4)
    config = study.Config(epochs=1, lr=0.05, width=0.25, n_train_folds=2, augment="none",
                          lr_step=None, device="cpu")
    res = study.run_study(data, folds, runs[:3] + [runs[3]], config, tmp_path, progress=False)
    control = study.init_control(res, ["varied", 3])
    assert list(control.index) == ["own draw per branch", "one identical draw"]
    assert {"accuracy (%)", "disagreement", "Q-statistic"} <= set(control.columns)
