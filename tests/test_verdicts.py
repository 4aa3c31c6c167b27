"""Verdicts: preconditions make a claim not testable, differences count only through tests on
independent units, and every verdict says why."""
from __future__ import annotations

import numpy as np
import pytest

from fernb.evaluate import mcnemar, paired_ttest
from fernb.report import paper_vs_book
from fernb.verdicts import (FAILS, HOLDS, UNTESTABLE, Claim, claims_table, condition,
                            enough_units, judge, judge_fact, learned, learning_table)


def _labels(counts: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


def test_a_model_at_the_majority_rate_did_not_learn():
    labels = _labels([60, 20, 20])  # majority class: 60 %
    majority_only = np.zeros(100, dtype=int)
    check = learned("constant", majority_only, labels, n_classes=3)
    assert not check.ok and check.accuracy == pytest.approx(0.6)
    assert check.majority == pytest.approx(0.6) and check.chance == pytest.approx(1 / 3)
    assert check.classes_predicted == 1
    assert check.reason.startswith("constant did not learn: 60.0% on 100 images is not above "
                                   "the majority class's 60.0%")
    good = labels.copy()
    good[:15] = 1  # 85 % right
    check = learned("good", good, labels, n_classes=3)
    assert check.ok and check.p < 1e-6 and "good learned: 85.0%" in check.reason


def test_the_binomial_test_is_one_sided_against_the_majority_rate():
    half = np.r_[np.zeros(25, int), np.ones(25, int)]  # majority 50 %
    guess = half.copy()
    guess[:4] = 1  # 46 of 50 right: P(X >= 46 | 50, 1/2) = 2.23e-10
    assert learned("m", guess, half, n_classes=2).p == pytest.approx(2.2309e-10, rel=1e-3)
    worse = 1 - half  # 0 of 50 right: one-sided, so p = 1, not a two-sided "difference"
    assert learned("m", worse, half, n_classes=2).p == pytest.approx(1.0)
    single = np.zeros(50, int)  # one class only: nothing can beat a 100 % majority
    assert learned("m", single, single, n_classes=2).p == 1.0


def test_learning_table_shows_the_floor_next_to_each_model():
    labels = _labels([60, 20, 20])
    table = learning_table([learned("a", labels, labels, n_classes=3),
                            learned("b", np.zeros(100, int), labels, n_classes=3)])
    assert table.loc["a", "learned"] == "yes" and table.loc["b", "learned"] == "no"
    assert table.loc["b", "classes predicted"] == "1 of 3"
    assert table.loc["a", "majority class (%)"] == pytest.approx(60.0)


def test_a_failed_precondition_makes_the_claim_not_testable_with_its_reason():
    labels = _labels([60, 20, 20])
    stuck = learned("hard labels", np.zeros(100, int), labels, n_classes=3)
    test = paired_ttest([0.7, 0.8, 0.75], [0.6, 0.65, 0.62])
    claim = judge("soft beats hard", "Table 2", test, expect="greater",
                  requires=[stuck, condition(True, "never shown")])
    assert claim.verdict == UNTESTABLE and claim.reason == stuck.reason
    two = judge("x", "y", test, expect="greater",
                requires=[enough_units(2, 3, "seeds"), condition(False, "D breaks the rule")])
    assert two.reason == "only 2 seeds, a test needs at least 3; D breaks the rule"
    assert judge("x", "y", None, expect="greater").verdict == UNTESTABLE


def test_a_difference_counts_only_through_a_significant_test_in_its_direction():
    up = paired_ttest([0.80, 0.85, 0.90, 0.88], [0.70, 0.76, 0.79, 0.80], unit="seeds")
    assert up.p < 0.05
    claim = judge("a beats b", "Table 1", up, expect="greater", scale=100, what="points")
    assert claim.verdict == HOLDS and claim.reason.startswith("paired t-test over 4 seeds: +")
    assert judge("a worse", "T", up, expect="less").verdict == FAILS
    assert judge("differ", "T", up, expect="differ").verdict == HOLDS
    assert judge("no difference", "T", up, expect="same").verdict == FAILS
    noise = paired_ttest([0.80, 0.70, 0.90], [0.75, 0.78, 0.86])
    assert noise.estimate > 0 and noise.p > 0.05  # the same sign, and no evidence
    assert judge("a beats b", "T", noise, expect="greater").verdict == FAILS
    same = judge("no difference", "T", noise, expect="same")
    assert same.verdict == HOLDS and same.value == noise.p
    tie = mcnemar(np.ones(10, bool), np.ones(10, bool))
    assert judge("a beats b", "T", tie, expect="greater").verdict == FAILS


def test_facts_are_judged_without_a_test_but_with_their_preconditions():
    assert judge_fact("counts equal", "Table 1", True, "131,208 = 131,208").verdict == HOLDS
    assert judge_fact("rule kept", "Sec. 3", False, "row 3 peaks on 1").verdict == FAILS
    blocked = judge_fact("rule kept", "Sec. 3", True, "ok",
                         requires=[condition(False, "the constructor did not learn")])
    assert blocked.verdict == UNTESTABLE
    with pytest.raises(ValueError, match="verdict must be one of"):
        Claim("c", "s", "yes", "r")
    table = claims_table([blocked])
    assert table.loc["rule kept"].tolist() == ["Sec. 3", UNTESTABLE,
                                               "the constructor did not learn"]


def test_paper_vs_book_judges_comparisons_with_the_verdicts_and_keeps_exact_for_arithmetic():
    test = paired_ttest([0.9, 0.92, 0.91], [0.7, 0.69, 0.72], unit="trials")
    measured = {
        "single_params": 131208,
        "te_params": 1,
        "first_update_ratio": 2.0,  # a bare number: no test behind it
        "ttest_te_lvl3": judge("TE and Lvl. 3 do not differ", "Table 2", test, expect="same"),
    }
    table = paper_vs_book("esr", measured).reset_index().set_index("quantity")
    rows = {q: r for q, r in table.iterrows()}
    verdicts = {k: v["verdict"] for k, v in rows.items()}
    assert verdicts["Single network, trainable parameters"] == "exact"
    assert verdicts["Traditional ensemble of 4, trainable parameters"] == "differs"
    assert verdicts["ESR / TE accuracy after the first update of a new branch"] == UNTESTABLE
    judged = next(k for k, v in rows.items() if v["this run"].startswith("paired t-test"))
    assert verdicts[judged] == FAILS  # the paper found no difference; this run finds one
