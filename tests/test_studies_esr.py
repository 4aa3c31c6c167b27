"""Chapter 1's study: the plan, the stored jobs (what a changed parameter retrains, what it
reuses), a small trained study, and the claims judged on independent units with
hand-computed values."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fernb.data.datasets import FaceDataset
from fernb.data.splits import Split
from fernb.device import computed_precision
from fernb.store import Store
from fernb.studies import esr as study
from fernb.studies.esr import claims, protocol, tables
from fernb.verdicts import FAILS, HOLDS, UNTESTABLE

TOY = dict(n_subjects=12, n_folds=4, n_train_folds=2, trials=[0, 1], grid={"varied": [3]},
           epochs=2, lr=0.05, milestones=[1, 2], wild_subjects=10, wild_branches=2,
           wild_per_class=10, wild_epochs_first=1, wild_epochs=1, affect_epochs=1,
           device="cpu")


def toy(**changes) -> study.Settings:
    return study.Settings.from_values({**TOY, **changes})


# ----------------------------------------------------------------------- the plan and its keys

def test_plan_covers_models_levels_and_strategies() -> None:
    runs = study.plan([0, 1], {"varied": [3, 4], "frozen": [3, 4]}, saliency=("varied", 3))
    assert len(runs) == 2 * (2 + 4)
    assert {r.key for r in runs if r.saliency} == {"t0-TE", "t0-ESR-L3-varied"}
    control = study.plan([0, 1], {"varied": [3]}, saliency=("varied", 3), init_control=True)
    assert [r.key for r in control if r.init == "same"] == ["t0-ESR-L3-varied-same-init",
                                                            "t1-ESR-L3-varied-same-init"]
    with pytest.raises(ValueError, match="strategies"):
        study.plan([0], {"sometimes": [3]})
    with pytest.raises(ValueError, match="levels"):
        study.plan([0], {"varied": [6]})
    with pytest.raises(ValueError, match="saliency"):
        study.plan([0], {"varied": [3]}, saliency=("frozen", 3))
    with pytest.raises(ValueError, match="interleaved"):
        study.plan([0], {"interleaved": [3]}, saliency=("interleaved", 3))
    with pytest.raises(ValueError, match="saliency"):
        study.plan([0], {"varied": [3]}, init_control=True)


def _keys(settings: study.Settings) -> dict[str, str]:
    return {job.label: job.key for job in study.jobs(settings)}


def test_a_job_key_holds_only_what_its_model_depends_on() -> None:
    base = _keys(toy())
    grid = _keys(toy(grid={"varied": [3, 4]}))
    # A new level adds ESR runs; every other job (ESR-9 and its heads included) keeps its key.
    assert {k: v for k, v in grid.items() if k in base} == base
    assert sorted(set(grid) - set(base)) == ["trial 0: ESR-4 Lvl. 4 (varied)",
                                             "trial 1: ESR-4 Lvl. 4 (varied)"]
    # The affect heads' epochs change the heads only; ESR-9's epochs change both (the heads
    # need ESR-9); the lab's epochs change every lab run and neither of them.
    affect = _keys(toy(affect_epochs=2))
    assert [k for k in base if affect[k] != base[k]] == ["ESR-9 valence/arousal heads"]
    wild = _keys(toy(wild_epochs=2))
    assert [k for k in base if wild[k] != base[k]] == ["ESR-9", "ESR-9 valence/arousal heads"]
    lab = _keys(toy(epochs=1, milestones=[1]))
    assert {k for k in base if lab[k] != base[k]} == {k for k in base if k.startswith("trial")}
    # Where a model trains is not what it is; the precision it computes in is.
    assert _keys(toy(device="auto")) == base
    fp32 = _keys(toy(precision="fp32"))
    assert (fp32 == base) == (computed_precision("auto", "cpu") == "fp32")
    assert {job.runtime["device"] for job in study.jobs(toy())} == {"cpu"}
    # Milestones belong to the runs that draw maps (trial 0's TE and saliency ESR) only.
    maps = _keys(toy(milestones=[2]))
    assert {k for k in base if maps[k] != base[k]} == {
        "trial 0: Traditional ensemble", "trial 0: ESR-4 Lvl. 3 (varied)"}


# ----------------------------------------------------------------------- a small trained study

@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return Store(tmp_path_factory.mktemp("esr-store"))


@pytest.fixture(scope="module")
def results(store: Store) -> study.Results:
    return study.run(toy(), store)


def test_the_study_trains_every_job_and_reads_it_back(results: study.Results) -> None:
    table = results.lab.table.set_index("key")
    assert list(table.index) == [
        "t0-single", "t0-TE", "t0-ESR-L3-varied", "t0-ESR-L3-varied-same-init",
        "t1-single", "t1-TE", "t1-ESR-L3-varied", "t1-ESR-L3-varied-same-init"]
    assert results.outcome.reused == [] and len(results.outcome.trained) == 10
    assert table["accuracy"].between(0, 1).all()
    assert table.loc["t0-ESR-L3-varied", "stages"] == 2
    assert [list(h["epoch"]) for h in results.lab.histories["t0-ESR-L3-varied"]] == [[1, 2]] * 2
    n_test = len(results.lab.labels["t0-TE"])
    assert results.lab.logits["t0-TE"].shape == (n_test, 2, results.data.n_classes)
    assert table.loc["t0-single", "params"] < table.loc["t0-ESR-L3-varied", "params"] < \
        table.loc["t0-TE", "params"]
    maps = results.lab.saliency["t0-ESR-L3-varied"]
    assert set(maps) == {"images"} | {f"stage{s}_epoch{e}" for s in (1, 2) for e in (1, 2)}
    assert maps["stage2_epoch2"].shape == (2, 48, 48)
    assert set(results.lab.saliency) == {"t0-TE", "t0-ESR-L3-varied"}
    wild = results.wild
    assert wild.logits.shape[1] == 2 and len(wild.histories) == 2
    assert wild.affect["predicted"].shape == (len(wild.labels), 2, 2)


def test_one_branch_of_an_esr_is_the_first_te_network(results: study.Results) -> None:
    """One seed per trial: an ESR with one branch is the TE's first network (paper Fig. 5)."""
    esr_first = results.lab.histories["t0-ESR-L3-varied"][0]["val_acc_1"]
    te_first = results.lab.histories["t0-TE"][0]["val_acc_1"]
    assert esr_first.tolist() == te_first.tolist()


