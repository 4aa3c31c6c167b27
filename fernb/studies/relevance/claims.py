"""The paper's claims judged on this run (:mod:`fernb.verdicts`), the mechanism regime's
claims, and this run's values for the paper-vs-book table.

A claim compares models, so it is judged only if every model it compares learned (above the
majority class, :func:`~.tables.learning_checks`, in every fold), with enough folds for a
paired t-test over folds (the folds are the independent units: every variant of a fold starts
from the same weights and sees the same subjects). Map claims on one fold (Figs. 9-10) compare
two models on the same faces, so they are judged by a test clustered by face. The mechanism
regime's claims also need the regime to do its job: the baseline relies on the cue.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from fernb.evaluate import TestResult, clustered_test, paired_ttest
from fernb.verdicts import (FAILS, HOLDS, UNTESTABLE, Check, Claim, condition, enough_units,
                            judge, judge_fact, learned)

from .data import Prepared
from .protocol import Results
from .settings import LABELS
from .tables import (compare, confusion, constant_map_error, fold_means, fold_scores,
                     folds_learned, learning_checks)

MIN_FOLDS = 3          # a paired t-test over fewer folds cannot reach p < 0.05 in practice
PROPOSED = ("fully", "sparsity", "contiguity", "weakly", "hybrid")


def _learned(results: Results, regime: str, variants: Sequence[str]) -> list[Check]:
    checks = learning_checks(results, regime)
    out: list[Check] = []
    for v in variants:
        if v not in checks:
            out.append(condition(False, f"{LABELS[v]} was not run in the {regime} regime"))
            continue
        out.append(checks[v])
        if checks[v].ok:
            ok, n = folds_learned(results, regime, v)
            out.append(condition(ok == n, f"{LABELS[v]} learned in {ok} of {n} folds only"))
    return out


def _units(results: Results, regime: str) -> Check:
    n = results.select(regime)["fold"].nunique()
    return enough_units(n, MIN_FOLDS, "folds")


def _ran(results: Results, regime: str, *variants: str) -> bool:
    return set(variants) <= set(results.variants(regime))


def _not_run(claim: str, source: str, *variants: str) -> Claim:
    return Claim(claim, source, UNTESTABLE,
                 f"needs {', '.join(LABELS[v] for v in variants)} in this run")


def beats_baseline(results: Results, variant: str, regime: str = "default") -> Claim:
    """One variant against the baseline CNN (paired over folds)."""
    claim = f"{LABELS[variant]} beats the baseline CNN"
    source = "Sec. IV-C, Table 4; Table 5" if regime == "default" else "Sec. IV-E, Table 6"
    if not _ran(results, regime, variant, "baseline"):
        return _not_run(claim, source, variant, "baseline")
    return judge(claim, source, compare(results, regime, variant, "baseline"), expect="greater",
                 requires=[*_learned(results, regime, [variant, "baseline"]),
                           _units(results, regime)], scale=100, what="points")


def every_variant_beats_baseline(results: Results) -> Claim:
    """The paper's "regardless the training strategy, the proposed model always outperforms
    the baseline": holds when every proposed variant's own claim holds."""
    claim, source = "Every variant of the proposed model beats the baseline CNN", \
        "Sec. IV-C, Table 4; Table 5"
    proposed = [v for v in results.variants("default") if v in PROPOSED]
    if not proposed:
        return Claim(claim, source, UNTESTABLE, "no proposed variant in this run")
    each = {v: beats_baseline(results, v) for v in proposed}
    untestable = [v for v, c in each.items() if c.verdict == UNTESTABLE]
    failed = [v for v, c in each.items() if c.verdict == FAILS]
    if untestable:
        return Claim(claim, source, UNTESTABLE,
                     "; ".join(f"{v}: {each[v].reason}" for v in untestable))
    reason = "; ".join(f"{v}: {c.reason}" for v, c in each.items())
    return Claim(claim, source, FAILS if failed else HOLDS, reason,
                 min(c.value for c in each.values() if c.value is not None))


