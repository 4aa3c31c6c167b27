"""Chapter 5's study (Zhou et al.): Table 3 recomputed, the plan's jobs and units, the tables
and tests read on hand-made outputs, and a toy study that trains, reuses and retrains only
what a changed parameter touches."""
from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import replace
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fernb.course import schedule
from fernb.data.datasets import FaceDataset
from fernb.device import computed_precision
from fernb.params import ParameterError
from fernb.store import Store
from fernb.studies import faml as study
from fernb.studies.faml import jobs as J
from fernb.studies.faml import mechanism as M
from fernb.studies.faml import protocol as P
from fernb.studies.faml import saliency as S
from fernb.studies.faml import tables as T
from fernb.studies.faml import voting as V
from fernb.verdicts import HOLDS, UNTESTABLE

C = importlib.import_module("fernb.studies.faml.claims")  # the package's claims() shadows it
ROOT = Path(__file__).resolve().parent.parent
TOY = dict(n_subjects=8, width=0.0625, backbones=[], pretrain_subjects=8, pretrain_epochs=1,
           n_networks=2, max_epochs1=2, stable_window=2, epochs2=1, mechanism_subjects=4,
           mechanism_test_subjects=4, mechanism_networks=2, mechanism_epochs=1, device="cpu")


# ----------------------------------------------------------------------------- Table 3

def test_table3_reproduces_the_papers_t2v_row_to_the_digit() -> None:
    table = study.table3(study.Settings())
    # Zhou et al., Table 3: T2V row [8.7, 0, 0, 7.7, 0, 1, 0], decision AN (the true class).
    assert table.loc["T2V", list(study.TABLE3_CLASSES)].tolist() == [8.7, 0, 0, 7.7, 0, 1, 0]
    assert table.loc["T2V", "first"] == "AN"
    # Networks 1-3 rank HA first, 4-6 AN (network 5: 0.798 > 0.753).
    assert list(table["first"].iloc[:6]) == ["HA", "HA", "HA", "AN", "AN", "AN"]
    assert list(table["second"].iloc[:6]) == ["AN", "AN", "AN", "HA", "HA", "SA"]
    assert table.loc["S_N 3", "HA"] == 1.715  # the outputs are the paper's


def test_table3_rules_split_on_the_tie_of_first_places() -> None:
    rules = study.table3_rules(study.Settings())
    # Three first places each for AN and HA: T1V ties, the lower index (AN) wins; NOI picks
    # HA, whose networks are more confident.
    assert rules.loc["T1V", list(study.TABLE3_CLASSES)].tolist() == [3, 0, 0, 3, 0, 0, 0]
    assert rules["decision"].to_dict() == {"T2V": "AN", "T1V": "AN", "NOI": "HA"}


# ----------------------------------------------------------------------------- settings

def test_t2v_weights_have_one_home() -> None:
    """alpha and beta are declared once, in the settings; no function of the study has its
    own default for them."""
    assert study.Settings().alpha == 1.9 and study.Settings().beta == 1.0
    for module in (J, P, T, V, M, S, C):
        for _, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ != module.__name__:
                continue
            for name in ("alpha", "beta"):
                assert name not in inspect.signature(fn).parameters, (fn.__name__, name)


@pytest.mark.parametrize("values,message", [
    ({"step_size": 5, "epochs2": 1}, "would never step"),
    ({"stable_window": 6, "max_epochs1": 5}, "never end on stability"),
    ({"mechanism_intensity": [0.7, 0.3]}, "low <= high"),
])
def test_settings_refuse_schedules_that_cannot_work(values, message) -> None:
    with pytest.raises(ParameterError, match=message):
        study.Settings.from_values(values)


def test_cpu_defaults_train_a_second_backbone_and_test_1000_mechanism_faces() -> None:
    settings = study.Settings()
    assert settings.backbones == ["ResNet34"]
    assert study.describe(settings)["mech_test_faces"] >= 1000


# ----------------------------------------------------------------------------- the plan

@pytest.fixture(scope="module")
def toy_plan() -> P.Plan:
    return study.plan(study.Settings.from_values({**TOY, "replicates": 2,
                                                  "backbones": ["ResNet34"]}))


