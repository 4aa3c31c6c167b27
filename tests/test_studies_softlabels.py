"""Chapter 4's study: parameter rules, the plan's keys (what is shared and what differs),
claims on hand-made ensembles (each precondition, each test's unit), the paper-vs-book values,
and a small trained study."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fernb.data.datasets import FaceDataset
from fernb.data.splits import Split
from fernb.params import ParameterError
from fernb.report import paper_results, paper_vs_book
from fernb.store import Store
from fernb.studies import softlabels as study
from fernb.studies.softlabels import claims as C
from fernb.studies.softlabels import protocol as P
from fernb.studies.softlabels.results import Group, Regime, Results, SoftLabels, Trained
from fernb.studies.softlabels.settings import decay_epoch
from fernb.verdicts import FAILS, HOLDS, UNTESTABLE

CPU = study.Settings().as_dict()


def test_the_cpu_values_pass_and_each_bad_value_is_named() -> None:
    study.Settings.check(CPU, given=set(CPU))
    bad = {"gamma_grid": [2.0, 1.0], "fixed_gamma": "worst", "weights": 3, "lr_decay_at": 0,
           "width": 2.0, "n_members": 6, "soft_labels_from": "both", "repeats": 0,
           "mechanism_blend_prob": 1.5}
    for name, value in bad.items():
        problems = study.Settings.problems({**CPU, name: value}, given=set(CPU))
        assert problems and all(name in p for p in problems), (name, problems)
    with pytest.raises(ParameterError, match="no contempt class"):
        study.Settings.check({**CPU, "dataset": "synth-lab", "source": "synth-wild"})
    with pytest.raises(ParameterError, match="pretrain_on_source"):
        study.Settings.check({**CPU, "source": "synth-wild"})
    with pytest.raises(ParameterError, match="soft_labels_from is not used"):
        study.Settings.check({**CPU, "source": "synth-wild", "pretrain_on_source": False},
                             given={"soft_labels_from"})
    with pytest.raises(ParameterError, match="mechanism_blend_prob is not used"):
        study.Settings.check({**CPU, "mechanism": False}, given={"mechanism_blend_prob"})
    with pytest.raises(ParameterError, match="set -p mechanism False"):
        study.Settings.check({**CPU, "dataset": "rafdb", "data_root": "/data"},
                             folders=False)


def test_the_cpu_grid_holds_gamma_one_the_unperturbed_soft_labels() -> None:
    assert 1.0 in study.Settings().gamma_grid


def test_the_decay_epoch_is_computed_not_described() -> None:
    # 60 % of 4 epochs rounds to epoch 2, i.e. after half of them.
    assert decay_epoch(0.6, 4) == 2
    assert decay_epoch(0.6, 6) == 4
    assert decay_epoch(1.0, 6) is None and decay_epoch(0.9, 2) is None
    assert P.training_spec(study.Settings(epochs=4), 4)["schedule"].options["step_size"] == 2


# ----------------------------------------------------------------------- the plan

def test_the_constructor_is_hard_member_zero_and_the_sweep_is_member_zero() -> None:
    s = study.Settings()
    sweep = P.Sweep(pd.DataFrame(), (1.6, 2.2, 2.8), 2.2)
    jobs = P.ensemble_jobs(s, sweep)
    assert jobs[("default", "hard", 0, 0)].key == P.constructor_job(s).key
    swept = {j.spec["target"]["gamma"]: j.key for j in P.sweep_jobs(s)[1:]}
    assert jobs[("default", "perturbed", 0, 0)].key == swept[1.6]
    assert jobs[("default", "fixed", 0, 0)].key == swept[2.2]
    # The fixed-gamma and perturbation ensembles start alike: only gamma differs.
    for k in range(3):
        fixed, pert = jobs[("default", "fixed", 0, k)], jobs[("default", "perturbed", 0, k)]
        for field in ("draw", "fit_seed", "start", "network", "training", "data"):
            assert fixed.spec[field] == pert.spec[field], field
    # Members of one ensemble have their own initial weights and batch order.
    draws = {jobs[("default", "fixed", 0, k)].spec["draw"] for k in range(3)}
    seeds = {jobs[("default", "fixed", 0, k)].spec["fit_seed"] for k in range(3)}
    assert len(draws) == len(seeds) == 3
    # Every member trains end to end from the source network.
    assert all(j.spec["start"] == "source" and j.needs[0].key == P.source_job(s).key
               for j in jobs.values())
    assert set(g for _, g, _, _ in jobs) == {"hard", "fixed", "perturbed", "oracle"}
    assert {r for r, *_ in jobs} == {"default", "mechanism"}


def test_a_changed_parameter_retrains_only_what_it_touches() -> None:
    s = study.Settings()
    sweep = P.Sweep(pd.DataFrame(), (1.6, 2.2, 2.8), 2.2)
    before = {k: j.key for k, j in P.ensemble_jobs(s, sweep).items()}
    after = {k: j.key for k, j in P.ensemble_jobs(
        study.Settings(mechanism_blend_prob=0.4), sweep).items()}
    assert all((before[k] == after[k]) == (k[0] == "default") for k in before)
    grid = study.Settings(gamma_grid=[1.0, 1.6, 2.2, 2.8])
    assert P.constructor_job(grid).key == P.constructor_job(s).key
    assert P.source_job(grid).key == P.source_job(s).key
    # The soft-label members of one D do not depend on the other D's constructor.
    member = P.member_job(s, "default", P.soft("source", 2.2), 0, 1)
    assert [n.kind for n in member.needs] == [P.KIND] and "dataset" not in member.spec["needs"]
    own = P.member_job(s, "default", P.soft("dataset", 2.2), 0, 1)
    assert own.spec["needs"] == ("source", "dataset")
    # Where a network runs is not what it computes: the device stays out of the key, the
    # precision it resolves to stays in.
    moved = P.member_job(study.Settings(device="cpu"), "default", P.soft("source", 2.2), 0, 1)
    assert moved.key == member.key and moved.runtime["device"] == "cpu"
    assert member.spec["training"]["precision"] in ("fp32", "bf16", "fp16-amp")


def test_the_oracle_d_is_eqs_2_3_on_the_true_mixtures() -> None:
    classes = ("neutral", "happiness", "sadness")
    labels = np.array([0, 0, 1, 2, 2, 2])
    mixtures = np.array([[1, 0, 0], [0.6, 0, 0.4], [0, 1, 0], [0.2, 0, 0.8], [0, 0, 1],
                         [0, 0, 1]], dtype=np.float32)
    data = FaceDataset(np.zeros((6, 4, 4), np.uint8), labels, np.arange(6), classes,
                       mixtures=mixtures)
    s = Split(np.array([], int), np.arange(6), np.array([], int))
    np.testing.assert_allclose(P.oracle_soft_labels(data, s),
                               [[0.8, 0, 0.2], [0, 1, 0], [0.2 / 3, 0, 2.8 / 3]], atol=1e-6)
    with pytest.raises(ValueError, match="true mixtures"):
        P.oracle_soft_labels(FaceDataset(data.images, labels, data.subjects, classes), s)


# ----------------------------------------------------------------------- hand-made results

CLASSES = ("neutral", "happiness", "sadness")
N = 60
LABELS = np.tile([0, 1, 2], N // 3)
VALID = np.array([[0.7, 0.1, 0.2], [0.1, 0.8, 0.1], [0.2, 0.1, 0.7]])
BROKEN = np.array([[0.7, 0.1, 0.2], [0.1, 0.8, 0.1], [0.5, 0.1, 0.4]])  # sadness -> neutral


def _logits(correct: np.ndarray) -> np.ndarray:
    """(N, C) logits right on the faces where ``correct``, else predicting the next class."""
    pred = np.where(correct, LABELS, (LABELS + 1) % 3)
    return 5.0 * np.eye(3)[pred]


def _trained(correct: np.ndarray, target: dict, label: str = "x") -> Trained:
    z = _logits(correct)
    return Trained(label, target, z, z, pd.DataFrame(), None, 1.0, LABELS, LABELS, CLASSES)


def _right(share: float, offset: int = 0) -> np.ndarray:
    return (np.arange(N) + offset) % N < share * N


def _regime(members: dict[str, list[np.ndarray]], d: np.ndarray = VALID) -> Regime:
    mixtures = np.eye(3, dtype=np.float32)[LABELS] * 0.8 + 0.2 / 3
    data = FaceDataset(np.zeros((N, 4, 4), np.uint8), LABELS, np.arange(N), CLASSES,
                       mixtures=mixtures, meta={"clean_label": LABELS.copy()})
    split = Split(np.array([], int), np.array([], int), np.arange(N))
    groups = {}
    for name, rights in members.items():
        gammas = {"hard": None, "fixed": 2.0}.get(name)
        gs = tuple([gammas] * len(rights)) if name in ("hard", "fixed") else \
            tuple(1.0 + k for k in range(len(rights)))
        target = {"kind": "hard"} if name == "hard" else {"kind": "soft", "d": "source"}
        groups[name] = Group(name, None if name == "hard" else "source", gs,
                             [[_trained(c, target) for c in rights]])
    soft = {"source": SoftLabels("source", "toy-lab", d, CLASSES)}
    return Regime("default", data, split, groups["hard"].networks[0][0], soft, "source",
                  groups)


def _results(regime: Regime) -> Results:
    settings = study.Settings(gamma_grid=[1.0, 2.0, 3.0], mechanism=False)
    sweep = P.Sweep(pd.DataFrame({"gamma": [1.0, 2.0, 3.0], "val accuracy": [.4, .6, .5]}),
                    (1.0, 2.0, 3.0), 2.0)
    source = _trained(_right(0.8), {"kind": "hard"}, "source network")
    return Results(settings, source, sweep, [], {"default": regime}, 0.0)


def _strong_weak() -> dict[str, list[np.ndarray]]:
    # Hard members right on 60 % (the same faces), fixed members on 70 %, perturbed members on
    # 70 % of faces, each wrong on other faces, so their vote is right on every face.
    return {"hard": [_right(0.6)] * 3, "fixed": [_right(0.7)] * 3,
            "perturbed": [_right(0.7, 0), _right(0.7, 18), _right(0.7, 36)]}


def test_claims_hold_when_the_tests_find_the_difference() -> None:
    judged = C.default_claims(_results(_regime(_strong_weak())))
    assert judged["d_rule"].verdict == HOLDS
    assert judged["soft_label_gain_single"].verdict == HOLDS  # 70 % vs 60 % on every member
    assert judged["perturbation_gain"].verdict == HOLDS
    assert judged["diversity"].verdict == HOLDS  # fixed members always agree
    assert judged["fixed_ensemble_gain"].verdict == FAILS  # identical members: no gain
    reason = judged["perturbation_gain"].reason
    assert reason.startswith("sign-flip test clustered by image over 60 images")


def test_an_invalid_d_makes_every_claim_resting_on_it_not_testable() -> None:
    judged = C.default_claims(_results(_regime(_strong_weak(), d=BROKEN)))
    assert judged["d_rule"].verdict == FAILS
    assert judged["d_rule"].reason == "1 of 3 rows do not: sadness peaks on neutral"
    for key in ("soft_label_gain_single", "perturbation_gain", "ensemble_gain_over_hard",
                "ensemble_gain_over_single", "diversity", "fixed_ensemble_gain"):
        assert judged[key].verdict == UNTESTABLE, key
        assert "breaks Sec. 3.2's own-class rule in 1 of 3 rows (sadness peaks on neutral)" \
            in judged[key].reason
    # Claims that do not rest on D keep their verdicts.
    assert judged["order"].verdict == HOLDS


def test_a_model_that_did_not_learn_makes_its_claims_not_testable() -> None:
    members = _strong_weak()
    members["hard"] = [_right(0.3)] * 3  # at the majority-class rate of a balanced set
    judged = C.default_claims(_results(_regime(members)))
    for key in ("soft_label_gain_single", "ensemble_gain_over_hard"):
        assert judged[key].verdict == UNTESTABLE
        assert "did not learn" in judged[key].reason
    assert judged["perturbation_gain"].verdict == HOLDS  # does not compare hard labels


def test_ensemble_gain_over_single_compares_with_the_fixed_gamma_networks() -> None:
    """The paper's row subtracts the fixed-gamma single network, not the perturbation
    ensemble's own members."""
    members = {"hard": [_right(0.6)] * 3, "fixed": [_right(0.9)] * 3,
               "perturbed": [_right(0.5, 0), _right(0.5, 7), _right(0.5, 14)]}
    judged = C.default_claims(_results(_regime(members)))
    claim = judged["ensemble_gain_over_single"]
    assert claim.verdict == FAILS and claim.value < 0
    values = C.measured(_results(_regime(members)))
    assert values["ensemble_gain_over_single"] == claim
    assert values["raf_single_accuracy"] == pytest.approx(90.0)


