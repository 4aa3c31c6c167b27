"""Chapter 5's study (Zhou et al.): Table 3 recomputed, the readings of a study's logits
checked on hand-made outputs, and a tiny study that resumes and refuses other settings."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fernb.studies import faml as study


def test_table3_reproduces_the_papers_t2v_row_and_decision() -> None:
    table = study.table3()
    # Zhou et al., Table 3: T2V row [8.7, 0, 0, 7.7, 0, 1, 0], decision AN (the true class).
    assert table.loc["T2V", "output"] == "8.7, 0, 0, 7.7, 0, 1, 0"
    assert table.loc["T2V", "first"] == "AN"
    # Networks 1-3 rank HA first, 4-6 AN (network 5: 0.798 > 0.753).
    assert list(table["first"].iloc[:6]) == ["HA", "HA", "HA", "AN", "AN", "AN"]
    assert list(table["second"].iloc[:6]) == ["AN", "AN", "AN", "HA", "HA", "SA"]


def test_table3_rules_split_on_the_tie_of_first_places() -> None:
    rules = study.table3_rules()
    # Three first places each for AN and HA: plurality ties, the lower index (AN) wins.
    assert rules.loc["T1V", "scores"] == "3, 0, 0, 3, 0, 0, 0"
    assert rules.loc["T2V", "decision"] == "AN"


def _results(logits: dict[tuple[int, str], np.ndarray], labels: np.ndarray) -> study.StudyResults:
    classes = ("a", "b", "c")
    return study.StudyResults(pd.DataFrame(), logits, labels, classes, {}, {},
                              study.Config(), Path("."), "toy")


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


def test_accuracies_match_hand_counts() -> None:
    acc = study.accuracies(_results({(0, "FAML"): Z}, LABELS)).iloc[0]
    # Network 1 predicts a, c, a, b (right on image 2), network 2 b, c, a, c (0, 2, 3),
    # network 3 b, a, a, c (all four): the mean of 1/4, 3/4 and 4/4.
    assert acc["Origin"] == pytest.approx(100 * (1 + 3 + 4) / 12)
    # T2V: b, c, a, c -> right on 0, 2, 3.
    assert acc["T2V"] == pytest.approx(75.0)
    # NOI is right on image 1 too, where two networks barely prefer c and one is sure of a.
    assert acc["NOI"] == pytest.approx(100.0)


def test_paired_test_counts_the_discordant_images() -> None:
    results = _results({(0, "FAML"): Z, (1, "FAML"): Z[:, ::-1].copy()}, LABELS)
    table = study.paired_rules(results)
    assert list(table["only NOI right"]) == [1, 1]
    assert list(table["only T2V right"]) == [0, 0]
    test = study.paired_test(results)
    assert (test.only_a, test.only_b, test.units, test.losses) == (0, 2, 2, 2)
    assert test.p_mcnemar == pytest.approx(stats.binomtest(0, 2).pvalue)
    assert test.p_ttest is None  # both ensembles differ by the same amount: no variation
    assert test.mean_difference == pytest.approx(-25.0)


def test_controls_are_left_out_of_the_rule_comparison() -> None:
    results = _results({(0, "FAML"): Z, (0, "R18+FA"): Z, (0, "R18 (scratch)"): Z}, LABELS)
    assert list(study.paired_rules(results)["basic network"]) == ["R18+FAML"]


def test_rank_distribution_of_the_label() -> None:
    results = _results({(0, "R18"): Z, (0, "FAML"): Z}, LABELS)
    table = study.rank_distribution(results)
    row = table.loc["R18 (toy)"]
    # Of 3 networks x 4 images, the label is ranked first 8 times (see the accuracies) and
    # second 4 times: by network 1 on images 0, 1 and 3, and by network 2 on image 1.
    assert row["rank 1"] == pytest.approx(100 * 8 / 12)
    assert row["rank 2"] == pytest.approx(100 * 4 / 12)
    assert row["top two"] == pytest.approx(100.0)
    assert row["errors ranked 2nd"] == pytest.approx(100.0)


def test_by_networks_averages_every_subset() -> None:
    table = study.by_networks(_results({(0, "FAML"): Z}, LABELS))
    assert list(table.columns) == [2, 3]
    assert table.loc["FAML-T2V", 3] == pytest.approx(75.0)


def test_sweep_turns_t2v_into_t1v_at_ratio_zero() -> None:
    table = study.sweep(_results({(0, "FAML"): Z}, LABELS))
    assert table.loc[0.0, "agree_t1v"] == pytest.approx(100.0)
    assert table.loc[0.0, "accuracy"] == pytest.approx(table.loc[0.0, "T1V"])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[study.Splits, study.Splits,
                                                           study.Config, Path]:
    config = study.Config(width=0.0625, pretrain_epochs=1, n_networks=2, replicates=1,
                          ablation_replicates=1, fa_networks=1, max_epochs1=1, epochs2=1,
                          step_size=1, batch_size=32, device="cpu")
    data, lab = study.load_data("synth-wild", "", config, n_subjects=8, image_size=48,
                                pretrain_subjects=8)
    out = tmp_path_factory.mktemp("faml")
    return data, lab, config, out


def test_tiny_study_trains_every_model_and_resumes(tiny) -> None:
    data, lab, config, out = tiny
    first = study.run_study(data, lab, config, out)
    assert set(first.models()) == {"R18", "R18 (scratch)", "R18+FA", "FAML", "FAML-FGA"}
    assert first.logits[(0, "FAML")].shape == (len(data.test), 2, len(data.classes))
    # The R18 pre-training, R18 2, R18 (scratch) 1, R18+FA 1, FAML 2 and FGA's first
    # generation (one fused child, one new network): each trained once and stored.
    assert first.trained == 1 + 2 + 1 + 1 + 2 + 2 == len(list(out.rglob("result.json")))
    again = study.run_study(data, lab, config, out)
    assert again.trained == 0
    for key, z in first.logits.items():
        np.testing.assert_array_equal(again.logits[key], z)


def test_tiny_study_refuses_a_folder_of_other_settings(tiny, tmp_path: Path) -> None:
    data, lab, config, _ = tiny
    (tmp_path / "config.json").write_text('{"width": 1.0}')
    with pytest.raises(ValueError, match="other settings"):
        study.run_study(data, lab, config, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # nothing trained
    assert (tmp_path / "config.json").read_text() == '{"width": 1.0}'
