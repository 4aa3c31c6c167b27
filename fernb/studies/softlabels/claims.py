"""Chapter 4's claims, judged with :mod:`fernb.verdicts`, and this run's values for the
paper-vs-book table.

A claim comparing ensembles is tested image by image (:func:`fernb.evaluate.clustered_test`:
every ensemble of the book is tested on the same faces, so the image is the independent
unit), and only after its preconditions: every compared model learned (above the majority
class) and predicts at least half of the classes, the D it rests on keeps Sec. 3.2's
own-class rule, and there are enough test images (and members, for diversity). A failed precondition makes the claim *not testable*, with the
reason.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fernb.evaluate import clustered_test
from fernb.softlabels import TABLE_1_CLASSES, restrict_soft_labels
from fernb.studies.softlabels.results import Regime, Results, SoftLabels
from fernb.studies.softlabels.tables import OBSERVATIONS, confusion, order_kept
from fernb.verdicts import Check, Claim, Learning, condition, enough_units, judge, judge_fact

MIN_IMAGES = 30
PAPER = "Tables 2, 4, 6"


# ----------------------------------------------------------------------- preconditions

def _learned(regime: Regime, *groups: str) -> Check:
    failed = [c for g in groups for c in regime.learning(g) if not c.ok]
    n = sum(len(regime.learning(g)) for g in groups)
    return condition(not failed, f"{len(failed)} of {n} compared models did not learn, e.g. "
                     f"{failed[0].reason}" if failed else "",
                     f"all {n} compared models learned")


def predicts_enough(checks: Sequence[Learning]) -> Check:
    """The chapter's reading of "a model that predicts only a few classes": every compared
    model must predict at least half of the classes on the test split, or the comparison
    says little about soft labels, whose point is the classes next to the true one."""
    few = [c for c in checks if c.classes_predicted < math.ceil(c.n_classes / 2)]
    return condition(not few, f"{len(few)} of {len(checks)} compared models predict fewer than "
                     f"half of the classes, e.g. {few[0].model} predicts "
                     f"{few[0].classes_predicted} of {few[0].n_classes}" if few else "",
                     f"all {len(checks)} compared models predict at least half of the classes")


def violations_text(d: SoftLabels) -> str:
    """Which rows of D peak on another class, in words."""
    return ", ".join(f"{d.classes[v.row]} peaks on {d.classes[v.argmax]}" for v in d.violations)


def d_rule(d: SoftLabels) -> Check:
    """Sec. 3.2's precondition: every row of D peaks on its own class."""
    n = len(d.violations)
    return condition(d.valid, f"the {d.title} breaks Sec. 3.2's own-class rule in {n} of "
                     f"{len(d.classes)} rows ({violations_text(d)})",
                     f"the {d.title}: every row peaks on its own class")


def _valid(regime: Regime, *groups: str) -> list[Check]:
    names = dict.fromkeys(regime.groups[g].d for g in groups if regime.groups[g].d)
    return [d_rule(regime.soft_labels[n]) for n in names]


def _members(regime: Regime, group: str) -> Check:
    m = len(regime.groups[group].gammas)
    return condition(m >= 2, f"an ensemble of {m} member has no pairs to disagree")


def _images(regime: Regime) -> Check:
    return enough_units(len(regime.test_labels), MIN_IMAGES, "test images")


def _requires(regime: Regime, *groups: str) -> list[Check]:
    checks = [c for g in groups for c in regime.learning(g)]
    return [_learned(regime, *groups), predicts_enough(checks), *_valid(regime, *groups),
            _images(regime)]


# ----------------------------------------------------------------------- tests

def _scores(regime: Regime, group: str, what: str) -> np.ndarray | None:
    return getattr(regime.scores(group), what)


def _compare(regime: Regime, a: tuple[str, str], b: tuple[str, str]):
    sa, sb = _scores(regime, *a), _scores(regime, *b)
    if sa is None or sb is None:
        return None
    return clustered_test(sa, sb)


def _judge(claim: str, source: str, regime: Regime, a: tuple[str, str], b: tuple[str, str],
           expect: str, requires: Sequence[Check], what: str = "points") -> Claim:
    scale = 100 if what == "points" else 1
    return judge(claim, source, _compare(regime, a, b), expect=expect, requires=requires,
                 scale=scale, what=what)


def d_label(regime: Regime) -> str:
    d = regime.soft_labels[regime.main]
    return f"D built on {d.built_on}"