def test_measured_values_fill_the_paper_table_with_verdicts() -> None:
    values = C.measured(_results(_regime(_strong_weak())))
    assert set(values) <= set(paper_results("soft_labels"))
    frame = paper_vs_book("soft_labels", values).reset_index().set_index("quantity")
    gain = paper_results("soft_labels")["perturbation_gain"]["quantity"]
    assert frame.loc[gain, "verdict"] == HOLDS
    transfer = paper_results("soft_labels")["transfer_gain_over_hard"]
    assert transfer["dataset"].startswith("RAF-DB")  # synth-wild stands in for RAF-DB
    assert values["transfer_gain_over_hard"] == values["ensemble_gain_over_hard"]
    assert values["table1_violations"] == 0 and values["perturbation_keeps_order"] is True


def test_mistakes_table_says_whether_the_mistakes_follow_d() -> None:
    cm = pd.DataFrame([[60, 10, 30], [20, 70, 10], [5, 45, 50]], index=list(CLASSES),
                      columns=list(CLASSES), dtype=float)
    table = study.mistakes_table(cm, SoftLabels("source", "toy", BROKEN, CLASSES))
    assert table["most frequent mistake"].tolist() == ["sadness", "neutral", "happiness"]
    assert table["D's row: largest other class"].tolist() == ["sadness", "neutral", "neutral"]
    assert table["D peaks on"].tolist() == ["neutral", "happiness", "neutral"]
    assert table["mistake follows D"].tolist() == ["yes", "yes", "no"]