def test_a_changed_level_grid_reuses_esr9_and_trains_only_the_new_esrs(
        results: study.Results, store: Store) -> None:
    again = study.run(toy(), store)
    assert again.outcome.trained == [] and len(again.outcome.reused) == 10
    assert again.lab.table["accuracy"].tolist() == results.lab.table["accuracy"].tolist()
    wider = study.run(toy(grid={"varied": [3], "frozen": [3]}), store)
    assert wider.outcome.trained == ["trial 0: ESR-4 Lvl. 3 (frozen)",
                                     "trial 1: ESR-4 Lvl. 3 (frozen)"]
    assert {"ESR-9", "ESR-9 valence/arousal heads"} <= set(wider.outcome.reused)
    np.testing.assert_array_equal(wider.wild.logits, results.wild.logits)


def test_tables_and_the_page_come_from_the_stored_runs(results: study.Results) -> None:
    checks = study.learning_checks(results)
    assert set(checks) == {"Single network", "Traditional ensemble", "ESR-4 Lvl. 3 (varied)",
                           "ESR-4 Lvl. 3 (varied, identical starts)", "ESR-9",
                           "ESR-9 best branch"}
    control = study.init_control(results.lab, "varied", 3)
    assert list(control.index) == ["own draw per branch", "one identical draw"]
    assert {"accuracy (%)", "disagreement", "Q-statistic"} <= set(control.columns)
    first = study.first_update(study.convergence(results.lab, "varied", 3))
    assert list(first.index) == [(0, "branch/network 2"), (1, "branch/network 2")]
    t1 = study.table1(results.lab, "varied", study.paper_complexity()["params"])
    assert t1.loc["Single network", "parameters (paper network)"] == 131_208
    assert t1["accuracy (%)"].dtype.kind == "f" and (t1["trials"] == 2).all()
    assert study.evidence_table(results).notna()["chance"].all()
    judged = study.judge_claims(results, checks)
    # Two trials are too few for any comparison of the lab runs, whatever the models learned.
    lab = [c for k, c in judged.items() if not k.startswith("esr9")]
    assert all(c.verdict == UNTESTABLE for c in lab)
    assert all("only 2 trials" in c.reason or "not in this run's grid" in c.reason
               or "no pair" in c.reason for c in lab)
    shown = study.highlights(results, study.paper_complexity(), judged, checks, seconds=60.0)
    assert shown["minutes"] == 1.0 and shown["n_trials"] == 2
    assert shown["stored_trained"] == 10
    assert all(isinstance(v, (str, int, float)) for v in shown.values())