def default_claims(results: Results) -> dict[str, Claim]:
    """The paper's claims on the default regime, by key."""
    r = results.default
    d = r.soft_labels[r.main]
    out = {"d_rule": judge_fact(f"every row of D peaks on its own class ({d_label(r)})",
                                "Sec. 3.2", d.valid, d_rule(d).reason if d.valid
                                else f"{len(d.violations)} of {len(d.classes)} rows do not: "
                                     f"{violations_text(d)}", value=len(d.violations))}
    if r.main != "dataset" and "dataset" in r.soft_labels:
        own = r.soft_labels["dataset"]
        out["dataset_d_rule"] = judge_fact(
            f"every row of the dataset's own D peaks on its own class (D built on "
            f"{own.built_on})", "Sec. 3.2", own.valid,
            "all rows do" if own.valid else f"{len(own.violations)} of {len(own.classes)} "
            f"rows do not: {violations_text(own)}", value=len(own.violations))
    grid = results.settings.gamma_grid
    out["order"] = judge_fact("eq. (4) keeps each row's order for every gamma of the grid",
                              "Sec. 3.2", order_kept(d.matrix, grid),
                              f"{len(grid)} gammas, {len(d.classes)} rows")
    out["soft_label_gain_single"] = _judge(
        f"soft labels beat hard labels: single networks at the fixed gamma "
        f"({results.sweep.fixed_gamma:g})", PAPER, r, ("fixed", "member_correct"),
        ("hard", "member_correct"), "greater", _requires(r, "fixed", "hard"))
    out["fixed_ensemble_gain"] = _judge(
        "an ensemble at a fixed gamma beats its single networks", PAPER, r,
        ("fixed", "correct"), ("fixed", "member_correct"), "greater",
        [*_requires(r, "fixed"), _members(r, "fixed")])
    out["perturbation_gain"] = _judge(
        "the gamma-perturbation ensemble beats the fixed-gamma ensemble of the same size",
        PAPER, r, ("perturbed", "correct"), ("fixed", "correct"), "greater",
        [*_requires(r, "perturbed", "fixed"), _members(r, "perturbed")])
    out["ensemble_gain_over_single"] = _judge(
        "the gamma-perturbation ensemble beats the single networks at the fixed gamma",
        PAPER, r, ("perturbed", "correct"), ("fixed", "member_correct"), "greater",
        _requires(r, "perturbed", "fixed"))
    out["ensemble_gain_over_hard"] = _judge(
        f"the gamma-perturbation ensemble ({d_label(r)}) beats the hard-label ensemble",
        PAPER + ", Sec. 4.2", r, ("perturbed", "correct"), ("hard", "correct"), "greater",
        _requires(r, "perturbed", "hard"))
    out["diversity"] = _judge(
        "perturbing gamma makes the members more diverse (same starts, only gamma differs)",
        "Sec. 3.4", r, ("perturbed", "disagreement"), ("fixed", "disagreement"), "greater",
        [*_requires(r, "perturbed", "fixed"), _members(r, "perturbed")], what="")
    if "other" in r.groups:
        other = r.soft_labels[r.groups["other"].d]
        out["other_gain_over_hard"] = _judge(
            f"an ensemble with the other D (built on {other.built_on}) beats hard labels",
            "Secs. 4.2, 4.5, 4.6", r, ("other", "correct"), ("hard", "correct"), "greater",
            _requires(r, "other", "hard"))
    cm = confusion(r)
    seen = [_learned(r, "perturbed"), predicts_enough(r.learning("perturbed"))]
    for true, named, where in OBSERVATIONS:
        if true not in cm.index or any(c not in cm.columns for c in named):
            continue
        row = cm.loc[true].drop(true)
        top = str(row.idxmax())
        out[f"remark_{true}"] = judge_fact(
            f"{true} is most often mistaken for {' or '.join(named)}", where, top in named,
            f"most often {top} ({row.max():.1f} % of {true} faces)", requires=seen)
    if "happiness" in cm.index:
        recall = cm.to_numpy().diagonal()
        best = cm.index[int(np.argmax(recall))]
        out["happiness"] = judge_fact(
            "happiness is the best-recognised class", "Sec. 4.6", best == "happiness",
            f"happiness {cm.loc['happiness', 'happiness']:.1f} %, best {best} "
            f"{recall.max():.1f} %", requires=seen)
    return out