def test_spread_table_shows_each_members_weight_in_eq7() -> None:
    regime = _regime(_strong_weak())
    z = np.stack([g * np.log(VALID)[LABELS] for g in (1.0, 2.0, 3.0)], axis=1)
    for k in range(3):
        regime.groups["perturbed"].networks[0][k].test = z[:, k]
    table = study.spread_table(regime)
    np.testing.assert_allclose(table["share of eq. 7's weight (%)"], [100 / 6, 200 / 6, 300 / 6])
    assert table["gamma"].tolist() == [1.0, 2.0, 3.0]


def test_the_spread_sentence_says_whether_the_spreads_grow_with_gamma() -> None:
    from fernb.studies.softlabels.prose import spread_sentence
    grows = spread_sentence(np.array([1.0, 2.0, 3.0]), (1.0, 2.0, 3.0))
    assert "1.00 at gamma 1, 2.00 at gamma 2, 3.00 at gamma 3: they grow with gamma" in grows
    assert grows.endswith("the member at gamma 3 carries the largest share of eq. (7)'s "
                          "weight, 50.0%")
    flat = spread_sentence(np.array([2.0, 1.0, 1.0]), (0.4, 1.0, 1.6))
    assert "do not grow with gamma" in flat and "at gamma 0.4 carries" in flat