# ----------------------------------------------------------------------- claims, by hand

N, C = 40, 4  # test faces per trial, classes (balanced: majority 25%)


def _logits(correct: int, members: int = 1, labels: np.ndarray | None = None) -> np.ndarray:
    """(N, members, C) logits whose every member is right on the first ``correct`` faces and
    predicts the next class on the others."""
    y = np.arange(N) % C if labels is None else labels
    pred = np.where(np.arange(N) < correct, y, (y + 1) % C)
    return np.repeat(np.eye(C)[pred][:, None, :], members, axis=1)


def _lab(correct: dict[str, list[int]]) -> protocol.LabResults:
    """Runs of the given approaches, one per trial, each right on ``correct[label][t]`` of
    the N faces of trial t."""
    models = {"Single network": ("single", 0, "-"), "Traditional ensemble": ("TE", 0, "-"),
              "ESR-4 Lvl. 3 (varied)": ("ESR", 3, "varied"),
              "ESR-4 Lvl. 4 (varied)": ("ESR", 4, "varied"),
              "ESR-4 Lvl. 3 (interleaved)": ("ESR", 3, "interleaved")}
    rows, logits, labels, histories = [], {}, {}, {}
    epochs = pd.DataFrame({"epoch": [1, 2]})
    for label, per_trial in correct.items():
        model, level, strategy = models[label]
        for t, k in enumerate(per_trial):
            run = protocol.Run(t, model, level, strategy)
            logits[run.key] = _logits(k, 1 if model == "single" else 2)
            labels[run.key] = np.arange(N) % C
            histories[run.key] = [epochs.assign(val_acc_1=0.5),
                                  epochs.assign(val_acc_1=0.5, val_acc_2=0.5)]
            rows.append({"trial": t, "model": model, "level": level, "strategy": strategy,
                         "init": "own", "key": run.key, "label": label, "accuracy": k / N})
    return protocol.LabResults(pd.DataFrame(rows), logits, labels, histories, {})


def _results(lab: protocol.LabResults, n_trials: int, grid=None) -> study.Results:
    settings = study.Settings.from_values({**TOY, "n_folds": 6, "trials": list(range(n_trials)),
                                           "grid": grid or {"varied": [3, 4]}})
    data = FaceDataset(images=np.zeros((C, 8, 8), np.uint8), labels=np.arange(C),
                       subjects=np.arange(C), classes=("a", "b", "c", "d"))
    wild = protocol.WildResults(_logits(30, 2), np.arange(N) % C, ("a", "b", "c", "d"), [], 0)
    return study.Results(settings, data, lab, wild)


def _judge(correct: dict[str, list[int]], key: str, n_trials: int = 3, grid=None):
    results = _results(_lab(correct), n_trials, grid)
    return claims.judge_claims(results, claims.learning_checks(results))[key]


GOOD = {"Single network": [24, 26, 28], "Traditional ensemble": [30, 33, 34],
        "ESR-4 Lvl. 3 (varied)": [31, 32, 35], "ESR-4 Lvl. 4 (varied)": [29, 34, 33]}