def hybrid_is_best(results: Results) -> Claim:
    """The hybrid model against the most accurate other proposed variant."""
    claim, source = "The hybrid model is the most accurate", "Sec. IV-C, Tables 4-5"
    others = [v for v in results.variants("default") if v in PROPOSED and v != "hybrid"]
    if not _ran(results, "default", "hybrid") or not others:
        return _not_run(claim, source, "hybrid", "fully")
    rival = max(others, key=lambda v: fold_scores(results, "default", v).mean())
    return judge(f"{claim} (against the next best, {LABELS[rival]})", source,
                 compare(results, "default", "hybrid", rival), expect="greater",
                 requires=[*_learned(results, "default", ["hybrid", rival]),
                           _units(results, "default")], scale=100, what="points")


def weakly_beats_fully(results: Results) -> Claim:
    claim, source = "The weakly supervised model beats the fully supervised one", \
        "Sec. IV-C; Table 5"
    if not _ran(results, "default", "weakly", "fully"):
        return _not_run(claim, source, "weakly", "fully")
    return judge(claim, source, compare(results, "default", "weakly", "fully"),
                 expect="greater", requires=[*_learned(results, "default", ["weakly", "fully"]),
                                             _units(results, "default")],
                 scale=100, what="points")


def _fold0_learned(results: Results, keys: Sequence[str]) -> list[Check]:
    n = len(results.classes)
    out = []
    for key in keys:
        label = results.runs.set_index("key").loc[key, "label"]
        out.append(learned(f"{label} (fold 0)", results.tests[key]["logits_test"],
                           results.tests[key]["label"], n_classes=n))
    return out


def _figure_pair(results: Results, variant: str) -> tuple[str, str] | None:
    extra = results.select("figure", variant)
    main = results.select("default", variant)
    main = main[main["fold"] == 0]
    if extra.empty or main.empty:
        return None
    return main["key"].iloc[0], extra["key"].iloc[0]


def _per_face(results: Results, a: str, b: str, column: str) -> TestResult | None:
    x, y = results.scores[a][column].to_numpy(), results.scores[b][column].to_numpy()
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 2:
        return None
    return clustered_test(x[keep], y[keep])


def lambda_claims(results: Results) -> list[Claim]:
    """Figs. 9-10 on the first fold: the other lambda against the chapter's, face by face."""
    s = results.settings
    out = []
    pair = _figure_pair(results, "fully")
    claim = "A smaller lambda lets the fully supervised maps move further from the targets"
    if pair is None:
        out.append(_not_run(claim, "Fig. 9", "fully"))
    else:
        main, low = pair
        out.append(judge(f"{claim} (error to targets, lambda {s.lambda_fully_low:g} vs "
                         f"{s.lambda_fully:g})", "Fig. 9",
                         _per_face(results, low, main, "map_mse"), expect="greater",
                         requires=_fold0_learned(results, [main, low])))
    pair = _figure_pair(results, "weakly")
    for claim, column, expect in (
            ("A larger lambda makes the weakly supervised maps sparser (share of pixels above "
             "half the peak)", "map_peak_area", "less"),
            ("Over-regularised weakly supervised maps are less well defined around the facial "
             "components (beyond the paper: a lower evidence share)", "map_evidence", "less")):
        if pair is None:
            out.append(_not_run(claim, "Fig. 10", "weakly"))
            continue
        main, high = pair
        out.append(judge(f"{claim}, lambda {s.lambda_weakly_high:g} vs {s.lambda_weakly:g}",
                         "Fig. 10", _per_face(results, high, main, column), expect=expect,
                         requires=_fold0_learned(results, [main, high])))
    return out


def on_evidence(results: Results, variant: str) -> Claim:
    """A variant's maps put more of their mass on the evidence regions than a uniform map."""
    claim = (f"The {LABELS[variant].split(' (')[0].lower()} maps are strong around the facial "
             f"components (beyond the paper: more mass on the evidence regions than chance)")
    if not _ran(results, "default", variant):
        return _not_run(claim, "Sec. IV-B, Figs. 9-10", variant)
    ev = fold_means(results, "default", variant, "map_evidence")
    chance = fold_means(results, "default", variant, "chance_evidence")
    shared = ev.dropna().index.intersection(chance.dropna().index)
    test = paired_ttest(ev[shared].to_numpy(), chance[shared].to_numpy()) \
        if len(shared) >= 2 else None
    return judge(claim, "Sec. IV-B, Figs. 9-10", test, expect="greater",
                 requires=[*_learned(results, "default", [variant]), _units(results, "default")],
                 what="of the map's mass")


