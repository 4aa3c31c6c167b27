"""Ferreira et al.'s study: parameters, the plan of stored jobs, the mechanism regime's cues,
per-face scores, the claims' verdicts on hand-made and trained results, what the prose cites
and the chapter's exercise commands."""
from __future__ import annotations

import importlib
import re
import shlex
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pandas as pd
import pytest
import torch

from fernb import chapters
from fernb.course import schedule
from fernb.data import synthetic
from fernb.params import ParameterError
from fernb.report import MISSING, paper_results, paper_vs_book
from fernb.store import Store
from fernb.studies import relevance as study
from fernb.studies.relevance import data, protocol, scoring, tables
from fernb.verdicts import FAILS, HOLDS, UNTESTABLE

# The package exports the functions claims() and highlights(); their modules by name:
claims_module = importlib.import_module("fernb.studies.relevance.claims")
highlights = importlib.import_module("fernb.studies.relevance.highlights")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "02_relevance_maps.ipynb"
TINY = dict(n_subjects=8, n_folds=2, epochs=1, n_show=3, variants=["baseline", "fully", "weakly"],
            mechanism_variants=["baseline", "fully"], gate_contrast=["fully"],
            wild_variants=["baseline", "hybrid"], wild_subjects=4, pretrain_subjects=4,
            wild_folds=2, pretrain_epochs=1, finetune_epochs=1, device="cpu")


@pytest.fixture(scope="module")
def defaults() -> dict:
    return study.Settings.defaults()


def settings(**changes) -> study.Settings:
    return study.Settings.from_values({**TINY, **changes})


# ----------------------------------------------------------------------------- parameters

def test_the_defaults_pass(defaults) -> None:
    study.Settings.check(defaults)


@pytest.mark.parametrize("name,value", [
    ("image_size", 32), ("width", 0), ("n_folds", 1), ("variants", ["baseline", "supervised"]),
    ("variants", ["baseline", "baseline"]), ("epochs", 0), ("lr", 0.0), ("lr_decay", 1.5),
    ("augment", "yes"), ("lambda_fully", -1.0), ("gamma", -0.5), ("weak_reduction", "max"),
    ("sigma_fraction", 0.0), ("map_activation", "relu"), ("n_show", 0), ("gate", "max"),
    ("map_start", 0.0), ("n_eblocks", 0), ("eblock_after", 4), ("skip_connections", "no"),
    ("cue_strength", 1.5), ("mechanism_variants", ["baseline", "attention"]),
    ("gate_contrast", ["baseline"]), ("wild_dataset", "ckplus"), ("pretrain_dataset", "sfew"),
    ("patience", -1), ("device", "tpu"), ("seed", -3), ("data_root", 3), ("wild_root", None),
])
def test_a_bad_value_is_rejected_by_name(defaults, name, value) -> None:
    problems = study.Settings.problems({**defaults, name: value})
    assert problems and any(p.startswith(f"{name} = ") for p in problems), problems


@pytest.mark.parametrize("changes,names", [
    ({"image_size": 50}, ["image_size"]),
    ({"variants": ["fully", "weakly"]}, ["variants", "baseline"]),
    ({"wild_variants": ["hybrid"]}, ["wild_variants", "baseline"]),
    ({"mechanism_variants": ["fully"]}, ["mechanism_variants", "baseline"]),
    ({"dataset": "jaffe", "data_root": "/data/jaffe", "mechanism_variants": []},
     ["variants", "dataset", "jaffe"]),
    ({"dataset": "ckplus", "data_root": "/data/CK+"}, ["mechanism_variants", "synthetic"]),
    ({"wild_dataset": "sfew", "wild_root": "/data/sfew", "wild_variants": ["baseline", "fully"]},
     ["wild_variants", "wild_dataset"]),
    ({"n_subjects": 8, "n_folds": 5}, ["n_folds", "n_subjects"]),
    ({"wild_subjects": 5, "wild_folds": 3}, ["wild_folds", "wild_subjects"]),
    ({"map_activation": "sigmoid", "map_start": 1.0}, ["map_start", "sigmoid"]),
    ({"dataset": "ckplus"}, ["data_root"]),
    ({"data_root": "/somewhere"}, ["data_root", "synth-lab"]),
])
def test_relations_name_the_parameters_involved(defaults, changes, names) -> None:
    problems = " | ".join(study.Settings.problems({**defaults, **changes}))
    assert problems and all(n in problems for n in names), problems


