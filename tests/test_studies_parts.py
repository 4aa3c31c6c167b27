"""Chapter 3's study (Wadhawan & Gandhi 2023): its parameters; the plan of both regimes as
stored jobs (what each key holds, what a changed parameter retrains, the landmark pool kept
apart from the labelled subjects); a small study trained once (reused on a rerun, every
compared model checked, verdicts from the shared machinery, labels that say what was
measured, every sentence of the prose computed); and the analyses worked by hand."""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pandas as pd
import pytest
import torch

from fernb import chapters
from fernb.course import schedule
from fernb.data.datasets import FaceDataset
from fernb.params import ParameterError
from fernb.report import MISSING, format_table, paper_results, paper_vs_book
from fernb.store import Store
from fernb.studies import parts as study
from fernb.studies.parts import analysis, protocol, tables
from fernb.studies.parts.claims import compare
from fernb.studies.parts.highlights import settings_sentences, wild_probe_sentences
from fernb.verdicts import UNTESTABLE, VERDICTS

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "03_fll_to_fer.ipynb"
SMALL = dict(n_subjects=8, wild_subjects=6, width=0.125, n_folds=4, n_networks=1,
             direct_epochs=1, landmark_epochs=1, head_epochs=2, finetune_epochs=1,
             wild_direct_epochs=1, wild_landmark_epochs=1, wild_finetune_epochs=1,
             gradcam_images=4, pool_subjects=3, pool_epochs=1, curve=[1, 2], epoch_images=32,
             finetune_lrs=[0.001, 0.01], augment="none", device="cpu")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors run fastest on one thread (two threads wait on each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def settings(**changes) -> study.Settings:
    return study.Settings.from_values({**SMALL, **changes})


@pytest.fixture(scope="module")
def plan() -> protocol.Plan:
    return study.plan(settings())


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return Store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def results(plan, store) -> study.Results:
    return study.run(plan, store)


# ------------------------------------------------------------------------------ parameters

def defaults() -> dict:
    return study.Settings.defaults()


def test_the_defaults_and_the_profiles_pass():
    study.Settings.check(defaults())
    for profile in ("smoke", "paper"):
        overrides = chapters.load_profile(profile, ROOT)["03_fll_to_fer"]
        if profile == "paper":  # the real datasets' folders come on the command line
            overrides |= {"data_root": "/data/CK+", "wild_root": "/data/SFEW"}
        study.Settings.check({**defaults(), **overrides}, given=set(overrides))


@pytest.mark.parametrize("name, value, message", [
    ("dataset", "cifar10", "dataset = 'cifar10'"),
    ("wild_dataset", "ckplus", "wild_dataset = 'ckplus'"),
    ("image_size", 32, "image_size = 32"),
    ("width", 0, "width = 0"),
    ("n_networks", 0, "n_networks = 0"),
    ("landmark_epochs", 0, "landmark_epochs = 0"),
    ("finetune_lrs", [], "finetune_lrs = []"),
    ("finetune_lrs", [-1e-4], "finetune_lrs = [-0.0001]"),
    ("finetune_share", 0, "finetune_share = 0"),
    ("epoch_images", 0, "epoch_images = 0"),
    ("augment", "heavy", "augment = 'heavy'"),
    ("curve", [0, 2], "curve = [0, 2]"),
    ("curve", [2, 40], "curve = [2, 40]: the learning curve draws its labelled subjects from "
                       "the 24 synth-lab subjects"),
    ("trials", [0, 5], "trials = [0, 5]: a trial is a test fold"),
    ("n_subjects", 4, "n_subjects = 4 cannot fill n_folds = 5"),
    ("data_root", "/data/CK+", "data_root = '/data/CK+' is not used"),
])
def test_bad_values_are_named(name, value, message):
    with pytest.raises(ParameterError, match=re.escape(message)):
        study.Settings.check({**defaults(), name: value})


def test_a_real_dataset_needs_its_folder():
    with pytest.raises(ParameterError, match="wild_dataset = 'sfew' needs its folder"):
        study.Settings.check({**defaults(), "wild_dataset": "sfew"})


# -------------------------------------------------------------------------------- the plan

def kinds(plan, regime, where, seed=0):
    return [(n.kind, n.member, n.part) for n in plan.networks
            if n.regime == regime and n.where == where and n.seed == seed]


def test_the_plan_of_both_regimes(plan):
    parts = list(study.analysis.ENSEMBLE_PARTS)
    default = kinds(plan, "default", "lab-t0")
    assert default == [("baseline", 0, None), ("ftl", 0, "full"),
                       *[("el", k, p) for k, p in enumerate(parts)]]
    assert kinds(plan, "default", "wild") == default
    curve = kinds(plan, "mechanism", "2")
    assert curve == [("baseline", 0, None), ("control", 0, "full"), ("ftl", 0, "full")]
    for network in plan.networks:
        needs = [n.kind for n in network.job.needs]
        if network.kind == "baseline":
            assert network.job.kind == "parts.direct" and not needs
        elif network.kind == "control":  # the same schedule from random weights
            assert network.stage1 is None and needs == ["parts.rate"]
        else:
            assert needs == ["parts.landmarks", "parts.rate"]
    # The rate is measured on the first lab trial's first FTL network after stage 1.
    first_ftl = next(n for n in plan.networks if n.where == "lab-t0" and n.kind == "ftl")
    assert plan.rate.needs[0].key == first_ftl.stage1.key


def test_every_synthetic_set_of_the_chapter_has_its_motion():
    faces = protocol.faces_of(settings(motion=2.5))
    assert {name: dict(f.data.knobs).get("motion") for name, f in faces.items()} == {
        "lab": 2.5, "wild": 2.5, "mechanism": 2.5, "pool": 2.5}
    # the generator's own motion is not named, so the sets keep their stored keys
    assert all("motion" not in dict(f.data.knobs)
               for f in protocol.faces_of(settings(motion=1.0)).values())


def test_el_joins_the_curve_with_as_many_networks_per_kind_as_it_has_parts():
    parts = list(study.analysis.ENSEMBLE_PARTS)
    assert protocol.curve_kinds(settings()) == ("baseline", "control", "ftl")
    five = settings(curve_networks=len(parts))
    assert protocol.curve_kinds(five) == protocol.CURVE_KINDS
    curve = kinds(study.plan(five), "mechanism", "2")
    assert curve == [(kind, k, None if kind == "baseline" else "full")
                     for kind in ("baseline", "control", "ftl") for k in range(len(parts))] + \
        [("el", k, p) for k, p in enumerate(parts)]


def test_the_landmark_pool_is_other_faces_and_stage_one_is_shared_along_the_curve(plan):
    pool, labelled = plan.pool.load(), plan.mechanism.load()
    assert plan.pool.data.seed != plan.mechanism.data.seed
    assert dict(plan.pool.data.knobs)["frames"] == "all"
    assert len(pool) == len(np.unique(pool.subjects)) * 70  # every frame of 7 sequences
    # No pool face is a labelled face (independent subjects of another generator seed).
    flat = labelled.images.reshape(len(labelled), -1)
    assert not any((flat == face.reshape(-1)).all(1).any() for face in pool.images)
    stage1 = {n.stage1.key for n in plan.networks if n.regime == "mechanism" and n.stage1}
    assert len(stage1) == 1  # FTL 1 (EL is off the curve), whatever the point of the curve
    for n in plan.networks:
        if n.regime == "mechanism" and n.stage1 is not None:
            assert n.stage1.spec["landmarks"].faces == plan.pool


def test_labelled_subjects_are_nested_and_apart_from_the_test_and_validation_folds(plan):
    data = plan.mechanism.load()
    held = set(data.subjects[plan.mechanism_split["test"].index]) | \
        set(data.subjects[plan.mechanism_split["val"].index])
    one, two = plan.labelled[(0, 1)], plan.labelled[(0, 2)]
    assert len(one) == 1 and len(two) == 2 and set(one) <= set(two)
    assert not set(two) & held
    train = next(n for n in plan.networks if n.regime == "mechanism" and n.where == "2")
    assert set(data.subjects[train.job.spec["train"].index]) == set(two)


def test_member_k_of_every_kind_starts_from_one_extractor_draw():
    plan = study.plan(settings(curve_networks=2))
    first = [n for n in plan.networks if n.regime == "mechanism" and n.where == "1"
             and n.member == 0]
    assert {n.kind for n in first} == {"baseline", "control", "ftl"}
    states = [n.job.spec["net"].build().features.state_dict() for n in first]
    for state in states[1:]:
        assert all(torch.equal(state[k], states[0][k]) for k in state)
    other = next(n for n in plan.networks if n.regime == "mechanism" and n.kind == "ftl"
                 and n.member == 1).job.spec["net"].build().features.state_dict()
    assert not all(torch.equal(other[k], states[0][k]) for k in other)


def keys(plan, kind):
    return {j.key for j in plan.jobs + [n.stage1 for n in plan.networks if n.stage1]
            if j.kind == kind}


def test_a_changed_parameter_retrains_only_what_it_touches(plan):
    share = study.plan(settings(finetune_share=0.1))
    for kind in ("parts.landmarks", "parts.direct"):
        assert keys(share, kind) == keys(plan, kind)
    for kind in ("parts.rate", "parts.expressions"):
        assert not keys(share, kind) & keys(plan, kind)
    longer = study.plan(settings(curve=[1, 2, 3]))
    for kind in ("parts.landmarks", "parts.direct", "parts.expressions", "parts.rate"):
        assert keys(plan, kind) <= keys(longer, kind)
    raw = study.plan(settings(standardize=False))  # stages 2-3 and the rate measured on them
    for kind in ("parts.landmarks", "parts.direct"):
        assert keys(raw, kind) == keys(plan, kind)
    for kind in ("parts.rate", "parts.expressions"):
        assert not keys(raw, kind) & keys(plan, kind)
    baseline = study.plan(settings(direct_epochs=2))  # the lab's and the curve's Baselines
    changed = {n.job.key for n in plan.networks} - {n.job.key for n in baseline.networks}
    assert changed == {n.job.key for n in plan.networks
                       if n.kind == "baseline" and n.where != "wild"}


def test_the_device_is_where_a_job_runs_not_part_of_its_key(plan):
    auto = study.plan(settings(device="auto"))
    assert [j.key for j in auto.jobs] == [j.key for j in plan.jobs]
    assert {j.runtime["device"] for j in auto.jobs} == {"auto"}
    assert all("precision" in j.spec and "runtime" not in j.spec for j in plan.jobs)


def test_stages_two_and_three_without_the_standardisation(plan, store, results):
    """The paper's network for stages 2-3 (``standardize=False``) reuses stage 1's stored
    weights (their identity standardisation left out) and keeps no standardisation."""
    raw = study.plan(settings(standardize=False, curve=[1]))
    net = next(n for n in raw.networks if n.regime == "default" and n.kind == "ftl")
    outcome = store.run([net.job])
    assert outcome.trained == [raw.rate.name, net.job.name]  # stage 1 reused
    view = study.Results(raw, {net.job.key: store.get(net.job),
                               net.stage1.key: store.get(net.stage1)}, {})
    model = analysis.network(view, net)
    assert isinstance(model.standardize, torch.nn.Identity)
    stage1 = analysis.network(view, net, "stage1")
    for key, value in stage1.landmark_head.state_dict().items():  # stage 1's, kept
        torch.testing.assert_close(model.landmark_head.state_dict()[key], value)
    assert settings_sentences(view)["default_settings"].endswith(
        "stage 2's features as the extractor gives them (the paper's network, no "
        "standardisation)")
    assert settings_sentences(results)["default_settings"].endswith(
        "stage 2's features standardised")


# ------------------------------------------------------------------- the trained study

def test_a_finished_study_is_reused_whole(results, plan, store, capsys):
    assert set(results.outcome.trained) and not results.outcome.reused
    again = study.run(plan, store)
    assert again.outcome.trained == [] and len(again.outcome.reused) == len(results.entries)
    assert "trained 0" in capsys.readouterr().out


def test_logits_of_every_ensemble_after_each_stage(results):
    test = len(results.plan.lab_splits[0].test)
    assert results.logits("default", "lab-t0", "el").shape == (test, 5, 8)
    assert results.logits("default", "lab-t0", "ftl", artifact="head").shape == (test, 1, 8)
    cross = results.logits("default", "wild", "baseline", artifact="cross")
    assert cross.shape[1:] == (1, 7) and len(cross) == (results.plan.lab.load().labels < 7).sum()
    assert results.logits("mechanism", "2", "control").shape[1:] == (1, 8)
    summary = results.rate.record["summary"]
    assert 1e-3 <= summary["rate"] <= 1e-2 and summary["target"] > 0


def test_every_compared_model_is_checked(results):
    names = study.names(results.settings)
    checks = study.default_checks(results, names)
    models = [c.model for c in checks]
    assert "FTL stage 2 on synth-lab" in models and "EL stage 2 on synth-wild" in models
    assert "mouth on synth-lab (trained on synth-wild)" in models
    assert len(checks) == 3 * len(study.COLUMNS) + 4
    curve = study.curve_checks(results)
    assert len(curve) == 2 * (3 + 1)  # Baseline, control, FTL and its stage 2 per point


def test_claims_read_not_testable_when_a_compared_model_did_not_learn(results):
    names = study.names(results.settings)
    checks = {c.model: c for c in study.default_checks(results, names)}
    probe, errors = study.landmark_probe(results), study.error_table(results)
    scores, regions, _ = study.gradcam_evidence(results, 4)
    judged = study.claims(results, names, probe, errors, scores, regions)
    assert all(c.verdict in VERDICTS for c in judged.values())
    needed = [checks["FTL on synth-lab"], checks["Baseline on synth-lab"],
              checks["FTL stage 2 on synth-lab"]]
    if not all(c.ok for c in needed):
        assert judged["lab_ftl_minus_baseline"].verdict == UNTESTABLE
    else:
        assert "McNemar" in judged["lab_ftl_minus_baseline"].reason
    assert judged["cross_el_minus_wild_el"].verdict == UNTESTABLE


def test_the_probe_reads_the_wild_set_with_the_wild_networks(results):
    lab, wild = study.landmark_probe(results), study.landmark_probe(results, "wild")
    assert list(wild.index) == list(lab.index) == [*analysis.ENSEMBLE_PARTS, "full"]
    assert ((wild.filter(like="(%)") >= 0) & (wild.filter(like="(%)") <= 100)).all().all()
    assert not np.allclose(wild.to_numpy(), lab.to_numpy())  # other faces, other networks
    sentence = wild_probe_sentences(results, wild)["wild_probe_reading"]
    n_test = len(results.plan.wild_split.test)
    assert f"{n_test} synth-wild test faces" in sentence
    assert f"{wild.at['full', 'true landmarks (%)']:.1f}%" in sentence


def test_el_against_a_smaller_ensemble_is_not_testable(results):
    verdicts = study.curve_claims(results)  # EL is off the curve with one network per kind
    assert verdicts.index.get_level_values("comparison").unique().tolist() == [
        "FTL > Baseline", "FTL > control"]
    assert len(verdicts) == 2 * 2
    names = study.names(results.settings)
    for where in ("lab", "cross"):
        claim = compare(results, where, "EL", "FTL", "EL beats FTL", "Table I", names)
        assert claim.verdict == UNTESTABLE
        assert "EL has 5 networks and FTL 1" in claim.reason


def test_tables_say_what_they_measured(results):
    metrics = study.metrics(results)
    assert metrics["lab_dataset"] == "synth-lab"
    assert not [k for k in metrics if k.startswith(("ckplus", "sfew", "jaffe"))]
    assert {"lab_ftl_accuracy", "wild_el_accuracy", "cross_mouth_accuracy"} <= set(metrics)
    cost = study.complexity()
    assert "storage (MiB)" in cost.columns
    assert cost.at["sub-network", "storage (MiB)"] == pytest.approx(329_496 * 4 / 2**20)
    names = study.names(results.settings)
    probe, errors = study.landmark_probe(results), study.error_table(results)
    scores, regions, _ = study.gradcam_evidence(results, 4)
    judged = study.claims(results, names, probe, errors, scores, regions)
    measured = study.measured(results, cost, judged)
    assert not [k for k in measured if k.endswith("_accuracy")]  # synthetic faces
    table = paper_vs_book("fll_to_fer", measured)
    storage = paper_results("fll_to_fer")["subnetwork_storage_mib"]["quantity"]
    assert "MiB" in storage
    assert table.xs(storage, level="quantity")["verdict"].item() == "differs"
    assert table.xs("Layers of a sub-network", level="quantity")["verdict"].item() == "exact"


def test_weight_travel_and_the_rate_tables(results):
    travel = study.travel_table(results)
    lab = travel.xs(("default", "lab-t0"))
    assert np.isnan(lab.at["Baseline", "stage 1 (%)"]) and lab.at["FTL", "stage 1 (%)"] > 0
    assert lab.at["FTL", "share"] == pytest.approx(lab.at["FTL", "expressions (%)"]
                                                   / lab.at["FTL", "stage 1 (%)"])
    control = travel.xs(("mechanism", "1 subject", "control"))
    assert np.isnan(control["stage 1 (%)"]) and control["expressions (%)"] > 0
    rates = study.rate_table(results)
    assert rates.index.tolist() == [0.001, 0.01]
    assert rates["travel (%)"].is_monotonic_increasing
    schedule = study.schedule(results, study.names(results.settings))
    row = schedule.loc[("synth-lab", "stage 1: landmarks")]
    assert row["paper lr x steps"] == pytest.approx(100 * 30 * 0.01)
    assert row["lr x steps"] == pytest.approx(row["epochs trained"] * 1 * 0.01)  # 32 / 32


def test_the_vb_errors_are_the_stored_faces_errors(results):
    errors = study.error_table(results)
    mouth = errors.loc[("EL mouth", "mouth")]
    net = next(n for n in results.networks("default", "wild", "el") if n.part == "mouth")
    stored = results.entry(net).arrays("errors")
    size = results.settings.image_size
    assert mouth["before (px)"] == pytest.approx(size * stored["before_mouth"].mean())
    assert mouth["after (px)"] == pytest.approx(size * stored["after_mouth"].mean())
    assert mouth["faces"] == len(results.plan.wild_split.val)
    assert 0 <= mouth["p"] <= 1


def notebook_glue() -> set[str]:
    text = "\n".join(c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells
                     if c.cell_type == "markdown")
    return set(re.findall(r"\{glue:text\}`([\w.-]+)`", text))


def test_every_sentence_the_prose_cites_is_computed(results):
    """The notebook's glue references are exactly what the study computes, each a number
    or a sentence, so no hidden notebook cell has to choose one."""
    names = study.names(results.settings)
    probe, errors = study.landmark_probe(results), study.error_table(results)
    scores, regions, _ = study.gradcam_evidence(results, 4)
    judged = study.claims(results, names, probe, errors, scores, regions)
    comparison = paper_vs_book("fll_to_fer", study.measured(results, study.complexity(),
                                                            judged))
    values = study.highlights(results, shifts=study.displacements(results.plan.lab),
                              probe=probe, wild_probe=study.landmark_probe(results, "wild"),
                              errors=errors, judged=judged,
                              verdicts=study.curve_claims(results), comparison=comparison)
    values |= study.minutes(0.0) | schedule.highlights("03_fll_to_fer")
    missing = notebook_glue() - set(values)
    assert not missing, f"glued in the notebook but never computed: {sorted(missing)}"
    assert all(isinstance(v, (str, int, float)) for v in values.values())
    assert values["n_arithmetic"] == values["n_exact"] + values["n_differs"]


# ------------------------------------------------------------------- analyses by hand

def test_aligned_undoes_pose_and_keeps_expression():
    rng = np.random.default_rng(0)
    face = rng.uniform(10, 30, (68, 2))
    angle, scale, shift = np.deg2rad(7), 1.1, np.array([2.0, -1.5])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)],
                                 [np.sin(angle), np.cos(angle)]])
    moved = face @ rotation.T + shift
    np.testing.assert_allclose(analysis.aligned(moved[None], face)[0], face, atol=1e-9)
    smiling = moved.copy()
    smiling[48:68] += (0, -2)  # the mouth moves, the rigid points do not
    back = analysis.aligned(smiling[None], face)[0]
    np.testing.assert_allclose(back[list(analysis.RIGID_POINTS)],
                               face[list(analysis.RIGID_POINTS)], atol=1e-9)
    assert np.linalg.norm(back[48:68] - face[48:68], axis=1).mean() == pytest.approx(2 / scale)