def wrinkles(results: Results) -> Claim:
    claim = ("The weakly supervised maps capture expression wrinkles the landmarks do not mark "
             "(beyond the paper: more of their mass on evidence away from the landmarks than "
             "the fully supervised maps)")
    if not _ran(results, "default", "weakly", "fully"):
        return _not_run(claim, "Sec. IV-B, IV-C", "weakly", "fully")
    a = fold_means(results, "default", "weakly", "map_away")
    b = fold_means(results, "default", "fully", "map_away")
    shared = a.dropna().index.intersection(b.dropna().index)
    test = paired_ttest(a[shared].to_numpy(), b[shared].to_numpy()) if len(shared) >= 2 else None
    return judge(claim, "Sec. IV-B, IV-C", test, expect="greater",
                 requires=[*_learned(results, "default", ["weakly", "fully"]),
                           _units(results, "default")], what="of the map's mass")


def contempt_hardest(results: Results) -> Claim | None:
    """Fig. 11 (the hybrid model on CK+): contempt has the lowest recall."""
    if "contempt" not in results.classes:
        return None
    variant = "hybrid" if _ran(results, "default", "hybrid") else "baseline"
    cm = confusion(results, variant)
    recall = pd.Series(np.diag(cm.to_numpy()), index=cm.index)
    return judge_fact("Contempt is the hardest expression", "Fig. 11",
                      bool(recall.idxmin() == "contempt"),
                      f"{LABELS[variant]}: lowest recall {recall.idxmin()} ({recall.min():.2f}), "
                      f"contempt {recall['contempt']:.2f}",
                      requires=_learned(results, "default", [variant]),
                      value=float(recall["contempt"]))


def transfer_claim(results: Results) -> Claim:
    claim = "After pre-training, the proposed model beats the baseline on the small " \
            "in-the-wild set"
    proposed = [v for v in results.variants("transfer") if v != "baseline"]
    if not proposed or "baseline" not in results.variants("transfer"):
        return Claim(claim, "Sec. IV-E, Table 6", UNTESTABLE, "Table 6 was not run")
    best = max(proposed, key=lambda v: fold_scores(results, "transfer", v).mean())
    return judge(f"{claim} ({LABELS[best]})", "Sec. IV-E, Table 6",
                 compare(results, "transfer", best, "baseline"), expect="greater",
                 requires=[*_learned(results, "transfer", [best, "baseline"]),
                           _units(results, "transfer")], scale=100, what="points")


# ----------------------------------------------------------------------------- mechanism

def takes_shortcut(results: Results) -> Claim:
    """The regime's own precondition: the baseline relies on the cue (lower accuracy when
    the cue misleads than when it is independent of the label)."""
    claim = "The regime offers a shortcut: the baseline relies on the cue"
    if not _ran(results, "mechanism", "baseline"):
        return _not_run(claim, "beyond the paper", "baseline")
    test = compare(results, "mechanism", "baseline", "baseline", "misleading",
                   b_condition="independent")
    return judge(f"{claim} (accuracy with misleading vs independent cues)", "beyond the paper",
                 test, expect="less", requires=[*_learned(results, "mechanism", ["baseline"]),
                                                _units(results, "mechanism")],
                 scale=100, what="points")


def _map_learned(results: Results, prep: Prepared | None, variant: str) -> Check:
    """The landmark prior's precondition: the fully supervised map is closer to the targets
    than the best constant map."""
    if variant not in ("fully", "hybrid"):
        return condition(True, "")
    if prep is None or prep.maps is None:
        return condition(False, "no target maps to check the map against")
    rows = results.select("mechanism", variant)
    errors = [float(np.nanmean(results.scores[k]["map_mse"])) for k in rows["key"]]
    index = np.concatenate([results.tests[k]["index"] for k in rows["key"]])
    const = constant_map_error(prep, index)
    err = float(np.mean(errors))
    return condition(err < const, f"{LABELS[variant]}'s map did not learn its targets: error "
                     f"{err:.4f} is not below the best constant map's {const:.4f}",
                     f"map error {err:.4f} < constant map {const:.4f}")