def test_every_table2_row_comes_from_the_same_replicates(toy_plan) -> None:
    models = toy_plan.models(P.DEFAULT)
    assert models == ["R18", "R18+FA", "FAML", "ResNet34", P.FGA, P.CONTROL]
    for model in models:
        assert [r for g, m, r in toy_plan.networks if g == P.DEFAULT and m == model] == [0, 1]
        assert all(len(toy_plan.networks[(P.DEFAULT, model, r)]) == 2 for r in (0, 1))


def test_no_two_networks_share_a_seed_except_matched_pairs(toy_plan) -> None:
    seeds: dict[int, list[tuple]] = {}
    for (regime, model, r), jobs in toy_plan.networks.items():
        for k, job in enumerate(jobs):
            seeds.setdefault(job.spec["seed"], []).append((regime, model, r, k))
    for owners in seeds.values():
        if len(owners) == 1:
            continue
        # The only shared seeds: a fused child and its control, a CE and its LSR member.
        assert len(owners) == 2, owners
        kinds = {o[1] for o in owners}
        assert kinds in ({P.FGA, P.CONTROL}, {P.CE, P.LSR}), owners
        assert len({(o[0], o[2], o[3]) for o in owners}) == 1, owners
    r18 = toy_plan.networks[(P.DEFAULT, "R18", 0)][0].spec
    faml = toy_plan.networks[(P.DEFAULT, "FAML", 0)][0].spec
    assert r18["seed"] != faml["seed"]
    fa = toy_plan.networks[(P.DEFAULT, "R18+FA", 0)][0].spec
    assert fa["start_seed"] == faml["start_seed"]  # R18+FA and FAML differ by the loss only
    assert fa["loss"].p_lsr == 0 and faml["loss"].p_lsr == 0.8


def test_fga_children_and_controls_differ_by_the_fusion_only(toy_plan) -> None:
    for r in (0, 1):
        parents = toy_plan.networks[(P.DEFAULT, "FAML", r)]
        for child, control in zip(toy_plan.networks[(P.DEFAULT, P.FGA, r)],
                                  toy_plan.networks[(P.DEFAULT, P.CONTROL, r)]):
            assert child.needs == control.needs == tuple(parents)
            a, b = dict(child.spec), dict(control.spec)
            assert a.pop("fused") and not b.pop("fused")
            assert a == b


def test_mechanism_members_differ_by_their_loss_only(toy_plan) -> None:
    ce = toy_plan.networks[(P.MECHANISM, P.CE, 0)]
    lsr = toy_plan.networks[(P.MECHANISM, P.LSR, 0)]
    halves = set()
    for a, b in zip(ce, lsr):
        spec_a, spec_b = dict(a.spec), dict(b.spec)
        assert spec_a.pop("loss").p_lsr == 0 and spec_b.pop("loss").p_lsr == 1
        assert spec_a == spec_b
        halves.add(a.spec["faces"].half)
    assert len(halves) == len(ce)  # every member has its own half


def test_the_device_is_a_runtime_not_part_of_any_key(toy_plan) -> None:
    """A network trained on one device is reused on another where the precision it runs in
    is the same: the device travels in the job's runtime, the resolved precision in its
    spec."""
    settings = toy_plan.settings
    for job in toy_plan.jobs():
        assert job.runtime == {"device": settings.device}
        assert "device" not in job.spec and "device" not in repr(job.spec)
    elsewhere = replace(settings, device="auto")
    if computed_precision(elsewhere.precision, "auto") != computed_precision(
            settings.precision, settings.device):
        pytest.skip("this machine's default device runs in another precision")
    assert [j.key for j in study.plan(elsewhere).jobs()] == [j.key for j in toy_plan.jobs()]