def test_either_regime_and_table_6_can_be_skipped(defaults) -> None:
    assert not study.Settings.problems({**defaults, "mechanism_variants": [],
                                        "wild_variants": [], "gate_contrast": []})
    problems = study.Settings.problems({**defaults, "mechanism_variants": []},
                                       given={"cue_strength"})
    assert any("cue_strength" in p and "not used" in p for p in problems)


def test_the_choices_the_paper_leaves_open_reach_the_network() -> None:
    s = settings(n_eblocks=1, eblock_after=2, skip_connections=True, gate="literal",
                 map_activation="sigmoid", map_start=0.3)
    net = protocol.arch(s, "fully").build(8, 1, seed=0)
    assert len(net.representation.eblocks) == 1 and net.representation.position == 2
    assert net.gate == "literal" and net.facial_parts.skip_connections
    assert net.facial_parts.activation == "sigmoid" and net.map_start == 0.3
    # A literal linear map starts at 1 (the baseline's function); a mean-normalised map
    # starts at map_start.
    assert protocol.arch(settings(gate="literal"), "fully").map_start == 1.0
    assert protocol.arch(settings(), "fully").map_start == settings().map_start


# ----------------------------------------------------------------------------- protocol

def test_weak_reduction_scales_lambda_to_a_120_pixel_sum() -> None:
    s = settings()
    assert protocol.loss(s, "weakly").lambda_weakly == pytest.approx(1e-4 * 14400)
    assert protocol.loss(replace(s, weak_reduction="mean"), "weakly").lambda_weakly == 1e-4
    assert protocol.loss(s, "weakly", lambda_weakly=1e-2).lambda_weakly == pytest.approx(144.0)
    assert protocol.loss(s, "fully", lambda_fully=5.0).lambda_fully == 5.0
    assert protocol.loss(s, "baseline") is None and protocol.loss(s, "unguided") is None


def test_every_variant_keeps_its_epoch_by_the_validation_cross_entropy() -> None:
    s = settings()
    configs = {v: protocol.fit_config(s, v, 3) for v in study.VARIANTS}
    assert {c.select for c in configs.values()} == {"val_ce"}
    assert not any(c.maximize for c in configs.values())
    assert configs["baseline"].forward == configs["unguided"].forward == "forward"
    assert {configs[v].forward for v in ("fully", "weakly", "hybrid")} == {"forward_with_map"}


def test_a_changed_parameter_changes_only_the_jobs_it_touches() -> None:
    base = {run.key: job.key for run, job in protocol.plan(settings())}
    cue = {run.key: job.key for run, job in protocol.plan(settings(cue_strength=0.5))}
    changed = {k for k in base if base[k] != cue[k]}
    assert changed and all(k.startswith("mechanism/") for k in changed)
    high = {run.key: job.key for run, job in protocol.plan(settings(lambda_weakly_high=0.1))}
    assert {k for k in base if k in high and base[k] != high[k]} == set()
    assert "figure/f0/weakly/lambda = 0.1" in high
    fewer = {run.key: job.key for run, job in protocol.plan(settings(variants=["baseline"]))}
    assert all(base[k] == fewer[k] for k in fewer if k in base)
    regimes = {run.regime for run, _ in protocol.plan(settings())}
    assert regimes == {"default", "figure", "gate", "mechanism", "pretrain", "transfer"}
    assert {run.regime for run, _ in protocol.plan(settings(mechanism_variants=[],
                                                            wild_variants=[],
                                                            gate_contrast=[]))} == \
        {"default", "figure"}


def test_the_maps_settings_leave_the_baselines_jobs_alone() -> None:
    base = {run.key: job.key for run, job in protocol.plan(settings())}
    for changes in ({"gate": "literal"}, {"map_start": 0.5}, {"map_activation": "sigmoid",
                                                             "map_start": 0.5},
                    {"skip_connections": True}):
        other = {run.key: job.key for run, job in protocol.plan(settings(**changes))}
        same = {k for k in base if k in other and base[k] == other[k]}
        assert {k for k in base if "/baseline" in k and k.startswith(
            ("default/", "mechanism/"))} <= same, changes
        assert "default/f0/fully" not in same, changes
    assert protocol.plan(settings(n_eblocks=1))[0][1].key != protocol.plan(settings())[0][1].key