def test_part_displacements_by_hand():
    points = np.zeros((6, 68, 2))
    points[:] = np.random.default_rng(1).uniform(0, 20, (68, 2))
    points[2, 48:68] += (3, 4)      # subject 0's happy face: every mouth point moves 5 px
    points[5, 0:17] += (0, 2)       # subject 1's happy face: the jaw moves 2 px
    points[5, [0, 1, 15, 16]] -= (0, 2)   # (the jaw's rigid corners stay)
    data = FaceDataset(images=np.zeros((6, 8, 8), np.uint8), labels=[0, 0, 1, 0, 0, 1],
                       subjects=[0, 0, 0, 1, 1, 1], classes=("neutral", "happiness"),
                       landmarks=points.astype(np.float32))
    table = study.part_displacements(data)
    assert table.index.tolist() == ["happiness", "neutral (floor)"]
    assert table.loc["happiness"].to_dict() == pytest.approx(
        {"eyebrows": 0.0, "eyes": 0.0, "nose": 0.0, "mouth": 2.5, "jaw": 2 * 13 / 17 / 2},
        abs=1e-5)
    assert table.loc["neutral (floor)"].max() == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="neutral"):
        study.part_displacements(FaceDataset(
            images=np.zeros((1, 8, 8), np.uint8), labels=[0], subjects=[0],
            classes=("happiness", "sadness"), landmarks=points[:1].astype(np.float32)))