def test_changed_parameters_change_only_the_keys_they_touch(toy_plan) -> None:
    settings = toy_plan.settings
    keys = {j.key for j in toy_plan.jobs()}
    assert {j.key for j in study.plan(replace(settings, alpha=1.0, beta=0.5)).jobs()} == keys
    lsr = {j.key for j in toy_plan.networks[(P.MECHANISM, P.LSR, 0)]}
    changed = {j.key for j in study.plan(replace(settings, mechanism_epsilon=0.1)).jobs()}
    assert keys - changed == lsr
    mechanism = {j.key for (g, _, _), jobs in toy_plan.networks.items() if g == P.MECHANISM
                 for j in jobs}
    other = {j.key for j in study.plan(replace(settings, n_subjects=10)).jobs()}
    assert mechanism | {j.key for j in toy_plan.pretrain.values()} <= other


def test_one_face_per_sequence_keeps_a_peak_frame_and_a_neutral_face() -> None:
    from fernb.data.datasets import chapter_dataset
    data = chapter_dataset("synth-lab", size=48, n_subjects=3, seed=0)
    keep = J.one_face_per_sequence(data)
    for subject in range(3):
        rows = data.subjects == subject
        sequences = np.unique(data.meta["sequence"][rows])
        kept = keep & rows
        # one peak frame per sequence, and one neutral (first) frame per subject
        assert kept.sum() == len(sequences) + 1
        assert (data.labels[kept] == data.classes.index("neutral")).sum() == 1
    assert len(np.unique(data.meta["sequence"][keep & (data.labels != 0)])) == \
        (keep & (data.labels != 0)).sum()


# ----------------------------------------------------------------------------- hand-made

# Three networks (axis 1), three classes, four images; labels b, a, a, c.
Z = np.array([
    # image 0: firsts a, b, b; seconds b, a, a -> T2V a: 1.9 + 2 = 3.9, b: 3.8 + 1 = 4.8 -> b;
    # softmax sums: a 0.705 + 2 x 0.259 = 1.22, b 0.259 + 2 x 0.705 = 1.67 -> b
    [[3.0, 2.0, 0.0], [2.0, 3.0, 0.0], [2.0, 3.0, 0.0]],
    # image 1: firsts c, c, a; seconds a, a, c -> T2V c: 3.8 + 1 = 4.8, a: 1.9 + 2 = 3.9 -> c;
    # softmax sums: a 2 x 0.404 + 0.9995 = 1.81, c 2 x 0.447 + 0.0003 = 0.89 -> a
    [[1.0, 0.0, 1.1], [1.0, 0.0, 1.1], [9.0, 0.0, 1.0]],
    # image 2: all three rank a first -> every rule a
    [[5.0, 0.0, 0.0], [5.0, 0.0, 0.0], [5.0, 0.0, 0.0]],
    # image 3: firsts b, c, c; seconds c, b, b -> T2V c: 3.8 + 1 = 4.8 -> c
    [[0.0, 2.0, 1.0], [0.0, 1.0, 2.0], [0.0, 1.0, 2.0]],
])
LABELS = np.array([1, 0, 0, 2])
CLASSES = ("a", "b", "c")


def _regime(name: str, logits: dict, counts=(5, 3, 1)) -> P.Regime:
    test = FaceDataset(np.zeros((4, 8, 8), np.uint8), LABELS, np.arange(4), CLASSES, "toy")
    rows = [{"model": m, "replicate": r, "network": k + 1, "training_loss": 1.0,
             "main_parent": k} for (m, r), z in logits.items() for k in range(z.shape[1])]
    return P.Regime(name, CLASSES, LABELS, logits, {}, pd.DataFrame(rows), test,
                    np.array(counts))


def _results(**regimes) -> P.Results:
    default = {(m, 0): Z for m in ("R18", "R18+FA", "FAML", P.FGA, P.CONTROL)}
    mechanism = {(P.CE, 0): Z, (P.LSR, 0): Z / 10}
    return P.Results(regimes.get("default", _regime("default", default)),
                     regimes.get("mechanism", _regime("mechanism", mechanism)), {},
                     P.Plan(study.Settings.from_values({"backbones": []})), None)