def test_the_trend_sentence_needs_three_epochs_and_reads_the_last_two() -> None:
    from fernb.studies.softlabels.prose import rising_sentence
    assert rising_sentence([pd.Series([0.3])]).startswith("cannot show a trend")
    rising = rising_sentence([pd.Series([0.2, 0.3, 0.4, 0.5]), pd.Series([0.2, 0.3, 0.3, 0.4])])
    assert rising.startswith("rose by 15.0 points over their last two epochs")
    flat = rising_sentence([pd.Series([0.2, 0.5, 0.5, 0.505])])
    assert flat.startswith("changed by +0.5 points") and "levelled off" in flat


def test_observations_on_a_hand_made_matrix() -> None:
    classes = ["neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger"]
    cm = pd.DataFrame(np.eye(7) * 60, index=classes, columns=classes)
    cm.loc["disgust", "anger"] = 25
    cm.loc["fear", "surprise"] = 20
    cm.loc["fear", "sadness"] = 10
    cm.loc["anger", "neutral"] = 30
    table = study.observations(cm)
    assert table.loc["fear", "most frequent mistake"] == "surprise"
    assert table.loc["fear", "share named (%)"] == 20
    assert table.loc["anger", "most frequent mistake"] == "neutral"
    assert study.observations(cm.iloc[:3, :3]).empty