def test_the_device_is_not_part_of_a_jobs_key_but_the_precision_is() -> None:
    on_cpu = {run.key: job for run, job in protocol.plan(settings(device="cpu"))}
    auto = {run.key: job for run, job in protocol.plan(settings(device="auto"))}
    if not torch.cuda.is_available():  # "auto" is the CPU here, at the same precision
        assert {k: j.key for k, j in on_cpu.items()} == {k: j.key for k, j in auto.items()}
    assert {j.runtime["device"] for j in on_cpu.values()} == {"cpu"}
    assert all(protocol._config(j).device == "cpu" for j in on_cpu.values())
    fp32 = {run.key: job.key for run, job in protocol.plan(settings(device="cpu",
                                                                    precision="fp32"))}
    bf16 = {run.key: job.key for run, job in protocol.plan(settings(device="cpu",
                                                                    precision="bf16"))}
    assert all(fp32[k] != bf16[k] for k in fp32)


def test_the_chapter_warps_target_maps_with_zeros_outside() -> None:
    """Where eq. (8) reads outside the image, a moved target map is 0 (a mirrored border
    would copy a landmark's peak there): peaks next to every border, and real faces."""
    aug = protocol.augmentation(settings(augment=True), with_maps=True)
    peaks = torch.zeros(8, 1, 48, 48)
    peaks[:, 0, [0, 1, 46, 47, 24, 24, 24, 24], [24, 24, 24, 24, 0, 1, 46, 47]] = 1.0
    x, y = torch.rand(8, 1, 48, 48), torch.zeros(8, dtype=torch.long)
    for seed in range(5):
        torch.manual_seed(seed)
        _, (_, moved) = aug(x, (y, peaks))
        torch.manual_seed(seed)
        _, (_, inside) = aug(x, (y, torch.ones_like(peaks)))
        assert moved[inside == 0].abs().max() == 0
    fig, border = study.figures.augmented(study.prepare(
        synthetic.generate("synth-lab", n_subjects=4, size=48, seed=0), 0.025),
        np.arange(4), settings(), seed=0)
    plt.close(fig)
    assert border["outside_share"] > 0 and border["outside_peak"] == 0.0
    assert border["moved_peak"] > 0.5


# ----------------------------------------------------------------------------- data and cues

@pytest.fixture(scope="module")
def cued() -> tuple:
    s = settings()
    spec = protocol.data_spec(s, cue=True)
    prep = data.prepared(spec, s.sigma_fraction)
    return s, spec, prep


def test_folds_are_subject_independent_and_cover_every_face(cued) -> None:
    _, _, prep = cued
    splits = data.fold_splits(prep, 2, seed=0)
    tests = np.concatenate([s.test for s in splits])
    assert sorted(tests.tolist()) == list(range(len(prep.labels)))
    for s in splits:
        parts = [set(prep.subjects[i].tolist()) for i in (s.train, s.val, s.test)]
        assert all(parts) and not (parts[0] & parts[1] or parts[0] & parts[2]
                                   or parts[1] & parts[2])


def test_the_mechanism_faces_differ_from_the_default_faces_only_in_the_cue_patch(cued) -> None:
    s, spec, prep = cued
    clean = data.prepared(protocol.data_spec(s), s.sigma_fraction)
    assert np.array_equal(clean.labels, prep.labels) and prep.cue is not None
    patch = data.cue_masks(prep, np.arange(len(prep.labels)))
    differ = spec.load().images != protocol.data_spec(s).load().images
    assert differ.any() and not (differ & ~patch).any()


def test_the_test_cues_agree_never_or_by_chance_with_the_label(cued) -> None:
    _, spec, prep = cued
    test = data.fold_splits(prep, 2, seed=0)[0].test
    sets = data.cue_test_sets(spec, test, 1.0, seed=0)
    labels = prep.labels[test]
    assert set(sets) == set(data.CUE_CONDITIONS)
    assert np.array_equal(sets["trained"][1], labels)  # strength 1: the label every time
    assert not np.any(sets["misleading"][1] == labels)
    assert sets["independent"][0].shape == prep.x[test].shape


# ----------------------------------------------------------------------------- scores

