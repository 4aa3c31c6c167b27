"""Chapter 1's claims, judged on the run (:mod:`fernb.verdicts`), this run's values for the
paper-vs-book table, and every number and sentence the chapter's prose cites
(:func:`highlights`).

The independent units: in the lab, the trials (each tests another fold, and its models are
trained apart from the other trials'); ESR-9 has one test set, so it is compared with its best
branch image by image (exact McNemar test) and with the training mean by a sign-flip test over
images. A claim whose compared models did not all learn (accuracy above the majority class,
:func:`fernb.verdicts.learned`), or that has too few trials, is *not testable*.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from fernb.complexity import count_parameters
from fernb.evaluate import TestResult, clustered_test, mcnemar, paired_ttest, to_predictions
from fernb.models.esr import ESR
from fernb.report import paper_vs_book
from fernb.store import Outcome
from fernb.studies.esr import tables
from fernb.studies.esr.protocol import Results
from fernb.verdicts import FAILS, HOLDS, UNTESTABLE, Check, Claim, Learning, condition, \
    enough_units, judge, judge_fact, learned

MIN_TRIALS = 3  # a paired t-test on fewer trials cannot reach p < 0.05 for a steady gain
TE = "Traditional ensemble"
SINGLE = "Single network"


# ----------------------------------------------------------------------- did every model learn

def learning_checks(results: Results) -> dict[str, Learning]:
    """Did each approach learn? Its plurality vote on the test folds of all trials together
    (disjoint faces) against the majority class; ESR-9 and its best branch on its test set."""
    lab, n = results.lab, results.data.n_classes
    checks = {}
    for label in tables.labels_of(lab):
        logits, labels = tables.pooled(lab, label)
        checks[label] = learned(label, logits, labels, n_classes=n, rule="plurality")
    wild = results.wild
    checks["ESR-9"] = learned("ESR-9", wild.logits, wild.labels, n_classes=len(wild.classes),
                              rule="plurality")
    b = tables.best_branch(wild)
    checks["ESR-9 best branch"] = learned(f"ESR-9 branch {b + 1} (its best)",
                                          wild.logits[:, b], wild.labels,
                                          n_classes=len(wild.classes))
    return checks


# ----------------------------------------------------------------------- the claims

def _in_grid(label: str, checks: Mapping[str, Learning]) -> Check:
    return condition(label in checks, f"{label} is not in this run's grid")


def _requires(checks: Mapping[str, Learning], labels: Sequence[str], n_trials: int
              ) -> list[Check]:
    found = [_in_grid(lb, checks) for lb in labels]
    found += [checks[lb] for lb in labels if lb in checks]
    return found + [enough_units(n_trials, MIN_TRIALS, "trials")]


def _ttest(a: pd.Series, b: pd.Series) -> TestResult | None:
    return paired_ttest(a.to_numpy(), b.to_numpy(), unit="trials") if len(a) >= 2 else None


def compare_approaches(results: Results, checks: Mapping[str, Learning], claim: str,
                       source: str, a: str, b: str, expect: str) -> Claim:
    """``a`` against ``b`` (study labels) by a paired t-test of their test accuracies over
    the trials."""
    requires = _requires(checks, [a, b], len(results.settings.trials))
    if not all(c.ok for c in requires):
        return judge(claim, source, None, expect=expect, requires=requires)
    lab = results.lab
    return judge(claim, source, _ttest(tables.trial_scores(lab, a), tables.trial_scores(lab, b)),
                 expect=expect, requires=requires, what="points")


def _all_of(claim: str, source: str, parts: Sequence[Claim], requires: Sequence[Check] = ()
            ) -> Claim:
    """A claim made of several tests: not testable if any is, holds if all hold."""
    if not parts:
        return judge(claim, source, None, expect="greater", requires=[
            *requires, condition(False, "no pair of runs in this run's grid to compare")])
    untestable = [p.reason for p in parts if p.verdict == UNTESTABLE]
    if untestable:
        return Claim(claim, source, UNTESTABLE, "; ".join(dict.fromkeys(untestable)))
    verdict = HOLDS if all(p.verdict == HOLDS for p in parts) else FAILS
    return Claim(claim, source, verdict, "; ".join(f"{p.claim}: {p.reason}" for p in parts))


def table2_claims(results: Results, checks: Mapping[str, Learning]) -> dict[str, Claim]:
    """Table 2's six comparisons (paper: the ensembles beat the single network, p < 0.05;
    the ensembles do not differ)."""
    s = results.settings
    lv3, lv4 = (f"ESR-4 Lvl. {lv} ({s.strategy})" for lv in (3, 4))
    pairs = {"ttest_single_te": (TE, SINGLE, "greater"),
             "ttest_single_lvl3": (lv3, SINGLE, "greater"),
             "ttest_single_lvl4": (lv4, SINGLE, "greater"),
             "ttest_te_lvl3": (lv3, TE, "same"),
             "ttest_te_lvl4": (lv4, TE, "same"),
             "ttest_lvl3_lvl4": (lv3, lv4, "same")}
    found = {}
    for key, (a, b, expect) in pairs.items():
        text = (f"{a} is more accurate than the single network" if expect == "greater" else
                f"{a} and {b} do not differ significantly")
        found[key] = compare_approaches(results, checks, text, "Table 2", a, b, expect)
    return found


def interleaved_weakest(results: Results, checks: Mapping[str, Learning]) -> Claim:
    """Fig. 4: interleaved training gives the weakest ensemble: at each level where it ran,
    less accurate than every other strategy there."""
    grid = results.settings.grid
    parts = [compare_approaches(results, checks, f"interleaved vs {s} at level {lv}", "Fig. 4",
                                f"ESR-4 Lvl. {lv} (interleaved)", f"ESR-4 Lvl. {lv} ({s})",
                                "less")
             for lv in grid.get("interleaved", []) for s, lvs in grid.items()
             if s != "interleaved" and lv in lvs]
    return _all_of("interleaved training gives the weakest ESR at its branching level",
                   "Fig. 4", parts)


def best_level(results: Results, checks: Mapping[str, Learning]) -> Claim:
    """Fig. 4: level 3 is the best branching level: no other level of the grid (the Table 1
    strategy) is significantly more accurate than level 3."""
    s = results.settings
    claim = f"no branching level is more accurate than level 3 ({s.strategy})"
    levels = [lv for lv in s.grid.get(s.strategy, []) if lv != 3]
    lv3 = f"ESR-4 Lvl. 3 ({s.strategy})"
    others = [f"ESR-4 Lvl. {lv} ({s.strategy})" for lv in levels]
    requires = _requires(checks, [lv3, *others], len(s.trials))
    requires.append(condition(bool(levels), f"the grid has no level but 3 for {s.strategy}"))
    if not all(c.ok for c in requires):
        return judge_fact(claim, "Fig. 4", False, "", requires=requires)
    lab = results.lab
    tests = {lv: _ttest(tables.trial_scores(lab, o), tables.trial_scores(lab, lv3))
             for lv, o in zip(levels, others)}
    better = [lv for lv, t in tests.items() if t.significant() and t.estimate > 0]
    reason = "; ".join(f"level {lv} - level 3: {t.describe(what='points')}"
                       for lv, t in tests.items())
    return judge_fact(claim, "Fig. 4", not better, reason, requires=requires)


def first_update_claim(results: Results, checks: Mapping[str, Learning]) -> Claim:
    """Fig. 5: after its first epoch a new ESR branch is more accurate than a new TE network:
    per trial the mean over added members (the second onwards) of their validation accuracy,
    ESR against TE, by a paired t-test over the trials; the ESR/TE ratio is given too."""
    s = results.settings
    esr = f"ESR-4 Lvl. {s.level} ({s.strategy})"
    claim = "a new ESR branch is more accurate after one epoch than a new TE network"
    requires = _requires(checks, [esr, TE], len(s.trials))
    requires.append(condition(s.n_train_folds >= 2, "the ensembles have one member only"))
    if not all(c.ok for c in requires):
        return judge(claim, "Fig. 5", None, expect="greater", requires=requires)
    first = tables.first_update(tables.convergence(results.lab, s.strategy, s.level))
    per_trial = first.groupby(level="trial")[["ESR", "TE"]].mean()
    judged = judge(claim, "Fig. 5", _ttest(per_trial["ESR"], per_trial["TE"]),
                   expect="greater", requires=requires, what="points")
    ratio = per_trial["ESR"].mean() / per_trial["TE"].mean()
    return dataclasses.replace(judged, reason=f"{judged.reason}; mean ESR / TE ratio "
                                              f"{ratio:.2f}")


def diversity_claim(results: Results, checks: Mapping[str, Learning]) -> Claim:
    """Fig. 5 (text): the ESR's members are as diverse as the TE's: their pairwise
    disagreement on the test fold does not differ significantly over the trials."""
    s = results.settings
    esr = f"ESR-4 Lvl. {s.level} ({s.strategy})"
    claim = f"the members of {esr} disagree as often as the TE's"
    requires = _requires(checks, [esr, TE], len(s.trials))
    if not all(c.ok for c in requires):
        return judge(claim, "Fig. 5 (text)", None, expect="same", requires=requires)
    return judge(claim, "Fig. 5 (text)", _ttest(tables.trial_diversity(results.lab, esr),
                                                tables.trial_diversity(results.lab, TE)),
                 expect="same", requires=requires)


def init_claim(results: Results, checks: Mapping[str, Learning]) -> Claim:
    """The book's control: branches that start from their own draws (Algorithm 1) disagree
    more often than branches that all start from one identical draw."""
    s = results.settings
    own = f"ESR-4 Lvl. {s.level} ({s.strategy})"
    same = f"ESR-4 Lvl. {s.level} ({s.strategy}, identical starts)"
    claim = "distinct initial weights make the branches disagree more often"
    source = "Algorithm 1 (this book's control)"
    requires = _requires(checks, [own, same], len(s.trials))
    if not all(c.ok for c in requires):
        return judge(claim, source, None, expect="greater", requires=requires)
    return judge(claim, source, _ttest(tables.trial_diversity(results.lab, own),
                                       tables.trial_diversity(results.lab, same)),
                 expect="greater", requires=requires)


def esr9_claim(results: Results, checks: Mapping[str, Learning]) -> Claim:
    """ESR-9's ensemble beats its best branch: exact McNemar test on the one test set (the
    branch picked as the best on that set, which favours the branch)."""
    wild = results.wild
    claim = "the ESR-9 ensemble is more accurate than its best branch"
    requires = [checks["ESR-9"], checks["ESR-9 best branch"],
                condition(wild.logits.shape[1] >= 2, "ESR-9 has one branch only")]
    if not all(c.ok for c in requires):
        return judge(claim, "Sec. AffectNet", None, expect="greater", requires=requires)
    b = tables.best_branch(wild)
    ensemble = to_predictions(wild.logits, "plurality") == wild.labels
    branch = wild.logits[:, b].argmax(-1) == wild.labels
    return judge(claim, "Sec. AffectNet", mcnemar(ensemble, branch), expect="greater",
                 requires=requires, scale=100, what="points")


def affect_claim(results: Results, checks: Mapping[str, Learning]) -> Claim:
    """Table 4: ESR-9 predicts valence and arousal better than the training mean: per test
    image the squared error summed over both, by a sign-flip test over the images."""
    wild = results.wild
    claim = "ESR-9 predicts valence and arousal better than the training mean"
    # The heads read ESR-9's emotion outputs: without a model that learned there is nothing
    # to read.
    requires = [condition(wild.affect is not None,
                          f"{results.settings.wild_dataset} has no valence/arousal labels"),
                checks["ESR-9"]]
    if not all(c.ok for c in requires):
        return judge(claim, "Table 4", None, expect="less", requires=requires)
    predicted = wild.affect["predicted"].mean(axis=1)  # (N, 2): ESR-9 averages its branches
    target = wild.affect["target"]
    esr9 = ((predicted - target) ** 2).sum(1)
    mean = ((wild.affect["train_mean"] - target) ** 2).sum(1)
    return judge(claim, "Table 4", clustered_test(esr9, mean), expect="less",
                 requires=requires, what="squared error per image")


def judge_claims(results: Results, checks: Mapping[str, Learning]) -> dict[str, Claim]:
    """Every claim the chapter judges, by name (the Table 2 names are paper_results.yaml's)."""
    return {**table2_claims(results, checks),
            "interleaved_weakest": interleaved_weakest(results, checks),
            "best_branching_level": best_level(results, checks),
            "first_update_ratio": first_update_claim(results, checks),
            "diversity_esr_te": diversity_claim(results, checks),
            "init_diversity": init_claim(results, checks),
            "esr9_beats_best_branch": esr9_claim(results, checks),
            "esr9_affect": affect_claim(results, checks)}


# ----------------------------------------------------------------------- paper vs this book

def measured(results: Results, cost: pd.DataFrame, judged: Mapping[str, Claim]
             ) -> dict[str, object]:
    """This run's values for :func:`fernb.report.paper_vs_book` ("esr"): architecture facts
    as numbers, accuracies and errors as numbers, comparisons as judged claims."""
    s, lab, wild = results.settings, results.lab, results.wild
    values: dict[str, object] = {
        "single_params": int(cost.loc[SINGLE, "params"]),
        "te_params": int(cost.loc[TE, "params"]),
        "esr4_lvl3_params": int(cost.loc["ESR-4 Lvl. 3", "params"]),
        "esr4_lvl4_params": int(cost.loc["ESR-4 Lvl. 4", "params"]),
        "lvl3_param_reduction": round(100 * (1 - cost.loc["ESR-4 Lvl. 3", "params_ratio"]), 1),
        "lvl4_param_reduction": round(100 * (1 - cost.loc["ESR-4 Lvl. 4", "params_ratio"]), 1),
        "esr9_params_millions": round(count_parameters(ESR(arch="wild", n_classes=8)) / 1e6, 2),
    }
    names = {"Single network": "single_accuracy", "Traditional ensemble": "te_accuracy",
             "ESR-4 Lvl. 3": "esr4_lvl3_accuracy", "ESR-4 Lvl. 4": "esr4_lvl4_accuracy"}
    for name, label in tables.approaches(lab, s.strategy).items():
        values[names[name]] = round(float(tables.trial_scores(lab, label).mean()), 1)
    values |= {k: judged[k] for k in ("ttest_single_te", "ttest_single_lvl3",
                                      "ttest_single_lvl4", "ttest_te_lvl3", "ttest_te_lvl4",
                                      "ttest_lvl3_lvl4", "best_branching_level",
                                      "first_update_ratio")}
    members = tables.esr9_members(wild)["accuracy (%)"]
    values["esr9_affectnet_accuracy"] = round(float(members["plurality"]), 1)
    values["esr9_affectnet_best_branch"] = round(float(members.drop("plurality").max()), 1)
    if wild.affect is not None:
        rmse = tables.rmse_table(wild).loc["ESR-9 (mean of branches)"]
        values["esr9_rmse_valence"] = round(float(rmse["valence"]), 3)
        values["esr9_rmse_arousal"] = round(float(rmse["arousal"]), 3)
    return values


def paper_table(results: Results, cost: pd.DataFrame, judged: Mapping[str, Claim]
                ) -> pd.DataFrame:
    """The paper-vs-book table; accuracies and errors compare in value only on CK+ (and
    AffectNet for ESR-9's)."""
    real = results.settings.dataset == "ckplus" and results.settings.wild_dataset == "affectnet"
    return paper_vs_book("esr", measured(results, cost, judged), real_data=real)


def learning_view(results: Results, checks: Mapping[str, Learning], part: str
                  ) -> dict[str, object]:
    """The arguments of :meth:`fernb.report.Report.learning` for the lab study (``part="lab"``)
    or ESR-9 (``"esr9"``): curves, did-it-learn checks, majority-class rate and name."""
    if part == "lab":
        return {"histories": tables.lab_curves(results.lab),
                "checks": [c for k, c in checks.items() if not k.startswith("ESR-9")],
                "majority": tables.majority_rate(results.lab), "name": "learning"}
    if part == "esr9":
        labels = results.wild.labels
        return {"histories": tables.wild_curves(results.wild),
                "checks": [checks["ESR-9"], checks["ESR-9 best branch"]],
                "majority": float(np.bincount(labels).max() / len(labels)),
                "name": "learning_esr9"}
    raise ValueError(f"part must be 'lab' or 'esr9', got {part!r}")


# ----------------------------------------------------------------------- the prose

def _sentence(claim: Claim) -> str:
    return f"{claim.verdict} ({claim.reason})"


def _not_learned(checks: Mapping[str, Learning]) -> str:
    failed = [c.model for c in checks.values() if not c.ok]
    if not failed:
        return ("every model learned: each is above the majority class by a one-sided "
                "binomial test, so the claims below can be judged")
    return (f"{len(failed)} of {len(checks)} models did not learn ({', '.join(failed)}): the "
            f"claims that compare them read \"not testable\"")


def _halving(step: int, epochs: int, what: str) -> str:
    if step >= epochs:
        return (f"with {epochs} epochs per {what} the learning rate, halved every {step} "
                f"epochs, is never halved")
    return f"the learning rate is halved every {step} epochs ({epochs} epochs per {what})"


def highlights(results: Results, cost: pd.DataFrame, judged: Mapping[str, Claim],
               checks: Mapping[str, Learning], *, seconds: float) -> dict[str, object]:
    """Every value and sentence the chapter's prose cites (glued by the notebook)."""
    s, lab = results.settings, results.lab
    control = tables.init_control(lab, s.strategy, s.level)
    own, same = control.iloc[0], control.iloc[1]
    esr = lab.table[(lab.table["model"] == "ESR") & (lab.table["init"] == "own")]
    outcome = results.outcome or Outcome()
    wild_epochs = max(s.wild_epochs_first, s.wild_epochs)
    return {
        "minutes": seconds / 60,
        "stored_reused": len(outcome.reused), "stored_trained": len(outcome.trained),
        "n_trials": len(s.trials), "n_models": len(lab.table) + 2,
        "esr_seconds": float(esr["train_seconds"].mean()),
        "lab_halving": _halving(s.lr_step, s.epochs, "added branch"),
        "wild_halving": _halving(s.wild_lr_step, wild_epochs, "branch"),
        "lvl3_params_share": 100 * float(cost.loc["ESR-4 Lvl. 3", "params_ratio"]),
        "lvl4_params_share": 100 * float(cost.loc["ESR-4 Lvl. 4", "params_ratio"]),
        "lvl3_flops_share": 100 * float(cost.loc["ESR-4 Lvl. 3", "flops_ratio"]),
        "learning_reading": _not_learned(checks),
        "majority": 100 * tables.majority_rate(lab),
        "init_acc_own": float(own["accuracy (%)"]), "init_acc_same": float(same["accuracy (%)"]),
        "init_dis_own": float(own["disagreement"]), "init_dis_same": float(same["disagreement"]),
        "init_reading": _sentence(judged["init_diversity"]),
        "diversity_reading": _sentence(judged["diversity_esr_te"]),
        "first_update_reading": _sentence(judged["first_update_ratio"]),
        "te_lvl3_reading": _sentence(judged["ttest_te_lvl3"]),
        "gap_reading": (f"this run stops at epoch {s.epochs}, before the paper's epoch 50, so "
                        f"its Fig. 5 shows only the start of that race" if s.epochs < 50 else
                        f"this run trains {s.epochs} epochs per member, past the paper's "
                        f"epoch 50"),
        "wild_reading": (f"ESR-9 ran on {s.wild_dataset}, not AffectNet, so its accuracy and "
                         f"errors compare with the paper's in pattern only"
                         if s.wild_dataset != "affectnet" else
                         "ESR-9 ran on AffectNet, so its accuracy compares with Table 3 in value"),
        "esr9_reading": _sentence(judged["esr9_beats_best_branch"]),
        "interleaved_reading": _sentence(judged["interleaved_weakest"]),
        "best_level_reading": _sentence(judged["best_branching_level"]),
        "first_update_verdict": judged["first_update_ratio"].verdict,
        "lab_reading": ("the lab accuracies come from CK+ and compare with Table 1 in value"
                        if s.dataset == "ckplus" else
                        f"the lab accuracies come from {s.dataset}, not CK+, and a scaled-down "
                        f"protocol, so only the pattern of the paper's claims compares, not "
                        f"the values"),
        "affect_reading": _sentence(judged["esr9_affect"]),
    }
