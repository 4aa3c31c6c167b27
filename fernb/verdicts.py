"""Verdicts a reader can trust: a paper's claim *holds*, *does not hold* or is *not testable*
in a run, always with the reason in words computed from the run.

A comparison is only as good as its weakest model and its units. Before a claim is judged,
its preconditions are checked (:class:`Check`): every model it compares learned
(:func:`learned`: accuracy above the majority-class rate by a one-sided binomial test), the
method's own preconditions, which the chapter declares (:func:`condition`), and enough
independent units (:func:`enough_units`). A failed precondition makes the claim *not
testable* and says which. Otherwise a difference counts only through a test on independent
units (:mod:`fernb.evaluate`: a paired t-test over seeds or folds, an exact McNemar test, a
test clustered by image, a rank correlation): "A beats B" holds when the test finds a
significant difference in that direction, and does not hold otherwise, with the test's
estimate, interval and p-value as the reason. The sign of one run is never a verdict.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from fernb.evaluate import ArrayLike, TestResult, format_p, to_predictions

HOLDS, FAILS, UNTESTABLE = "holds", "does not hold", "not testable"
VERDICTS = (HOLDS, FAILS, UNTESTABLE)
EXPECTATIONS = ("greater", "less", "differ", "same")
ALPHA = 0.05


@dataclass(frozen=True)
class Check:
    """A precondition of a claim: whether it holds, and in words what it found."""

    ok: bool
    reason: str


def condition(ok: bool, failed: str, held: str = "") -> Check:
    """A method's own precondition (e.g. Gan's own-class rule of D): ``failed`` says what is
    wrong when ``ok`` is false."""
    return Check(bool(ok), held if ok else failed)


def enough_units(n: int, needed: int, unit: str) -> Check:
    """At least ``needed`` independent units (seeds, folds, images, points) for a test."""
    return condition(n >= needed, f"only {n} {unit}, a test needs at least {needed}",
                     f"{n} {unit}")


@dataclass(frozen=True)
class Learning(Check):
    """Whether one model learned: its accuracy on the evaluation split against the majority
    class's rate there, by a one-sided binomial test."""

    model: str = ""
    accuracy: float = float("nan")
    n: int = 0
    majority: float = float("nan")
    chance: float = float("nan")
    p: float = float("nan")
    classes_predicted: int = 0
    n_classes: int = 0


def learned(model: str, outputs: ArrayLike, labels: ArrayLike, *, n_classes: int,
            rule: str | None = None, alpha: float = ALPHA) -> Learning:
    """Did ``model`` learn? Its accuracy on the evaluation split must exceed the rate of that
    split's most frequent class by a one-sided binomial test at ``alpha``.

    Args:
        outputs: (N, M, C) logits, (N, C) scores or (N,) predicted classes.
        labels: (N,) true classes of the evaluation split.
        n_classes: the number of classes (chance is 1 / n_classes).
        rule: the decision rule for ensembles (see :func:`fernb.evaluate.to_predictions`).
    """
    y = np.asarray(labels).reshape(-1).astype(int)
    pred = to_predictions(outputs, rule)
    if len(pred) != len(y) or not len(y):
        raise ValueError(f"{model}: {len(pred)} predictions for {len(y)} labels")
    n = len(y)
    correct = int((pred == y).sum())
    majority = float(np.bincount(y, minlength=n_classes).max() / n)
    p = float(stats.binomtest(correct, n, majority, alternative="greater").pvalue) \
        if majority < 1 else 1.0
    ok = p < alpha
    acc = correct / n
    predicted = len(np.unique(pred))
    reason = (f"{model} learned: {acc:.1%} on {n} images, above the majority class's "
              f"{majority:.1%} (one-sided binomial p = {format_p(p)})" if ok else
              f"{model} did not learn: {acc:.1%} on {n} images is not above the majority "
              f"class's {majority:.1%} (one-sided binomial p = {format_p(p)})")
    return Learning(ok, reason, model, acc, n, majority, 1 / n_classes, p, predicted,
                    n_classes)


def learning_table(checks: Sequence[Learning]) -> pd.DataFrame:
    """One row per model: evaluation accuracy, chance and majority-class rates (%), the
    binomial p-value, the classes it ever predicts and whether it learned."""
    return pd.DataFrame([{
        "model": c.model, "images": c.n, "accuracy (%)": 100 * c.accuracy,
        "chance (%)": 100 * c.chance, "majority class (%)": 100 * c.majority,
        "p (above majority)": c.p, "classes predicted": f"{c.classes_predicted} of {c.n_classes}",
        "learned": "yes" if c.ok else "no"} for c in checks]).set_index("model")


@dataclass(frozen=True)
class Claim:
    """A paper's claim judged on a run: ``verdict`` is one of :data:`VERDICTS`, ``reason``
    the numbers (or the failed precondition) that decide it, ``value`` the number a
    paper-vs-book table shows for it (an estimate, a p-value...)."""

    claim: str
    source: str
    verdict: str
    reason: str
    value: float | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


def _untestable(claim: str, source: str, requires: Sequence[Check]) -> Claim | None:
    failed = [c.reason for c in requires if not c.ok]
    if failed:
        return Claim(claim, source, UNTESTABLE, "; ".join(failed))
    return None


def judge(claim: str, source: str, result: TestResult | None, *, expect: str,
          requires: Sequence[Check] = (), alpha: float = ALPHA, scale: float = 1.0,
          what: str = "") -> Claim:
    """Judge a claimed difference by a test on independent units.

    Args:
        result: the test (None: not testable, e.g. too few units to run one).
        expect: ``"greater"`` (a beats b), ``"less"``, ``"differ"`` or ``"same"`` (no
            significant difference, e.g. ESR-4 Lvl. 3 and the traditional ensemble).
        requires: preconditions; any that failed makes the claim not testable.
        scale, what: how the reason shows the estimate (e.g. 100, ``"points"``).
    """
    if expect not in EXPECTATIONS:
        raise ValueError(f"expect must be one of {EXPECTATIONS}, got {expect!r}")
    untestable = _untestable(claim, source, requires)
    if untestable is not None:
        return untestable
    if result is None:
        return Claim(claim, source, UNTESTABLE, "no test on independent units was possible")
    significant = result.significant(alpha)
    if expect == "greater":
        holds = significant and result.estimate > 0
    elif expect == "less":
        holds = significant and result.estimate < 0
    elif expect == "differ":
        holds = significant
    else:
        holds = not significant
    return Claim(claim, source, HOLDS if holds else FAILS, result.describe(scale, what),
                 result.estimate if expect != "same" else result.p)


def judge_fact(claim: str, source: str, ok: bool, reason: str, *,
               requires: Sequence[Check] = (), value: float | None = None) -> Claim:
    """A claim decided without a statistical test: arithmetic, an architecture fact, or a
    property of one computed object (e.g. "D keeps the own-class rule"); its preconditions
    still apply."""
    untestable = _untestable(claim, source, requires)
    if untestable is not None:
        return untestable
    return Claim(claim, source, HOLDS if ok else FAILS, reason, value)


def claims_table(claims: Sequence[Claim]) -> pd.DataFrame:
    """The reader's claims table: claim, where the paper makes it, the verdict and why."""
    return pd.DataFrame([{"claim": c.claim, "where": c.source, "verdict": c.verdict,
                          "why": c.reason} for c in claims]).set_index("claim")