def test_table2_is_a_paired_t_test_over_the_trials() -> None:
    claim = _judge(GOOD, "ttest_single_te")
    te, single = np.array([30, 33, 34]) / N * 100, np.array([24, 26, 28]) / N * 100
    p = stats.ttest_rel(te, single).pvalue  # 0.003: three trials, a steady gain
    assert claim.verdict == HOLDS and p < 0.05
    assert f"over 3 trials: {np.mean(te - single):+.3g} points" in claim.reason
    assert f"p = {p:.3f}" in claim.reason
    same = _judge(GOOD, "ttest_te_lvl3")  # +0.83 points, p = 0.67: no significant difference
    assert same.verdict == HOLDS and same.value == pytest.approx(
        stats.ttest_rel(np.array([31, 32, 35]), np.array([30, 33, 34])).pvalue)


def test_a_model_at_the_majority_class_makes_its_claims_not_testable() -> None:
    floor = {**GOOD, "Single network": [10, 10, 10]}  # 25%: the majority class's rate
    claim = _judge(floor, "ttest_single_te")
    assert claim.verdict == UNTESTABLE and "Single network did not learn" in claim.reason
    assert _judge(floor, "ttest_te_lvl3").verdict == HOLDS  # it does not compare the single


def test_too_few_trials_or_a_missing_level_are_not_testable() -> None:
    two = {k: v[:2] for k, v in GOOD.items()}
    assert "only 2 trials" in _judge(two, "ttest_single_te", n_trials=2).reason
    only3 = {k: v for k, v in GOOD.items() if "Lvl. 4" not in k}
    claim = _judge(only3, "ttest_single_lvl4", grid={"varied": [3]})
    assert claim.verdict == UNTESTABLE and "not in this run's grid" in claim.reason


def test_interleaved_must_lose_to_every_other_strategy_at_its_level() -> None:
    grid = {"varied": [3, 4], "interleaved": [3]}
    weak = {**GOOD, "ESR-4 Lvl. 3 (interleaved)": [25, 27, 29]}  # -6, -5, -6 vs varied
    assert _judge(weak, "interleaved_weakest", grid=grid).verdict == HOLDS
    close = {**GOOD, "ESR-4 Lvl. 3 (interleaved)": [32, 31, 35]}
    assert _judge(close, "interleaved_weakest", grid=grid).verdict == FAILS


def test_best_level_fails_only_when_another_level_is_significantly_better() -> None:
    assert _judge(GOOD, "best_branching_level").verdict == HOLDS  # level 4: -1.7, p = 0.67
    better4 = {**GOOD, "ESR-4 Lvl. 4 (varied)": [36, 38, 39]}  # +5 points every trial
    claim = _judge(better4, "best_branching_level")
    assert claim.verdict == FAILS and "level 4 - level 3" in claim.reason


def _member(right: np.ndarray) -> np.ndarray:
    """(N, C) logits right on the faces ``right`` marks, the next class elsewhere."""
    y = np.arange(N) % C
    return np.eye(C)[np.where(right, y, (y + 1) % C)]


def _esr9(extra: int) -> np.ndarray:
    """Three ESR-9 members: the first right on faces 0-29 (the best branch), the second on
    0-19, the third on 20-29; both of the latter on ``extra`` more faces from 30 on, where
    their vote beats the best branch."""
    face = np.arange(N)
    return np.stack([_member(face < 30),
                     _member((face < 20) | ((face >= 30) & (face < 30 + extra))),
                     _member(((face >= 20) & (face < 30)) | ((face >= 30) & (face < 30 + extra)))],
                    axis=1)