def test_peak_area_and_spread_by_hand() -> None:
    maps = np.zeros((2, 2, 2))
    maps[0] = [[4, 1], [0, 3]]   # half the peak is 2: pixels 4 and 3 -> 2 of 4
    maps[1] = 1.0                # a flat map: every pixel at its peak
    np.testing.assert_allclose(scoring.peak_area(maps), [0.5, 1.0])
    within, between = scoring.spread(maps)
    # Face 0: mean 2, std sqrt((4 + 1 + 4 + 1) / 4) = sqrt(2.5); face 1: flat.
    np.testing.assert_allclose(within, [np.sqrt(2.5) / 2, 0.0])
    # Between faces, per pixel std of (4, 1), (1, 1), (0, 1), (3, 1): 1.5, 0, 0.5, 1 ->
    # mean 0.75, over the overall mean 1.5.
    assert between == pytest.approx(0.75 / 1.5)
    assert np.isnan(scoring.peak_area(np.zeros((1, 2, 2))))[0]


def test_map_rows_give_each_row_its_own_scale_and_colour_bar() -> None:
    faces = np.zeros((3, 8, 8))
    small, large = np.full((3, 8, 8), 0.01), np.full((3, 8, 8), 50.0)
    small[:, 2, 2] = 0.02
    fig = study.figures.map_rows([("small", small), ("large", large)], faces, ["a", "b", "c"])
    limits = [ax.images[0].get_clim() for ax in fig.axes if ax.images][3:]
    assert limits[0][1] == pytest.approx(np.percentile(small, 99))
    assert limits[-1][1] == pytest.approx(50.0)
    assert sum(getattr(ax, "_colorbar", None) is not None for ax in fig.axes) == 2
    plt.close(fig)


# ----------------------------------------------------------------------------- hand-made results