def test_ablation_rows_match_hand_counts() -> None:
    table = study.ablation(_results())
    # Network 1 predicts a, c, a, b (right on image 2), network 2 b, c, a, c (0, 2, 3),
    # network 3 b, a, a, c (all four): the mean of 25, 75 and 100 %, over 3 networks.
    assert table.loc["FAML", "accuracy (%)"] == pytest.approx(100 * 8 / 12)
    assert table.loc["FAML", "sd (points)"] == pytest.approx(np.std([25, 75, 100], ddof=1))
    assert table.loc["FAML", "units"] == 3 and table.loc["FAML", "unit"] == "networks"
    # T2V: b, c, a, c -> right on 0, 2, 3; one ensemble.
    assert table.loc["FAML-T2V", "accuracy (%)"] == pytest.approx(75.0)
    assert table.loc["FAML-T2V", "units"] == 1


def test_ablation_tests_use_seeds_for_networks_and_images_for_ensembles() -> None:
    tests = study.ablation_tests(_results())
    assert (tests["fa"].unit, tests["fa"].n, tests["fa"].p) == ("seeds", 3, 1.0)
    assert tests["fga_control"].unit == "child-control pairs"
    t2v = tests["t2v"]
    assert (t2v.unit, t2v.n) == ("images", 4)
    # Per image: T2V right (1, 0, 1, 1) minus the share of networks right (2/3, 1/3, 1, 2/3).
    assert t2v.estimate == pytest.approx(np.mean([1 / 3, -1 / 3, 0, 1 / 3]))


def test_rule_comparisons_are_clustered_by_image_not_pooled() -> None:
    results = _results()
    test = V.pooled_rule_test(results, "NOI")
    # Five basic-network-like ensembles of the same networks on 4 images: 4 units, not 20.
    assert test.n == 4
    # NOI is right on every image, T2V misses image 1.
    assert test.estimate == pytest.approx(-0.25)
    t6 = study.table6(results)
    assert t6.loc["R18+FAML", "NOI"] == pytest.approx(100.0)
    assert t6.loc["R18+FAML", "T2V − NOI"] == pytest.approx(-25.0)


def test_ties_table_hand_computed() -> None:
    two = Z[:, :2].copy()  # two networks: T1V ties on images 0 (a, b) and 3 (b, c)
    default = _regime("default", {(m, 0): two for m in ("R18", "FAML", P.FGA, P.CONTROL,
                                                        "R18+FA")})
    table = study.ties(_results(default=default))
    row = table.loc["R18"]
    assert row["T1V ties (% of images)"] == pytest.approx(50.0)
    # Lowest index: image 0 -> a (label b), image 1 -> c (a), image 2 -> a (a), image 3 -> b
    # (c): 1 of 4. At random: 1/2 + 0 + 1 + 1/2 over 4.
    assert row["T1V, ties to the lowest index (%)"] == pytest.approx(25.0)
    assert row["T1V, ties at random (%)"] == pytest.approx(50.0)
    assert row["tie rule moves T1V (points)"] == pytest.approx(-25.0)
    # Both tied images go to a or b, the two most frequent training classes (5, 3, 1).
    assert row["tied images to the 2 most frequent classes (%)"] == pytest.approx(100.0)
    assert table.attrs["frequent"] == ["a", "b"]


def test_rank_distribution_of_the_label() -> None:
    table = study.rank_distribution(_results())
    row = table.loc["R18 (toy)"]
    # Of 3 networks x 4 images, the label is ranked first 8 times and second 4 times: by
    # network 1 on images 0, 1 and 3, and by network 2 on image 1.
    assert row["rank 1"] == pytest.approx(100 * 8 / 12)
    assert row["rank 2"] == pytest.approx(100 * 4 / 12)
    assert row["errors ranked 2nd"] == pytest.approx(100.0)
    assert row["uniform"] == pytest.approx(50.0)


