"""Chapter 4's study: parameter rules, stored and resumed stages, references, measured values."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fernb.data.datasets import FaceDataset
from fernb.params import ParameterError
from fernb.report import paper_results, paper_vs_book
from fernb.softlabels import TABLE_1, diagonal_violations
from fernb.studies import softlabels as study

CPU = dict(dataset="synth-wild", data_root="", n_subjects=120, source="synth-lab",
           source_root="", source_subjects=60, image_size=48, width=0.125, weights="",
           pretrain_on_source=True, finetune="top", soft_labels_from="dataset",
           source_epochs=20, constructor_epochs=5, epochs=5, optimizer="adam", lr=0.001,
           lr_decay_at=0.6, batch_size=64, augment="flip", gamma_grid=[0.4, 1.2, 2.0, 2.8],
           n_members=3, fixed_gamma="best", repeats=2, seed=0, device="cpu")


def _toy(name: str, classes: tuple[str, ...], n_per_class: int = 8, seed: int = 0,
         split: np.ndarray | None = None) -> FaceDataset:
    rng = np.random.default_rng(seed)
    c = len(classes)
    labels = np.tile(np.arange(c), n_per_class)
    images = rng.integers(0, 60, (len(labels), 32, 32), dtype=np.uint8)
    for k in range(c):  # a bright square per class: cues a network can learn
        images[labels == k, 3 * k:3 * k + 6, 3 * k:3 * k + 6] = 250
    subjects = np.repeat(np.arange(len(labels) // c), c)
    mixtures = np.eye(c, dtype=np.float32)[labels] * 0.8 + 0.2 / c
    return FaceDataset(images=images, labels=labels, subjects=subjects, classes=classes,
                       name=name, mixtures=mixtures, split=split)


CLASSES = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger")


@pytest.fixture
def data() -> FaceDataset:
    return _toy("toy-wild", CLASSES)


@pytest.fixture
def source() -> FaceDataset:
    return _toy("toy-lab", CLASSES + ("contempt",), seed=1)


def _config(**changes) -> study.Config:
    base = dict(dataset="toy-wild", source="toy-lab", image_size=32, width=0.0625,
                pretrain_on_source=True, finetune="top", source_epochs=1, constructor_epochs=1,
                epochs=1, optimizer="adam", lr=0.001, lr_decay_at=0.6, batch_size=32,
                augment="none", gamma_grid=(1.0, 2.0), n_members=2, repeats=2, device="cpu")
    return study.Config(**{**base, **changes})


def test_the_cpu_values_pass_and_each_bad_value_is_named() -> None:
    study.Settings.check(CPU, given=set(CPU))
    bad = {"gamma_grid": [2.0, 1.0], "fixed_gamma": "worst", "finetune": "some",
           "weights": 3, "lr_decay_at": 0, "width": 2.0, "n_members": 5,
           "soft_labels_from": "both", "repeats": 0}
    for name, value in bad.items():
        problems = study.Settings.problems({**CPU, name: value}, given=set(CPU))
        assert problems and all(name in p for p in problems), (name, problems)
    with pytest.raises(ParameterError, match="no contempt class"):
        study.Settings.check({**CPU, "dataset": "synth-lab", "source": "synth-wild"})
    with pytest.raises(ParameterError, match="pretrain_on_source"):
        study.Settings.check({**CPU, "source": "synth-wild", "source_subjects": 60})
    with pytest.raises(ParameterError, match="soft_labels_from is not used"):
        study.Settings.check({**CPU, "source": "synth-wild", "pretrain_on_source": False},
                               given={"soft_labels_from"})
    with pytest.raises(ValueError, match="n_members"):
        _config(n_members=3)


def test_a_fixed_gamma_is_best_or_a_number() -> None:
    for value in ("best", 2.2):
        assert not study.Settings.problems({**CPU, "fixed_gamma": value}, given=set(CPU))
    for value in ("2.2x", 0, 11.0, "2.2"):
        assert study.Settings.problems({**CPU, "fixed_gamma": value}, given=set(CPU))
    assert study.Settings.given({"fixed_gamma": "2.2"}) == {"fixed_gamma": 2.2}


def test_prototype_reference_by_hand() -> None:
    # neutral, happiness, surprise: squared distances 1.8 (n-h), 3.15 (n-s), 4.47 (h-s);
    # the median distance is sqrt(3.15), so the kernel is exp(-d^2 / 6.3): 0.751477,
    # 0.606531, 0.491866; row neutral [1, 0.751477, 0.606531] / 2.358008.
    ref = study.prototype_reference(("neutral", "happiness", "surprise"))
    np.testing.assert_allclose(ref[0], [0.424087, 0.318692, 0.257222], atol=1e-6)
    np.testing.assert_allclose(ref.sum(1), 1)
    full = study.prototype_reference(CLASSES)
    others = np.where(np.eye(7, dtype=bool), -1, full)
    assert CLASSES[others[CLASSES.index("surprise")].argmax()] == "fear"


def test_observations_and_order_on_hand_made_matrices() -> None:
    cm = pd.DataFrame(np.eye(7) * 60, index=list(CLASSES), columns=list(CLASSES))
    cm.loc["disgust", "anger"] = 25
    cm.loc["fear", "surprise"] = 20
    cm.loc["fear", "sadness"] = 10
    cm.loc["anger", "neutral"] = 30
    table = study.observations(cm)
    assert table.loc["disgust", "holds"] == "yes"
    assert table.loc["fear", "most frequent mistake"] == "surprise"
    assert table.loc["fear", "share named (%)"] == 20
    assert table.loc["anger", "holds"] == "no"
    assert study.order_kept(TABLE_1.to_numpy(), [0.4, 1.0, 2.8])
    # A dataset without the remarked classes (e.g. a folder of other expressions): no rows.
    three = ["neutral", "happiness", "surprise"]
    none = study.observations(pd.DataFrame(np.eye(3) * 100, index=three, columns=three))
    assert none.empty and none.index.name == "true class"
    assert list(none.columns) == list(table.columns)


def test_a_dataset_without_validation_part_gives_a_fifth_of_training_to_it() -> None:
    names = np.array(["train"] * 35 + ["test"] * 21)
    toy = _toy("toy", CLASSES, split=names)
    s = study.split(toy)
    assert len(s.test) == 21 and len(s.val) == 7 and len(s.train) == 28
    assert not set(s.val) & set(s.train)


HAND_CLASSES = ("neutral", "happiness", "sadness")
HAND_LABELS = np.array([0, 1, 2, 1])


def _votes(*members: list[int]) -> np.ndarray:
    """(N, M, C) one-hot logits of members predicting the given classes."""
    return np.stack([np.eye(3, dtype=np.float32)[m] for m in members], axis=1)


def _hand_results() -> tuple[study.SoftLabels, study.Sweep, study.Comparison]:
    """Three repeats of two-member ensembles on four test faces (labels n, h, s, h).

    Ensemble accuracy (%) per repeat: hard 25, 25, 25; fixed 50, 50, 75; perturbed 75, 75,
    100 (wrong on the neutral face, then the sad one). Fixed members always agree, perturbed
    members disagree on one face of four. D's sadness row peaks on neutral."""
    d = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4]])
    constructor = study.Constructor("toy", HAND_CLASSES, d, diagonal_violations(d), 0.0, 0.0,
                                    0.0, network=None)
    soft = study.SoftLabels(constructor, None, d, None, "dataset")
    sweep = study.Sweep(pd.DataFrame({"gamma": [1.0, 2.0, 3.0], "val accuracy": [40, 60, 50]}),
                        (2.0, 3.0), 2.0, 30.0, 30.0)
    hard = _votes([0, 0, 0, 0], [0, 0, 0, 0])
    logits = {}
    for r, fixed, perturbed in (
            (0, _votes([0, 1, 0, 0], [0, 1, 0, 0]), _votes([1, 1, 2, 1], [1, 2, 2, 1])),
            (1, _votes([0, 1, 0, 0], [0, 1, 0, 0]), _votes([0, 1, 1, 1], [0, 2, 1, 1])),
            (2, _votes([0, 1, 2, 0], [0, 1, 2, 0]), _votes([0, 1, 2, 1], [0, 2, 2, 1]))):
        logits |= {(r, "hard"): hard, (r, "fixed"): fixed, (r, "perturbed"): perturbed}
    single = {"hard": 25.0, "fixed": 62.5, "perturbed": 70.0}
    runs = pd.DataFrame([{"repeat": r, "group": g, "member": k, "test accuracy": single[g]}
                         for r in range(3) for g in single for k in range(2)])
    comparison = study.Comparison(runs, logits, logits, HAND_LABELS, HAND_LABELS, HAND_CLASSES,
                                  study.group_names(soft))
    return soft, sweep, comparison