@pytest.mark.parametrize("extra, verdict", [(6, HOLDS), (2, FAILS)])
def test_esr9_against_its_best_branch_is_an_exact_mcnemar_test(extra, verdict) -> None:
    results = _results(_lab(GOOD), 3)
    results.wild = protocol.WildResults(_esr9(extra), np.arange(N) % C, ("a", "b", "c", "d"),
                                        [], 0)
    claim = claims.esr9_claim(results, claims.learning_checks(results))
    # The vote is right on faces 0-29 like the best branch, and on the extra faces, where
    # the branch is wrong: McNemar's discordant faces are the extra ones, all for the vote.
    p = stats.binomtest(extra, extra).pvalue  # 2 / 2^extra: 0.031 and 0.5
    assert claim.verdict == verdict
    assert f"{extra} images only a gets right, 0 only b" in claim.reason
    assert f"p = {p:.3f}" in claim.reason
    assert claim.value == pytest.approx(extra / N)


def test_esr9_affect_is_compared_image_by_image_with_the_training_mean() -> None:
    results = _results(_lab(GOOD), 3)
    results.wild = protocol.WildResults(_esr9(6), np.arange(N) % C, ("a", "b", "c", "d"),
                                        [], 0)
    rng = np.random.default_rng(0)
    target = rng.uniform(-1, 1, (N, 2))
    near = target[:, None, :] + rng.normal(0, 0.05, (N, 3, 2))  # three branches near it
    results.wild.affect = {"predicted": near, "target": target, "train_mean": np.zeros(2)}
    checks = claims.learning_checks(results)
    claim = claims.affect_claim(results, checks)
    assert claim.verdict == HOLDS and "over 40 images" in claim.reason
    results.wild.affect = None
    assert "no valence/arousal labels" in claims.affect_claim(results, checks).reason


def test_a_new_branch_learns_faster_is_tested_over_the_trials() -> None:
    lab = _lab(GOOD)
    for t, (esr, te) in enumerate([(0.50, 0.25), (0.55, 0.30), (0.45, 0.30)]):
        # Member 2's validation accuracy after one epoch: ESR branch 2 against TE network 2.
        epochs = pd.DataFrame({"epoch": [1, 2]})
        lab.histories[f"t{t}-ESR-L3-varied"] = [
            epochs.assign(val_acc_1=0.2), epochs.assign(val_acc_1=0.3, val_acc_2=[esr, 0.6])]
        lab.histories[f"t{t}-TE"] = [epochs.assign(val_acc_1=0.2),
                                     epochs.assign(val_acc_1=[te, 0.5])]
    results = _results(lab, 3)
    claim = claims.first_update_claim(results, claims.learning_checks(results))
    esr, te = np.array([50, 55, 45]), np.array([25, 30, 30])
    p = stats.ttest_rel(esr, te).pvalue
    assert claim.verdict == HOLDS and f"p = {p:.3f}" in claim.reason
    assert f"ratio {esr.mean() / te.mean():.2f}" in claim.reason