def mechanism_claims(results: Results) -> dict[str, Claim]:
    """The paper's mechanism, and its control, on the mechanism regime, by key."""
    r = results.mechanism
    if r is None:
        return {}
    out = {}
    d = r.soft_labels[r.main]
    if r.main == "dataset":
        out["m_d_rule"] = judge_fact(f"every row of D peaks on its own class ({d_label(r)})",
                                     "Sec. 3.2", d.valid, d_rule(d).reason if d.valid
                                     else violations_text(d), value=len(d.violations))
    out["m_clean_gain"] = _judge(
        f"soft labels with gamma perturbation ({d_label(r)}) beat hard labels on the clean "
        f"label", "Secs. 1, 3.2", r, ("perturbed", "clean"), ("hard", "clean"), "greater",
        _requires(r, "perturbed", "hard"))
    out["m_nll"] = _judge(
        "soft labels with gamma perturbation describe each face's mixture better than hard "
        "labels (lower NLL)", "Secs. 1, 3.2", r, ("perturbed", "nll"), ("hard", "nll"),
        "less", _requires(r, "perturbed", "hard"), what="nats")
    out["m_perturbation_clean"] = _judge(
        "the gamma-perturbation ensemble beats the fixed-gamma ensemble on the clean label",
        PAPER, r, ("perturbed", "clean"), ("fixed", "clean"), "greater",
        [*_requires(r, "perturbed", "fixed"), _members(r, "perturbed")])
    out["m_oracle_clean"] = _judge(
        "control: with the true mixtures as D (oracle), soft labels beat hard labels on the "
        "clean label", "control", r, ("oracle", "clean"), ("hard", "clean"), "greater",
        _requires(r, "oracle", "hard"))
    out["m_oracle_nll"] = _judge(
        "control: with the oracle D, soft labels describe each face's mixture better than "
        "hard labels (lower NLL)", "control", r, ("oracle", "nll"), ("hard", "nll"), "less",
        _requires(r, "oracle", "hard"), what="nats")
    out["m_oracle_vs_d"] = _judge(
        f"control: the oracle D beats {d_label(r)} on the clean label (the constructor "
        f"misses structure)", "control", r, ("oracle", "clean"), ("perturbed", "clean"),
        "greater", _requires(r, "oracle", "perturbed"))
    return out


def all_claims(results: Results) -> dict[str, dict[str, Claim]]:
    """Every claim, by regime and key."""
    return {"default": default_claims(results), "mechanism": mechanism_claims(results)}


# ----------------------------------------------------------------------- paper vs this book

PAPER_KEYS = {"fer2013": "fer2013", "sfew": "sfew"}  # every other dataset fills RAF-DB's rows
CONFUSIONS = {"disgust_as_anger": ("disgust", "anger"), "anger_as_sadness": ("anger", "sadness"),
              "fear_as_sadness": ("fear", "sadness"), "fear_as_surprise": ("fear", "surprise"),
              "happiness_recall": ("happiness", "happiness")}


def measured(results: Results) -> dict[str, Any]:
    """This run's values for :func:`fernb.report.paper_vs_book` (``"soft_labels"``):
    numbers for the paper's values, judged claims for its comparisons."""
    r = results.default
    d = r.soft_labels[r.main]
    constructor = results.source if r.main == "source" else r.constructor
    key = PAPER_KEYS.get(results.settings.dataset, "raf")
    judged = default_claims(results)

    def pct(x: np.ndarray) -> float:
        return round(100 * float(x.mean()), 2)

    values: dict[str, Any] = {
        "constructor_val_accuracy": pct(constructor.val.argmax(1) == constructor.val_labels),
        "constructor_test_accuracy": pct(constructor.test.argmax(1) == constructor.test_labels),
        "table1_violations": len(d.violations),
        "perturbation_keeps_order": order_kept(d.matrix, results.settings.gamma_grid),
    }
    if set(TABLE_1_CLASSES) <= set(d.classes):
        values["table1_diagonal"] = [round(float(v), 4) for v in np.diag(
            restrict_soft_labels(d.matrix, d.classes, TABLE_1_CLASSES))]
    sc = {g: r.scores(g) for g in r.groups}
    values |= {f"{key}_ensemble_accuracy": pct(sc["perturbed"].correct),
               f"{key}_single_accuracy": pct(sc["fixed"].member_correct),
               f"{key}_fixed_gamma_ensemble_accuracy": pct(sc["fixed"].correct),
               f"{key}_hard_accuracy": [pct(sc["hard"].member_correct), pct(sc["hard"].correct)]}
    if results.sweep.fixed_gamma == 1.0:
        values[f"{key}_gamma1_accuracy"] = [pct(sc["fixed"].member_correct),
                                            pct(sc["fixed"].correct)]
    for name in ("perturbation_gain", "soft_label_gain_single", "ensemble_gain_over_single",
                 "ensemble_gain_over_hard"):
        values[name] = judged[name]
    if r.main == "source":
        values["transfer_gain_over_hard"] = judged["ensemble_gain_over_hard"]
    elif "other_gain_over_hard" in judged:
        values["transfer_gain_over_hard"] = judged["other_gain_over_hard"]
    cm = confusion(r)
    for name, (true, pred) in CONFUSIONS.items():
        if true in cm.index and pred in cm.columns:
            values[name] = round(float(cm.loc[true, pred]), 2)
    return values


def as_metrics(values: dict[str, Any]) -> dict[str, Any]:
    """:func:`measured`'s values for ``metrics.json``: a judged claim as its verdict."""
    return {k: v.verdict if isinstance(v, Claim) else v for k, v in values.items()}