def test_ttests_on_hand_made_ensembles() -> None:
    _, _, comparison = _hand_results()
    np.testing.assert_allclose(comparison.ensemble_accuracy("perturbed"), [75, 75, 100])
    table = study.ttests(comparison)
    assert list(table.index) == ["Soft labels (toy), gamma perturbation vs Hard labels",
                                 "Soft labels (toy), gamma perturbation vs Soft labels (toy), "
                                 "fixed gamma"]
    # Against hard labels the differences are 50, 50, 75: mean 58.33, sd 14.43, t = 7.0 with
    # 2 degrees of freedom, two-sided p = 1 - t / sqrt(t^2 + 2) = 0.0198.
    assert table["mean difference"].tolist() == pytest.approx([175 / 3, 25.0])
    assert table["p"].tolist() == ["0.020", "-"]  # 25, 25, 25: no variation, no test
    assert table["significant"].tolist() == ["✓", "-"]


def test_claims_on_hand_made_ensembles() -> None:
    claims = study.claims(*_hand_results())
    assert [c.holds for c in claims] == [
        False,  # D's sadness row peaks on neutral
        True,   # eq. (4) keeps the order of every row
        True,   # gamma 1.0 (40 %) is below the best, gamma 2.0 (60 %)
        True,   # single networks: soft 62.5 > hard 25
        False,  # fixed-gamma ensemble 58.3 is below its single networks' 62.5
        True,   # perturbation 83.3 > fixed gamma 58.3
        True,   # perturbation 83.3 > hard 25
        True,   # disagreement 0.25 > 0
        None,   # no other dataset's D
        True,   # happiness: recall 100 %, neutral and sadness 66.7 %
    ]
    assert claims[0].evidence == "1 of 3 rows do not: sadness peaks on neutral"
    assert claims[4].evidence == "58.3 vs 62.5"
    assert claims[7].evidence == "disagreement 0.250 vs 0.000 at a fixed gamma"