def test_an_interrupted_saliency_run_resumes_with_every_map(tmp_path, monkeypatch) -> None:
    """Maps drawn before an interruption are kept with the checkpoints: the rerun trains only
    what was left and stores every milestone map."""
    settings = toy()
    run = protocol.Run(0, "ESR", 3, "varied", saliency=True)
    job = protocol.lab_job(run, study.lab_data(settings), settings, "cpu")
    drawn, real = [], protocol.gradcam

    def stop_at_the_third_map(*args, **kwargs):
        if len(drawn) == 2:
            raise KeyboardInterrupt
        drawn.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(protocol, "gradcam", stop_at_the_third_map)
    store = Store(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        store.run([job])
    monkeypatch.setattr(protocol, "gradcam", real)
    assert store.run([job]).trained == [job.label]
    maps = store.get(job).arrays("saliency")
    assert set(maps) == {"images"} | {f"stage{s}_epoch{e}" for s in (1, 2) for e in (1, 2)}


# ----------------------------------------------------------------------- diversity, by hand

def _pair(disagree: int) -> np.ndarray:
    """(N, 2, C) logits of two members right on faces 0-31 (80%), the second predicting a
    third class on the first ``disagree`` faces: they disagree on exactly those."""
    y = np.arange(N) % C
    first = np.where(np.arange(N) < 32, y, (y + 1) % C)
    second = np.where(np.arange(N) < disagree, (y + 2) % C, first)
    return np.stack([np.eye(C)[first], np.eye(C)[second]], axis=1)


def _diverse(disagree: dict[str, list[int]]) -> study.Results:
    """Three trials of the single network, the TE and the ESR at level 3 (own draws and
    identical starts), whose members disagree on ``disagree[label][t]`` of the N faces."""
    lab = _lab({"Single network": [32] * 3})
    models = {"Traditional ensemble": ("TE", "-", "own"),
              "ESR-4 Lvl. 3 (varied)": ("ESR", "varied", "own"),
              "ESR-4 Lvl. 3 (varied, identical starts)": ("ESR", "varied", "same")}
    rows = [lab.table]
    for label, per_trial in disagree.items():
        model, strategy, init = models[label]
        for t, d in enumerate(per_trial):
            run = protocol.Run(t, model, 3 if model == "ESR" else 0, strategy, init)
            lab.logits[run.key], lab.labels[run.key] = _pair(d), np.arange(N) % C
            lab.histories[run.key] = []
            rows.append(pd.DataFrame([{"trial": t, "model": model, "level": run.level,
                                       "strategy": strategy, "init": init, "key": run.key,
                                       "label": label, "accuracy": 0.8}]))
    lab.table = pd.concat(rows, ignore_index=True)
    return _results(lab, 3, grid={"varied": [3]})


def test_the_disagreement_of_members_is_counted_face_by_face() -> None:
    results = _diverse({"Traditional ensemble": [4, 6, 8], "ESR-4 Lvl. 3 (varied)": [2, 4, 6],
                        "ESR-4 Lvl. 3 (varied, identical starts)": [0, 0, 2]})
    table = tables.diversity_table(results.lab)
    assert table.loc["Traditional ensemble", "disagreement"] == pytest.approx(6 / N)
    assert table.loc["ESR-4 Lvl. 3 (varied)", "disagreement"] == pytest.approx(4 / N)
    # Both members wrong on faces 32-39 only: double fault 8/40; an oracle is right on 32.
    assert table.loc["ESR-4 Lvl. 3 (varied)", "oracle accuracy"] == pytest.approx(32 / N)
    control = tables.init_control(results.lab, "varied", 3)
    assert control["disagreement"].tolist() == pytest.approx([4 / N, 2 / (3 * N)])


def test_distinct_starts_disagree_more_is_a_paired_test_over_the_trials() -> None:
    own, same = [8, 10, 12], [0, 1, 2]
    results = _diverse({"Traditional ensemble": [8, 10, 12], "ESR-4 Lvl. 3 (varied)": own,
                        "ESR-4 Lvl. 3 (varied, identical starts)": same})
    checks = claims.learning_checks(results)
    claim = claims.init_claim(results, checks)
    p = stats.ttest_rel(np.array(own) / N, np.array(same) / N).pvalue  # 0.005
    assert claim.verdict == HOLDS and f"p = {p:.3f}" in claim.reason
    # The ESR disagrees as often as the TE (equal per trial): no significant difference.
    assert claims.diversity_claim(results, checks).verdict == HOLDS
    reversed_ = _diverse({"Traditional ensemble": [0, 1, 2], "ESR-4 Lvl. 3 (varied)": same,
                          "ESR-4 Lvl. 3 (varied, identical starts)": own})
    checks = claims.learning_checks(reversed_)
    assert claims.init_claim(reversed_, checks).verdict == FAILS
    far = _diverse({"Traditional ensemble": [8, 10, 12], "ESR-4 Lvl. 3 (varied)": [0, 1, 2],
                    "ESR-4 Lvl. 3 (varied, identical starts)": same})
    assert claims.diversity_claim(far, claims.learning_checks(far)).verdict == FAILS


# ----------------------------------------------------------------------- tables, by hand

def test_fig4_levels_are_means_and_stds_over_the_trials() -> None:
    levels = tables.by_level(_lab(GOOD)).set_index(["strategy", "level"])
    lv3 = np.array([31, 32, 35]) / N * 100
    assert levels.loc[("varied", 3), "mean"] == pytest.approx(lv3.mean())
    assert levels.loc[("varied", 3), "std"] == pytest.approx(lv3.std(ddof=1))
    assert (levels["trials"] == 3).all()
    one = tables.by_level(_lab({k: v[:1] for k, v in GOOD.items()}))
    assert one["std"].isna().all() and (one["trials"] == 1).all()


def test_table2_holds_the_paired_t_test_p_values() -> None:
    t2 = tables.table2(_lab(GOOD), "varied")
    te, single = np.array([30, 33, 34]), np.array([24, 26, 28])
    assert t2.loc["Single network", "Traditional ensemble"] == pytest.approx(
        stats.ttest_rel(single, te).pvalue)
    one = tables.table2(_lab({k: v[:1] for k, v in GOOD.items()}), "varied")
    assert one.isna().all().all() and list(one.columns) == [
        "Traditional ensemble", "ESR-4 Lvl. 3", "ESR-4 Lvl. 4"]


def test_table4_rmse_of_the_branches_mean_and_of_the_training_mean() -> None:
    target = np.array([[0.5, -0.5], [0.0, 0.5], [-0.5, 0.0], [1.0, 0.0]])
    shift = np.array([[0.1, 0.3], [-0.1, -0.3]])  # two branches, their mean is the target
    wild = protocol.WildResults(np.zeros((4, 2, C)), np.arange(4), ("a", "b", "c", "d"), [], 0,
                                affect={"predicted": target[:, None, :] + shift,
                                        "target": target, "train_mean": np.array([0.5, 0.0])})
    table = tables.rmse_table(wild)
    assert table.loc["ESR-9 (mean of branches)"].tolist() == pytest.approx([0, 0])
    assert table.loc["branch 1"].tolist() == pytest.approx([0.1, 0.3])
    # Training mean (0.5, 0): valence errors 0, 0.5, 1, 0.5; arousal 0.5, 0.5, 0, 0.
    assert table.loc["predict the training mean"].tolist() == pytest.approx(
        [np.sqrt(1.5 / 4), np.sqrt(0.5 / 4)])
    wild.affect = None
    assert tables.rmse_table(wild).empty


def test_the_paper_settings_sit_beside_this_runs() -> None:
    shown = tables.scaled_down(toy())
    assert shown.loc["n_folds", "this run"] == 4 and shown.loc["n_folds", "paper profile"] == 10
    assert shown.loc["grid", "this run"] == '{"varied": [3]}'
    assert not {"data_root", "wild_root", "device"} & set(shown.index)


def test_saliency_faces_are_the_last_happiness_and_fear_faces_of_the_test_fold() -> None:
    classes = ("anger", "fear", "happiness")
    data = FaceDataset(images=np.zeros((8, 8, 8), np.uint8),
                       labels=np.array([2, 1, 0, 2, 1, 2, 1, 0]), subjects=np.arange(8),
                       classes=classes)
    split = Split(train=np.array([0]), val=np.array([7]), test=np.arange(1, 7))
    assert protocol.saliency_images(data, split).tolist() == [5, 6]
    no_fear = Split(train=np.array([0]), val=np.array([7]), test=np.array([2, 3, 5]))
    assert protocol.saliency_images(data, no_fear).tolist() == [5]


def test_paper_values_are_this_runs_trial_means_and_judged_claims() -> None:
    results = _results(_lab(GOOD), 3)
    judged = claims.judge_claims(results, claims.learning_checks(results))
    values = claims.measured(results, tables.paper_complexity(), judged)
    assert values["single_accuracy"] == 65.0 and values["te_accuracy"] == pytest.approx(80.8)
    assert values["single_params"] == 131_208
    assert values["ttest_single_te"] is judged["ttest_single_te"]
    assert values["esr9_affectnet_accuracy"] == 75.0  # every member right on 30 of 40
    assert "esr9_rmse_valence" not in values  # no valence/arousal in this toy