def test_aligning_removes_the_pose_floor_of_the_synthetic_faces(plan):
    lab = plan.lab.load()
    aligned = study.part_displacements(lab)
    raw = study.part_displacements(lab, align=False)
    assert raw.loc["neutral (floor)"].mean() > 0.1          # pose jitter reads as motion
    assert aligned.loc["neutral (floor)"].max() < 0.05      # aligned, nothing moves
    assert aligned.loc["surprise", "jaw"] > 10 * aligned.loc["neutral (floor)", "jaw"]


def test_probe_reads_coordinates_and_skips_missing_rows():
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 2
    points = rng.normal(size=(60, 4))
    points[:, 0] += 4 * labels                    # one coordinate separates the classes
    points[5, 1] = np.nan                         # a face without landmarks
    assert analysis.probe_accuracy(points[:40], labels[:40], points[40:], labels[40:]) == 1.0


def face_points() -> np.ndarray:
    """A 20x20 face: every part's points on a small square, the jaw along the bottom."""
    face = np.zeros((68, 2), dtype=np.float32)
    face[0:17] = np.stack([np.arange(2, 19), np.full(17, 18)], 1)             # jaw, y = 18
    face[17:22] = face[22:27] = np.stack([np.arange(3, 8), np.full(5, 3)], 1)  # brows, y = 3
    face[22:27, 0] += 9
    face[36:42] = [(4, 6), (5, 5), (6, 5), (7, 6), (6, 7), (5, 7)]             # right eye
    face[42:48] = face[36:42] + (9, 0)
    face[27:36] = [(10, 5), (10, 7), (10, 9), (10, 11), (9, 11), (9, 12), (10, 12), (11, 12),
                   (11, 11)]
    face[48:68] = (10, 15)
    face[[48, 51, 54, 57]] = [(7, 15), (10, 14), (13, 15), (10, 16)]          # mouth hull
    return face


