"""Ferreira et al.'s study: parameters, fold and transfer protocols, storage and resume,
map scores, the paper-vs-book keys and the chapter's exercise commands."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from fernb import chapters
from fernb.data import synthetic
from fernb.params import ParameterError
from fernb.report import Claim, paper_results, paper_vs_book
from fernb.studies import relevance as study

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "02_relevance_maps.ipynb"
TINY = dict(epochs=1, image_size=48, width=0.125, batch_size=32, augment=False, device="cpu")
MAIN = ["baseline", "fully", "weakly", "hybrid"]


@pytest.fixture(scope="module")
def prep() -> study.Prepared:
    return study.prepare(synthetic.generate("synth-lab", n_subjects=5, size=48, seed=0), 0.025)


@pytest.fixture(scope="module")
def defaults() -> dict:
    return study.Settings.defaults()


def test_the_defaults_pass(defaults) -> None:
    study.Settings.check(defaults)


@pytest.mark.parametrize("name,value", [
    ("image_size", 32), ("width", 0), ("n_folds", 1), ("variants", ["baseline", "supervised"]),
    ("variants", ["baseline", "baseline"]), ("epochs", 0), ("lr", 0.0), ("lr_decay", 1.5),
    ("augment", "yes"), ("lambda_fully", -1.0), ("gamma", -0.5), ("weak_reduction", "max"),
    ("sigma_fraction", 0.0), ("map_activation", "relu"), ("n_show", 0),
    ("wild_dataset", "ckplus"), ("pretrain_dataset", "sfew"), ("wild_variants", []),
    ("patience", -1), ("device", "tpu"), ("seed", -3), ("data_root", 3), ("wild_root", None),
])
def test_a_bad_value_is_rejected_by_name(defaults, name, value) -> None:
    problems = study.Settings.problems({**defaults, name: value})
    assert problems and any(p.startswith(f"{name} = ") for p in problems), problems


@pytest.mark.parametrize("changes,names", [
    ({"image_size": 50}, ["image_size"]),
    ({"variants": ["fully", "weakly"]}, ["variants", "baseline"]),
    ({"wild_variants": ["hybrid"]}, ["wild_variants", "baseline"]),
    ({"dataset": "jaffe", "data_root": "/data/jaffe"}, ["variants", "dataset", "jaffe"]),
    ({"wild_dataset": "sfew", "wild_root": "/data/sfew", "wild_variants": ["baseline", "fully"]},
     ["wild_variants", "wild_dataset"]),
    ({"n_subjects": 8, "n_folds": 5}, ["n_folds", "n_subjects"]),
    ({"wild_subjects": 5, "wild_folds": 3}, ["wild_folds", "wild_subjects"]),
    ({"dataset": "ckplus"}, ["data_root"]),
    ({"data_root": "/somewhere"}, ["data_root", "synth-lab"]),
])
def test_relations_name_the_parameters_involved(defaults, changes, names) -> None:
    problems = " | ".join(study.Settings.problems({**defaults, **changes}))
    assert problems and all(n in problems for n in names), problems


def test_a_synthetic_only_parameter_set_with_a_real_dataset_is_an_error(defaults) -> None:
    values = {**defaults, "dataset": "ckplus", "data_root": "/data/CK+"}
    assert not study.Settings.problems(values)
    problems = study.Settings.problems(values, given={"n_subjects"})
    assert any("n_subjects" in p and "not used" in p for p in problems)


def test_folds_are_subject_independent_and_cover_every_face(prep) -> None:
    splits = study.fold_splits(prep, 3, seed=0)
    tests = np.concatenate([s.test for s in splits])
    assert sorted(tests.tolist()) == list(range(len(prep.labels)))
    for s in splits:
        parts = [set(prep.subjects[i].tolist()) for i in (s.train, s.val, s.test)]
        assert all(parts) and not (parts[0] & parts[1] or parts[0] & parts[2]
                                   or parts[1] & parts[2])


def test_weak_reduction_scales_lambda_to_a_120_pixel_sum() -> None:
    run = study.Run(0, "weakly")
    assert study.Config(epochs=1).loss(run).lambda_weakly == pytest.approx(1e-4 * 14400)
    assert study.Config(epochs=1, weak_reduction="mean").loss(run).lambda_weakly == 1e-4
    # A figure run overrides the lambda; the baseline has no map loss.
    fig = study.Run(0, "weakly", lambda_weakly=1e-2)
    assert study.Config(epochs=1).loss(fig).lambda_weakly == pytest.approx(144.0)
    assert study.Config(epochs=1).loss(study.Run(0, "baseline")) is None
    assert study.Config(epochs=1).loss(study.Run(0, "fully", lambda_fully=5.0)).lambda_fully == 5


def test_loss_scales_by_hand(prep) -> None:
    config = study.Config(epochs=1, image_size=48)
    table = study.loss_scales(prep, config, n=4)
    # Chance cross-entropy of 8 classes: ln 8 = 2.0794.
    assert table.loc["cross-entropy at chance, eq. (3)", "value"] == pytest.approx(2.0794, 1e-4)
    sparsity = table.loc["eq. (6), sparsity of a target-shaped map"]
    assert sparsity["weighted, printed mean"] == pytest.approx(1e-4 * sparsity["value"])
    assert sparsity["weighted, 120 x 120 sum"] == pytest.approx(1.44 * sparsity["value"])
    # A target map is a set of peak-1 Gaussians on a dark face: its mean is below 1.
    assert 0 < sparsity["value"] < 1


def test_plan_adds_the_figure_runs_only_for_planned_variants() -> None:
    runs = study.plan(range(2), ["baseline", "fully", "weakly"], lambda_fully_low=5.0,
                      lambda_weakly_high=0.01)
    assert [r.key for r in runs][-2:] == ["f0-fully-lf5", "f0-weakly-lw0.01"]
    assert len(runs) == 2 * 3 + 2 and sum(r.main for r in runs) == 6
    assert len(study.plan([0], ["baseline"], lambda_fully_low=5.0)) == 1
    with pytest.raises(ValueError, match="unknown variants"):
        study.plan([0], ["baseline", "attention"])


@pytest.fixture(scope="module")
def lab(prep, tmp_path_factory) -> tuple[study.Results, Path, list, list]:
    """Four variants and both figure runs, two folds, one epoch."""
    out = tmp_path_factory.mktemp("folds")
    splits = study.fold_splits(prep, 2, seed=0)
    runs = study.plan(range(2), MAIN, lambda_fully_low=5.0, lambda_weakly_high=0.01)
    return study.run_folds(prep, splits, runs, study.Config(**TINY), out, n_show=3), out, \
        splits, runs


def test_fold_study_stores_and_scores(lab, prep) -> None:
    res, _, splits, runs = lab
    assert list(res.table["key"]) == [r.key for r in runs]
    assert res.table["accuracy"].between(0, 1).all()
    assert res.logits["f1-fully"].shape == (len(splits[1].test), 1, prep.n_classes)
    assert res.maps["f0-fully"]["map"].shape == (3, 48, 48)
    assert "map" not in res.maps["f0-baseline"] and res.maps["f0-baseline"]["cam"].shape[0] == 3
    scores = res.scores["f0-weakly"]
    # Evidence away from the landmarks is part of the evidence: never a larger share.
    assert (scores["map_away"] <= scores["map_evidence"] + 1e-9).all()
    shares = scores[["map_evidence", "cam_evidence", "chance"]].to_numpy()
    assert np.all(np.isnan(shares) | ((shares >= 0) & (shares <= 1)))  # NaN: an all-zero map


def test_fold_study_resumes_without_training(lab, prep, monkeypatch) -> None:
    res, out, splits, runs = lab
    config = study.Config(**TINY)
    calls = []
    real_fit = study.fit

    def counting_fit(*args, **kwargs):
        calls.append(kwargs["checkpoint"])
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(study, "fit", counting_fit)
    again = study.run_folds(prep, splits, runs, config, out, n_show=3)
    assert calls == [] and again.table["accuracy"].tolist() == res.table["accuracy"].tolist()
    (out / "f1-weakly" / "scores.csv").unlink()  # a run interrupted before result.json
    study.run_folds(prep, splits, runs, config, out, n_show=3)
    assert [Path(c).parent.name for c in calls] == ["f1-weakly"]
    with pytest.raises(ValueError, match="other settings"):
        study.run_folds(prep, splits, runs, study.Config(**{**TINY, "epochs": 2}), out)
    with pytest.raises(ValueError, match="folds \\[5\\]"):
        study.run_folds(prep, splits, [study.Run(5, "baseline")], config, out / "x")


def test_tables_measured_and_claims(lab, prep) -> None:
    res = lab[0]
    table = study.accuracy_table(res)
    assert list(table.index) == [study.LABELS[v] for v in MAIN]
    assert table.loc["Baseline CNN", "gain over baseline"] == 0
    assert study.per_fold_table(res).shape == (4, 2)
    scores = study.map_scores(res, prep)
    assert {"Landmark targets (eq. 4)", "Chance (uniform map)"} <= set(scores.index)
    assert scores.loc["Baseline CNN", "x_hat evidence"] == "-"
    measured = study.measured(res, res, dataset="synth-lab")
    assert set(measured) <= set(paper_results("relevance"))
    assert {"ckplus_baseline_accuracy", "ckplus_hybrid_gain", "sfew_gain"} <= set(measured)
    jaffe = study.measured(res, None, dataset="jaffe")
    assert {"jaffe_min_gain", "jaffe_weakly_minus_fully"} <= set(jaffe)
    assert not any(k.startswith("sfew") for k in jaffe)
    frame = paper_vs_book("relevance", measured)
    # A gain given as a bare number has no test on independent units behind it.
    assert frame.loc[("Table 4", "Hybrid minus baseline accuracy (points)"),
                     "verdict"] == "not testable"
    claims = study.claims(res, res)
    assert all(isinstance(c, Claim) for c in claims) and len(claims) == 10
    # Every variant, both figure runs, evidence masks, a wild run and contempt: each claim is
    # tested, so each has a yes or a no.
    assert all(isinstance(c.holds, bool) and c.evidence for c in claims)
    assert study.figure_maps(res, prep, [("fully", "a"), ("fully-lf5", "b")]) is not None
    assert study.figure_maps(res, prep, [("hybrid-lf5", "missing")]) is None


def _hand_results(accuracy: dict[str, float], rows: list[dict] | None = None,
                  predicted: list[int] | None = None) -> study.Results:
    """One fold whose main runs reach ``accuracy`` (fractions), plus the figure ``rows``; the
    most accurate variant predicts ``predicted`` for four faces labelled n, h, c, c."""
    table = pd.DataFrame([{"key": f"f0-{v}", "fold": 0, "variant": v, "main": True,
                           "accuracy": a} for v, a in accuracy.items()] + (rows or []))
    best = max(accuracy, key=accuracy.get)
    labels = np.array([0, 1, 2, 2])
    logits = {f"f0-{v}": np.eye(3)[labels][:, None] for v in accuracy}
    logits[f"f0-{best}"] = np.eye(3)[predicted or labels][:, None]
    scores = {k: pd.DataFrame({"label": labels}) for k in logits}
    return study.Results(table, logits, scores, {}, {}, {}, ("neutral", "happiness", "contempt"),
                         study.Config(epochs=1))


def test_claims_on_hand_made_results() -> None:
    maps = {"fully": dict(map_mse=0.02, map_evidence=0.5, chance=0.2, map_away=0.1),
            "weakly": dict(map_l1=0.30, map_evidence=0.6, chance=0.2, map_away=0.3),
            "hybrid": dict(map_evidence=0.55, chance=0.2, map_away=0.2)}
    figure = [{"key": "f0-fully-lf5", "fold": 0, "variant": "fully", "main": False,
               "accuracy": 0.5, "lambda_fully": 5.0, "map_mse": 0.05},
              {"key": "f0-weakly-lw0.01", "fold": 0, "variant": "weakly", "main": False,
               "accuracy": 0.5, "lambda_weakly": 0.01, "map_l1": 0.10, "map_evidence": 0.7}]
    lab = _hand_results({"baseline": 0.5, "fully": 0.6, "weakly": 0.75, "hybrid": 0.7}, figure,
                        predicted=[0, 1, 1, 2])
    for variant, values in maps.items():
        for column, value in values.items():
            lab.table.loc[lab.table["key"] == f"f0-{variant}", column] = value
    wild = _hand_results({"baseline": 0.5, "hybrid": 0.4})
    claims = study.claims(lab, wild)
    assert [c.holds for c in claims] == [
        True,   # fully +10, weakly +25, hybrid +20 points over the baseline
        False,  # the weakly supervised model is the most accurate, not the hybrid
        True,   # weakly 75 % > fully 60 %
        False,  # wild: hybrid 40 % < baseline 50 %
        True,   # lambda 5: error to targets 0.05 > 0.02 at lambda 10
        True,   # lambda 0.01: mean |x_hat| 0.10 < 0.30
        False,  # lambda 0.01: evidence 0.7 is not below 0.6
        True,   # evidence 0.5, 0.6, 0.55 > chance 0.2
        True,   # away from the landmarks: weakly 0.3 > fully 0.1
        True,   # contempt: recall 0.5, the others 1
    ]
    assert claims[4].evidence == "error to targets 0.0500 (lambda 5) vs 0.0200 (lambda 10)"
    assert claims[9].evidence == "lowest recall: contempt (0.50); contempt 0.50 (weakly)"
    # A baseline alone tests nothing but the hardest expression.
    alone = study.claims(_hand_results({"baseline": 0.5}, predicted=[1, 1, 2, 2]))
    assert [c.holds for c in alone] == [None] * 8 + [False]  # neutral's recall is the lowest


def test_transfer_pretrains_once_per_variant_and_resumes(tmp_path, monkeypatch) -> None:
    source = study.prepare(synthetic.generate("synth-wild", n_subjects=4, size=48, seed=1), 0.025)
    target = study.prepare(synthetic.generate("synth-wild", n_subjects=4, size=48, seed=0), 0.025)
    splits = study.target_splits(target, 2, seed=0)
    config = study.Config(**TINY)
    res = study.run_transfer(source, target, splits, ["baseline", "hybrid"], config, tmp_path,
                             pretrain_epochs=1, n_show=2)
    assert sorted(res.table["key"]) == ["f0-baseline", "f0-hybrid", "f1-baseline", "f1-hybrid"]
    assert (tmp_path / "pre-hybrid" / "model.pt").exists()

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(study, "fit", refuse)
    again = study.run_transfer(source, target, splits, ["baseline", "hybrid"], config, tmp_path,
                               pretrain_epochs=1, n_show=2)
    assert again.table["accuracy"].tolist() == res.table["accuracy"].tolist()
    lab = study.prepare(synthetic.generate("synth-lab", n_subjects=4, size=48, seed=0), 0.025)
    with pytest.raises(ValueError, match="classes"):
        study.run_transfer(lab, target, splits, ["baseline"], config, tmp_path / "y",
                           pretrain_epochs=1)


def test_an_official_split_is_the_target_split(prep) -> None:
    names = np.where(np.arange(len(prep.labels)) % 4 == 0, "val", "train")
    official = study.Prepared(**{**prep.__dict__, "split": names})
    (split,) = study.target_splits(official, 3, seed=0)
    assert np.array_equal(split.test, np.flatnonzero(names == "val"))
    assert not set(split.train) & set(split.val) and not set(split.train) & set(split.test)


def _exercise_commands() -> list[list[str]]:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    return [shlex.split(line.strip()) for line in text.splitlines()
            if re.match(r"^\s*fernb run 02_relevance_maps", line)]


def test_every_command_of_the_chapter_passes_the_parameter_checks() -> None:
    commands = _exercise_commands()
    assert len(commands) >= 5
    for argv in commands:
        overrides, profile, i = {}, "cpu", 3
        while i < len(argv):
            if argv[i] == "-p":
                overrides[argv[i + 1]] = argv[i + 2]
                i += 3
            elif argv[i] == "--profile":
                profile, i = argv[i + 1], i + 2
            else:
                raise AssertionError(f"unexpected argument {argv[i]!r} in {argv}")
        path = chapters.resolve_notebook("02_relevance_maps", ROOT)
        given = {**chapters.profile_values(profile, path, ROOT),
                 **study.Settings.given(overrides)}
        try:
            study.Settings.check(study.Settings.defaults() | given, set(overrides))
        except ParameterError as err:  # pragma: no cover - the message is the point
            raise AssertionError(f"{' '.join(argv)}:\n{err}") from None