def resists(results: Results, variant: str, rival: str, prep: Prepared | None) -> Claim:
    """``variant`` is more accurate than ``rival`` when the cue misleads (paired over
    folds), given both learned and the baseline takes the shortcut."""
    name = LABELS[variant].split(" (")[0]
    claim = (f"{name} resists the shortcut better than the "
             f"{'baseline' if rival == 'baseline' else LABELS[rival].lower()}: higher accuracy "
             f"when the cue misleads")
    source = "beyond the paper (Sec. III-B's argument)"
    if not _ran(results, "mechanism", variant, rival, "baseline"):
        return _not_run(claim, source, variant, rival)
    shortcut = takes_shortcut(results)
    return judge(claim, source, compare(results, "mechanism", variant, rival, "misleading"),
                 expect="greater",
                 requires=[*_learned(results, "mechanism", [variant, rival]),
                           _units(results, "mechanism"),
                           condition(shortcut.verdict == HOLDS,
                                     f"the baseline does not take the shortcut "
                                     f"({shortcut.reason})"),
                           _map_learned(results, prep, variant)],
                 scale=100, what="points")


def mechanism_claims(results: Results, prep: Prepared | None) -> list[Claim]:
    if not results.variants("mechanism"):
        return []
    out = [takes_shortcut(results)]
    for variant, rival in (("fully", "baseline"), ("fully", "unguided"), ("hybrid", "baseline"),
                           ("weakly", "baseline")):
        if _ran(results, "mechanism", variant):
            out.append(resists(results, variant, rival, prep))
    return out


def claims(results: Results, prep: Prepared | None = None) -> list[Claim]:
    """Every claim, judged on this run: the paper's (default regime, Figs. 9-11, Table 6),
    then the mechanism regime's."""
    out = [every_variant_beats_baseline(results)]
    out += [beats_baseline(results, v) for v in results.variants("default") if v in PROPOSED]
    out += [hybrid_is_best(results), weakly_beats_fully(results), *lambda_claims(results)]
    out += [on_evidence(results, v) for v in ("fully", "weakly") if _ran(results, "default", v)]
    out.append(wrinkles(results))
    hardest = contempt_hardest(results)
    if hardest is not None:
        out.append(hardest)
    out.append(transfer_claim(results))
    return out + mechanism_claims(results, prep)


def measured(results: Results) -> dict[str, Any]:
    """This run's values under the keys of ``paper_results.yaml`` (``relevance``): accuracies
    (%) as numbers, the paper's comparisons as judged claims. The fold protocol fills
    Table 5's rows on JAFFE and Table 4's otherwise; the transfer protocol Table 6's."""
    acc = {v: 100 * fold_scores(results, "default", v).mean()
           for v in results.variants("default")}
    out: dict[str, Any] = {}
    if results.settings.dataset == "jaffe":
        out |= {f"jaffe_{v}_accuracy": acc[v] for v in ("baseline", "fully", "weakly", "hybrid")
                if v in acc}
        out["jaffe_weakly_minus_fully"] = weakly_beats_fully(results)
        out["jaffe_min_gain"] = every_variant_beats_baseline(results)
        out["jaffe_hybrid_minus_weakly"] = hybrid_is_best(results)
    else:
        out["ckplus_baseline_accuracy"] = acc["baseline"]
        if "hybrid" in acc:
            out["ckplus_hybrid_accuracy"] = acc["hybrid"]
            out["ckplus_hybrid_gain"] = beats_baseline(results, "hybrid")
    if results.variants("transfer"):
        wacc = {v: 100 * fold_scores(results, "transfer", v).mean()
                for v in results.variants("transfer")}
        out["sfew_baseline_accuracy"] = wacc["baseline"]
        proposed = [v for v in wacc if v != "baseline"]
        if proposed:
            out["sfew_proposed_accuracy"] = max(wacc[v] for v in proposed)
            out["sfew_gain"] = transfer_claim(results)
    return out