def test_part_masks_by_hand():
    masks = analysis.part_masks(face_points()[None], (20, 20), margin=0.0)
    # margin 0 still widens by one pixel (a 3x3 ellipse: the pixel and its 4 neighbours).
    mouth = masks["mouth"][0]
    assert mouth[15, 10] == 1 and mouth[14, 10] == 1 and mouth[15, 6] == 1
    assert mouth[12, 10] == 0 and mouth[15, 3] == 0
    jaw = masks["jaw"][0]
    assert jaw[18, 2:19].all() and jaw[17, 10] == 1 and jaw[15, 10] == 0
    brows = masks["eyebrows"][0]
    assert brows[3, 3:8].all() and brows[3, 12:17].all() and brows[3, 10] == 0
    assert masks["eyes"][0][6, 5] == 1 and masks["eyes"][0][6, 10] == 0
    none = analysis.part_masks(np.full((1, 68, 2), np.nan, np.float32), (20, 20))
    assert all(m.sum() == 0 for m in none.values())
    with pytest.raises(ValueError, match="landmarks"):
        analysis.part_masks(np.zeros((68, 2)), (20, 20))


def test_evidence_table_and_own_part_lift_by_hand():
    parts = analysis.ENSEMBLE_PARTS
    regions = {p: np.zeros((1, 4, 4), np.uint8) for p in parts}
    for i, p in enumerate(parts[:4]):
        regions[p][0, i] = 1                      # one row each: chance 4 / 16 = 0.25
    regions["jaw"][0, 3, :2] = 1                  # chance 2 / 16 = 0.125
    maps = {}
    for p in parts:
        cam = np.zeros((1, 4, 4), np.float32)
        cam[0, 0] = 1.0                           # all mass on the eyebrows' row ...
        if p == "mouth":
            cam[0, 3] = 1.0                       # ... the mouth network splits it in two
        maps[f"EL {p}"] = cam
    table = analysis.evidence_table(analysis.evidence_scores(maps, regions), regions)
    assert table.at["EL eyebrows", "eyebrows"] == 1.0
    assert table.at["EL mouth", "mouth"] == 0.5 and table.at["EL mouth", "jaw"] == 0.25
    assert table.loc["chance (area share)"].tolist() == [0.25, 0.25, 0.25, 0.25, 0.125]
    lift = study.own_part_lift(table)["own region share / chance"]
    assert lift.to_dict() == pytest.approx({"eyebrows": 4.0, "eyes": 0.0, "nose": 0.0,
                                            "mouth": 2.0, "jaw": 0.0})