def test_mechanism_tests_compare_the_leads_per_image() -> None:
    results = _results()
    tests = study.mechanism_tests(results)
    assert all(t.n == 4 and t.unit == "images" for t in tests.values())
    # Rank-based rules ignore the scale of the logits: same T2V and T1V for CE and LSR.
    table = study.mechanism_table(results)
    assert table.loc["CE", "T2V"] == table.loc["LSR", "T2V"] == pytest.approx(75.0)
    assert table.loc["CE", "confidence"] > table.loc["LSR", "confidence"]
    # NOI is right on every image with the confident members (see Z); with the logits
    # divided by 10 it is not on image 1 (a 0.35 + ... < c): the lead of T2V over NOI
    # differs by image 1 only.
    lead = tests["mechanism"]
    noi_lsr = T.correct(Z / 10, LABELS, T.rules(study.Settings())["NOI"])
    assert lead.estimate == pytest.approx(np.mean(noi_lsr) - 1.0)


def test_claims_on_models_that_did_not_learn_are_not_testable() -> None:
    results = _results()
    # The weakest network is right on 1 of 4 images, the majority class (a) has 2.
    assert not all(c.ok for c in study.learning_checks(results.default))
    found = {c.claim: c for c in study.claims(results)}
    assert found["Table 3's image: T2V decides Anger"].verdict == HOLDS
    for claim in ("facial-area fusion with attention (FA) improves R18",
                  "T2V beats NOI on the basic networks",
                  "with over-confident members T2V beats NOI"):
        assert found[claim].verdict == UNTESTABLE
        assert "did not learn" in found[claim].reason


def test_a_rank_correlation_of_four_basic_networks_is_not_testable() -> None:
    t6 = pd.DataFrame({"Origin": [40.0, 41.0, 42.0, 43.0], "T2V gain": [3.0, 2.0, 1.0, 0.0]})
    claim = C.gain_claim(t6, [])
    assert claim.verdict == UNTESTABLE and "only 4 basic networks" in claim.reason
    five = pd.DataFrame({"Origin": [40.0, 41, 42, 43, 44], "T2V gain": [4.0, 3, 2, 1, 0]})
    assert C.gain_claim(five, []).verdict == HOLDS  # rho = -1 on five points, p < 0.05
    assert stats.spearmanr(five["Origin"], five["T2V gain"]).pvalue < 0.05


# ----------------------------------------------------------------------------- toy study

@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[P.Results, Store]:
    store = Store(tmp_path_factory.mktemp("store"))
    return study.run(study.Settings.from_values(TOY), store), store


def test_toy_study_trains_every_network_and_reuses_them(toy, capsys) -> None:
    results, store = toy
    d = results.default
    assert d.models() == ["R18", "R18+FA", "FAML", P.FGA, P.CONTROL]
    assert d.logits[("FAML", 0)].shape == (len(d.labels), 2, len(d.classes))
    assert results.mechanism.logits[(P.CE, 0)].shape[1] == 2
    assert len(results.mechanism.labels) == 4 * 8  # one face per sequence, 8 per subject
    again = study.run(results.settings, store)
    assert "trained 0" in capsys.readouterr().out
    for key, z in d.logits.items():
        np.testing.assert_array_equal(again.default.logits[key], z)
    # Another epsilon for the calibrated members retrains those members only.
    pending = store.pending(study.plan(replace(results.settings,
                                               mechanism_epsilon=0.2)).jobs())
    assert {j.label for j in pending} == {f"LSR member {k}" for k in (1, 2)}
    rows = d.networks[d.networks["model"] == P.FGA]
    assert all(len(p) == 2 for p in rows["parents"])


def test_toy_highlights_give_every_glued_name_of_the_chapter(toy) -> None:
    results, _ = toy
    evidence = study.evidence(results, n_images=4)
    claimed = study.claims(results, evidence)
    glued = (set(study.highlights(results, claimed, evidence))
             | set(study.describe(results.settings)) | set(study.elapsed(0.0))
             | set(schedule.highlights("05_faml_t2v")))
    nb = nbformat.read(ROOT / "notebooks" / "05_faml_t2v.ipynb", as_version=4)
    cited = {m for c in nb.cells if c.cell_type == "markdown"
             for m in re.findall(r"\{glue:text\}`([^`]+)`", c.source)}
    assert cited <= glued, sorted(cited - glued)
    keys = set(study.measured(results, claimed))
    assert {"table3_t2v_output", "fa_gain", "t2v_noi_p", "rules_faml"} <= keys