def _results(accuracy: dict[str, list[float]], *, regime: str = "default",
             classes=("neutral", "happiness", "contempt"), n: int = 200,
             extra: dict[str, dict[str, list[float]]] | None = None,
             settings_: study.Settings | None = None) -> protocol.Results:
    """Results whose variant v gets accuracy[v][k] right in fold k (n faces per fold, the
    first class most frequent), with per-face score columns from ``extra`` (one value per
    fold, the same for every face of the fold)."""
    rows, tests, scores, shown, hist = [], {}, {}, {}, {}
    labels = np.array([0] * (n // 2) + [1] * (n // 4) + [2] * (n - n // 2 - n // 4))
    for variant, accs in accuracy.items():
        for fold, acc in enumerate(accs):
            key = f"{regime}/f{fold}/{variant}"
            right = np.arange(n) < round(acc * n)
            pred = np.where(right, labels, (labels + 1) % len(classes))
            logits = np.eye(len(classes))[pred] * 5
            tests[key] = {"label": labels, "logits_test": logits, "index": np.arange(n),
                          "classes": np.array(classes)}
            cols = {"index": np.arange(n), "label": labels, "pred_test": pred}
            for column, values in (extra or {}).get(variant, {}).items():
                cols[column] = np.full(n, values[fold])
            scores[key] = pd.DataFrame(cols)
            shown[key] = {"between": np.array(0.0)}
            hist[key] = pd.DataFrame({"epoch": [1, 2], "train_acc_ens": [0.5, 0.6],
                                      "val_acc_ens": [0.5, 0.6]})
            rows.append({"regime": regime, "variant": variant, "fold": fold, "tag": "",
                         "key": key, "label": study.LABELS[variant], "best_epoch": 2,
                         "epochs_run": 2, "accuracy": acc})
    s = settings_ or settings(variants=[v for v in study.VARIANTS if v in accuracy],
                              n_folds=3)
    return protocol.Results(pd.DataFrame(rows), hist, tests, scores, shown, tuple(classes), s)


def test_claims_on_hand_made_results() -> None:
    res = _results({"baseline": [0.6, 0.62, 0.58], "fully": [0.8, 0.83, 0.79],
                    "weakly": [0.6, 0.64, 0.57], "hybrid": [0.9, 0.93, 0.88]},
                   extra={"fully": {"map_evidence": [0.6, 0.55, 0.62],
                                    "chance_evidence": [0.2, 0.21, 0.19],
                                    "map_away": [0.05, 0.04, 0.06]},
                          "weakly": {"map_evidence": [0.2, 0.21, 0.19],
                                     "chance_evidence": [0.2, 0.21, 0.19],
                                     "map_away": [0.1, 0.095, 0.11]}})
    assert claims_module.beats_baseline(res, "fully").verdict == HOLDS
    assert claims_module.beats_baseline(res, "weakly").verdict == FAILS  # +0.3 points
    every = claims_module.every_variant_beats_baseline(res)
    assert every.verdict == FAILS and "weakly" in every.reason
    assert claims_module.hybrid_is_best(res).verdict == HOLDS  # +10 points over fully
    assert claims_module.weakly_beats_fully(res).verdict == FAILS
    assert claims_module.on_evidence(res, "fully").verdict == HOLDS
    assert claims_module.on_evidence(res, "weakly").verdict == FAILS  # at chance
    assert claims_module.wrinkles(res).verdict == HOLDS  # about 0.05 more in every fold
    # The same difference in every fold: three folds give the exact sign-flip p = 0.25.
    same = _results({"baseline": [0.6, 0.62, 0.58], "fully": [0.7, 0.72, 0.68]})
    claim = claims_module.beats_baseline(same, "fully")
    assert claim.verdict == FAILS and "p = 0.250" in claim.reason
    table = tables.accuracy_table(res)
    assert table.loc[study.LABELS["fully"], "gain over baseline"] == pytest.approx(
        100 * (np.mean([0.8, 0.83, 0.79]) - np.mean([0.6, 0.62, 0.58])))
    assert np.isnan(table.loc[study.LABELS["baseline"], "p (paired t-test)"])


def test_a_model_at_the_majority_class_makes_its_claims_not_testable() -> None:
    # Half the faces are class 0: a model right on half of them is at the majority rate.
    res = _results({"baseline": [0.5, 0.5, 0.5], "fully": [0.9, 0.9, 0.95]})
    claim = claims_module.beats_baseline(res, "fully")
    assert claim.verdict == UNTESTABLE and "Baseline CNN did not learn" in claim.reason
    two = _results({"baseline": [0.7, 0.72], "fully": [0.9, 0.91]},
                   settings_=settings(variants=["baseline", "fully"]))
    claim = claims_module.beats_baseline(two, "fully")
    assert claim.verdict == UNTESTABLE and "only 2 folds" in claim.reason


def test_the_mechanism_claims_need_the_shortcut_and_a_learned_map() -> None:
    s = settings(variants=["baseline"], mechanism_variants=["baseline", "unguided", "fully"],
                 n_folds=3)
    accs = {"baseline": ([0.9] * 3, [0.55, 0.52, 0.56], [0.1, 0.12, 0.08]),
            "unguided": ([0.9] * 3, [0.55, 0.52, 0.56], [0.1, 0.12, 0.08]),
            "fully": ([0.9] * 3, [0.7, 0.72, 0.69], [0.6, 0.65, 0.62])}
    res = _results({v: a[0] for v, a in accs.items()}, regime="mechanism", settings_=s)
    for variant, (trained, independent, misleading) in accs.items():
        for fold in range(3):
            key = f"mechanism/f{fold}/{variant}"
            base = res.tests[key]
            labels = base["label"]
            for condition, acc in (("trained", trained[fold]), ("independent", independent[fold]),
                                   ("misleading", misleading[fold])):
                right = np.arange(len(labels)) < round(acc * len(labels))
                pred = np.where(right, labels, (labels + 1) % 3)
                base[f"logits_{condition}"] = np.eye(3)[pred] * 5
                res.scores[key][f"pred_{condition}"] = pred
                res.scores[key][f"cue_{condition}"] = (labels + 1) % 3
            res.scores[key]["map_mse"] = 0.01
    assert claims_module.takes_shortcut(res).verdict == HOLDS
    prep = data.Prepared(torch.zeros(200, 1, 4, 4), res.tests["mechanism/f0/fully"]["label"],
                         np.arange(200), ("neutral", "happiness", "contempt"),
                         torch.rand(200, 1, 4, 4), None, None, None)
    assert claims_module.resists(res, "fully", "baseline", prep).verdict == HOLDS
    assert claims_module.resists(res, "fully", "unguided", prep).verdict == HOLDS
    # A map no closer to its targets than a constant map: the prior did not act.
    for fold in range(3):
        res.scores[f"mechanism/f{fold}/fully"]["map_mse"] = 1.0
    claim = claims_module.resists(res, "fully", "baseline", prep)
    assert claim.verdict == UNTESTABLE and "did not learn its targets" in claim.reason
    # Without a shortcut to remove, nothing can be removed.
    for fold in range(3):
        key = f"mechanism/f{fold}/baseline"
        res.scores[key]["pred_misleading"] = res.scores[key]["pred_independent"]
    assert claims_module.takes_shortcut(res).verdict == FAILS
    claim = claims_module.resists(res, "unguided", "baseline", prep)
    assert claim.verdict == UNTESTABLE and "does not take the shortcut" in claim.reason


# ----------------------------------------------------------------------------- a trained study

@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple:
    s = settings()
    store = Store(tmp_path_factory.mktemp("relevance-store"))
    results = study.run(s, store)
    return s, store, results, data.prepared(protocol.data_spec(s), s.sigma_fraction)


def test_a_trained_study_stores_and_scores_every_run(trained) -> None:
    s, store, res, prep = trained
    assert list(res.runs["key"]) == [run.key for run, _ in protocol.plan(s)]
    assert res.classes == prep.classes and len(res.wild_classes) == 7
    scores = res.scores["default/f0/fully"]
    assert {"map_l1", "map_peak_area", "map_mse", "map_evidence", "map_away", "cam_evidence",
            "gated_evidence", "chance_evidence"} <= set(scores.columns)
    # Evidence away from the landmarks is part of the evidence: never a larger share (NaN
    # where a face has no evidence away from its landmarks).
    away = scores["map_away"]
    assert away.notna().any() and (away.isna() | (away <= scores["map_evidence"] + 1e-9)).all()
    mech = res.scores["mechanism/f0/fully"]
    assert {f"pred_{c}" for c in data.CUE_CONDITIONS} <= set(mech.columns)
    assert (mech["map_cue"].between(0, 1)).all() and (mech["chance_cue"] > 0).all()
    assert res.shown["default/f0/fully"]["map"].shape == (3, 48, 48)
    assert "map" not in res.shown["default/f0/baseline"]
    assert {"train_ce", "val_ce"} <= set(res.histories["default/f0/fully"].columns)


def test_a_rerun_trains_nothing_and_a_changed_setting_only_its_jobs(trained, capsys) -> None:
    s, store, res, _ = trained
    again = study.run(s, store)
    assert "trained 0" in capsys.readouterr().out
    pd.testing.assert_frame_equal(again.runs, res.runs)
    outcome = store.run([job for _, job in protocol.plan(replace(s, lambda_fully_low=2.0))])
    assert outcome.trained == ["figure/f0/fully/lambda = 2"]


def test_tables_claims_and_the_paper_table_of_a_trained_study(trained) -> None:
    s, _, res, prep = trained
    table = tables.accuracy_table(res)
    assert list(table.index) == [study.LABELS[v] for v in s.variants]
    assert tables.per_fold_table(res).shape == (3, 2)
    assert {"Landmark targets (eq. 4)", "Chance (uniform map)"} <= set(
        tables.map_scores(res, prep).index)
    stats = tables.map_statistics(res, prep)
    assert "Best constant map (the targets' mean)" in stats.index
    assert tables.mechanism_table(res).shape[0] == 2
    found = study.claims(res, prep)
    # Two folds cannot carry a paired t-test: every comparison over folds is not testable.
    over_folds = [c for c in found if "Table 4" in c.source or "beyond the paper" in c.source]
    assert over_folds and all(c.verdict == UNTESTABLE for c in over_folds)
    measured = study.measured(res)
    assert set(measured) <= set(paper_results("relevance"))
    frame = paper_vs_book("relevance", measured)
    assert frame.loc[("Table 4", "Hybrid minus baseline accuracy (points)"), "this run"] == \
        MISSING  # hybrid is not among this run's variants
    assert "not testable" in set(frame["verdict"])


def test_every_number_the_prose_cites_is_computed(trained) -> None:
    _, _, res, prep = trained
    values = highlights.highlights(res, prep, border={"outside_peak": 0.0, "moved_peak": 1.0})
    text = "\n".join(c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells
                     if c.cell_type == "markdown")
    cited = (set(re.findall(r"\{glue:text\}`([\w.-]+)`", text)) - {"minutes"}
             - set(schedule.highlights("02_relevance_maps")))
    assert cited <= set(values), sorted(cited - set(values))
    assert set(highlights.CITED) == cited
    assert values["contiguity_start_gradient"] == 0.0


# ----------------------------------------------------------------------------- the chapter

def _exercise_commands() -> list[list[str]]:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    return [shlex.split(line.strip()) for line in text.splitlines()
            if re.match(r"^\s*fernb run 02_relevance_maps", line)]


def test_every_command_of_the_chapter_passes_the_parameter_checks() -> None:
    commands = _exercise_commands()
    assert len(commands) >= 6
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
            study.Settings.check(study.Settings.defaults() | given, set(overrides),
                                 folders=False)
        except ParameterError as err:  # pragma: no cover - the message is the point
            raise AssertionError(f"{' '.join(argv)}:\n{err}") from None