def test_stages_store_resume_and_fill_the_paper_table(data, source, tmp_path, monkeypatch):
    config = _config()
    soft = study.build_soft_labels(data, source, config, tmp_path)
    assert soft.main_from == "dataset" and soft.other.shape == (7, 7)
    np.testing.assert_allclose(soft.main.sum(1), 1)
    assert soft.source.soft_labels.shape == (8, 8)
    assert set(study.diagonal_table(soft).index.get_level_values(0)) == {"toy-wild", "toy-lab"}
    refs = study.reference_table(soft, data, source)
    assert ("toy-wild", "true mixtures") in refs.index
    x = study.inputs(data, soft, config)
    assert x.train.tensors[0].shape[1:] == (4 * 8, 2, 2)  # fourth block at width 1/16
    sweep = study.gamma_sweep(data, soft, config, tmp_path, x)
    assert list(sweep.table["gamma"]) == [1.0, 2.0] and sweep.gammas == (1.0, 2.0)
    comparison = study.compare_ensembles(data, soft, sweep, config, tmp_path, x)
    assert comparison.groups == ("hard", "fixed", "perturbed", "transfer")
    assert comparison.logits[(1, "perturbed")].shape == (len(comparison.labels), 2, 7)
    runs = comparison.runs
    assert len(runs) == 2 * 4 * 2 and runs["test accuracy"].between(0, 100).all()
    # Member 0 of repeat 0 with the first gamma is the sweep's network at that gamma.
    first = runs.query("repeat == 0 and group == 'perturbed' and member == 0")
    swept = sweep.table.set_index("gamma").loc[sweep.gammas[0], "test accuracy"]
    assert math.isclose(first["test accuracy"].iloc[0], swept)
    table = study.accuracy_table(comparison, sweep)
    assert table["members"].tolist() == [2, 2, 2, 2]
    names = comparison.names
    assert list(study.ttests(comparison).index) == [
        f"{names['perturbed']} vs {names[g]}" for g in ("hard", "fixed", "transfer")]
    assert study.confusion(comparison).shape == (7, 7)

    values = study.measured(soft, sweep, comparison, "synth-wild")
    assert set(values) <= set(paper_results("soft_labels"))
    assert values["perturbation_keeps_order"] is True
    frame = paper_vs_book("soft_labels", values)
    assert (frame["verdict"] != "not measured").sum() == len(values)
    claims = study.claims(soft, sweep, comparison)
    # 8 claims, the transfer one, 3 remarks on the confusion matrix, happiness's recall: with
    # two members and a source dataset every one of them is tested.
    assert len(claims) == 13 and all(isinstance(c.holds, bool) for c in claims)
    assert claims[1].holds is values["perturbation_keeps_order"] is True

    calls = []

    class Stop(Exception):
        pass

    def fake_fit(*args, **kwargs):
        calls.append(1)
        raise Stop

    monkeypatch.setattr(study, "fit", fake_fit)
    (tmp_path / "members" / study.member_key(1, 1, "hard") / "result.json").unlink()
    with pytest.raises(Stop):  # the only unfinished member is trained again
        study.compare_ensembles(data, soft, sweep, config, tmp_path, x)
    assert calls == [1]
    again = study.build_soft_labels(data, source, config, tmp_path)
    np.testing.assert_array_equal(again.main, soft.main)
    with pytest.raises(ValueError, match="other settings"):
        study.build_soft_labels(data, source, _config(epochs=2), tmp_path)


def test_finetune_all_starts_members_from_the_source_network(data, source, tmp_path):
    config = _config(finetune="all", repeats=1, n_members=1, gamma_grid=(1.0,),
                     soft_labels_from="source")
    soft = study.build_soft_labels(data, source, config, tmp_path)
    assert soft.main_from == "source"
    start = study.start_state(soft, config)
    net = study.network(7, config, start, seed=3)
    head = set(net.backbone.head_keys)
    for key, value in net.backbone.net.state_dict().items():
        if key not in head:
            assert np.array_equal(value.numpy(), start[key].numpy()), key
    sweep = study.gamma_sweep(data, soft, config, tmp_path)
    comparison = study.compare_ensembles(data, soft, sweep, config, tmp_path)
    assert comparison.logits[(0, "hard")].shape == (len(comparison.labels), 1, 7)
    assert len(study.diversity_table(comparison)) == 0