# ----------------------------------------------------------------------- a small trained study

TOY = dict(n_subjects=6, source_subjects=4, image_size=48, width=0.0625, source_epochs=1,
           epochs=1, gamma_grid=[1.0, 2.0], n_members=2, repeats=1, device="cpu")


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> tuple[Results, Store]:
    store = Store(tmp_path_factory.mktemp("store"))
    return study.run(study.Settings(**TOY), store), store


def test_the_trained_study_has_every_part(toy) -> None:
    results, _ = toy
    r, m = results.default, results.mechanism
    assert set(r.groups) == {"hard", "fixed", "perturbed"}
    assert set(m.groups) == {"hard", "fixed", "perturbed", "oracle"}
    assert set(r.soft_labels) == {"source", "dataset", "oracle"}
    assert r.groups["perturbed"].logits().shape == (1, len(r.test_labels), 2, 7)
    # The mechanism regime's faces carry their primary emotion and labels drawn from mixtures.
    assert m.clean_labels is not None and m.scores("hard").nll.shape == (1, len(m.test_labels))
    # Every hard-label constructor traces Sec. 3.2's rule epoch by epoch.
    assert len(r.constructor.trace) == 1 and len(results.source.trace) == 1
    # The validation curves are drawn for every network, the last epoch kept.
    assert {"train_loss", "val_loss", "val_acc_ens"} <= set(r.constructor.history.columns)
    assert len(study.accuracy_table(m)) == 4 and "clean-label accuracy (%)" in \
        study.accuracy_table(m).columns
    assert len(results.learning["mechanism"]) == 4 * (1 + 2)
    values = study.highlights(results)
    assert values["m_clean_oracle"] >= 0 and "epoch" in values["trace_sentence"]


def test_a_rerun_reuses_every_network_and_a_new_blend_share_retrains_the_mechanism(
        toy, capsys) -> None:
    _, store = toy
    capsys.readouterr()
    study.run(study.Settings(**TOY), store)
    assert capsys.readouterr().out.count("trained 0") == 2
    study.run(study.Settings(**TOY, mechanism_blend_prob=0.4), store)
    lines = capsys.readouterr().out.splitlines()
    assert "trained 0" in lines[0]
    trained = lines[1].split("trained ", 1)[1].split(": ", 1)[1].rstrip(".").split(", ")
    assert len(trained) >= 6 and all(t.startswith("mechanism") for t in trained)


def test_at_one_epoch_comparisons_are_not_testable_with_the_reason(toy) -> None:
    results, _ = toy
    judged = study.all_claims(results)
    assert judged["default"]["order"].verdict == HOLDS
    for key in ("perturbation_gain", "soft_label_gain_single", "ensemble_gain_over_hard"):
        claim = judged["default"][key]
        assert claim.verdict == UNTESTABLE, (key, claim)
        assert "did not learn" in claim.reason or "own-class rule" in claim.reason


def test_a_model_blind_to_most_classes_makes_its_claims_not_testable() -> None:
    """Above the majority class, yet predicting 3 of 8 classes: the comparison says little
    about soft labels, whose point is the classes next to the true one."""
    from fernb.verdicts import learned
    labels = np.repeat(np.arange(8), 10)
    blind = np.where(labels < 3, labels, 0)  # right on classes 0-2 only
    sighted = np.where(labels % 2 == 0, labels, (labels + 1) % 8)  # predicts 4 classes
    checks = [learned("blind", blind, labels, n_classes=8),
              learned("sighted", sighted, labels, n_classes=8)]
    assert all(c.ok for c in checks)
    check = C.predicts_enough(checks)
    assert not check.ok
    assert check.reason == ("1 of 2 compared models predict fewer than half of the classes, "
                            "e.g. blind predicts 3 of 8")
    assert C.predicts_enough(checks[1:]).ok