def test_fig10_panels_keep_the_image_frame():
    images = np.zeros((2, 20, 30), np.uint8)
    before = np.full((2, 68, 2), 10.0)
    after = before.copy()
    after[:, :, 0] = 500.0  # a localiser gone far off the face
    fig = study.landmark_figure(images, before, after)
    for ax in fig.axes:
        assert ax.get_xlim() == (-0.5, 29.5) and ax.get_ylim() == (19.5, -0.5)
    plt.close(fig)


def test_the_curve_table_and_figure(results):
    table = study.curve_table(results)
    assert table.index.tolist() == [1, 2]
    assert {"Baseline", "control", "FTL", "FTL after stage 2",
            "majority class"} <= set(table.columns)
    assert "EL" not in table and "EL after stage 2" not in table
    labelled = results.plan.mechanism.load()
    assert table.at[2, "labelled faces"] == np.isin(labelled.subjects,
                                                    results.plan.labelled[(0, 2)]).sum()
    fig = study.curve_figure(table)
    assert len(fig.axes[0].lines) == 4  # Baseline, control, FTL and the majority class
    plt.close(fig)
    values = tables.curve_correct(results, 2, "ftl")
    assert values.shape == (1, len(results.plan.mechanism_split["test"]))
    assert table.at[2, "FTL"] == pytest.approx(100 * values.mean())


def test_prose_numbers_are_the_architectures():
    cost = study.complexity()
    numbers = study.PROSE_NUMBERS
    assert cost.at["extractor", "parameters"] == numbers["extractor parameters"]
    assert cost.at["sub-network", "parameters"] == numbers["sub-network parameters"]
    assert cost.at["ensemble", "parameters"] == numbers["ensemble parameters"]
    assert cost.at["sub-network", "parameters (Keras)"] == \
        numbers["sub-network parameters (Keras)"]
    assert cost.at["sub-network", "FLOPs (eqs. 7-9)"] == numbers["eqs. 7-9, one sub-network"]
    assert cost.at["landmark head (nose)", "parameters"] == numbers["nose landmark head"]
    assert cost.at["landmark head (full)", "parameters"] == numbers["68-point landmark head"]
    assert round(cost.at["ensemble", "storage (MiB)"], 2) == numbers["ensemble storage (MiB)"]
    assert round(numbers["paper fine-tuning lr x steps (290 x 30 x 1e-4)"]
                 / numbers["paper pre-training lr x steps (100 x 30 x 1e-2)"], 3) == \
        numbers["the paper's ratio of the two"]
    assert round(tables.conv_share(), 2) == numbers["conv share (%)"]


def test_the_data_table_counts_faces_in_whole_numbers(plan):
    shown = format_table(study.data_table(plan))
    lab = plan.lab.load()
    assert shown.at["lab: synth-lab", "classes"] == str(lab.n_classes)
    assert shown.at["lab: synth-lab", "train"] == f"{len(plan.lab_splits[0].train):,}"
    assert shown.at["mechanism: landmark pool", "test"] == MISSING
    assert shown.at["mechanism: labelled set", "train"] == MISSING


def test_the_training_curves_of_each_set(results):
    for protocol in ("lab", "wild"):
        histories = study.default_histories(results, protocol)
        assert set(histories) == {"Baseline", "FTL stage 2", "FTL stage 3", "EL stage 2",
                                  "EL stage 3"}
        n = results.settings.n_networks
        assert [len(histories[k]) for k in sorted(histories)] == [n, 5, 5, n, n]  # B, EL, FTL
    fig = study.wild_curves(results)
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()] == ["loss", "accuracy (%)"]
    plt.close(fig)
