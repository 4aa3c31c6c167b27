"""The paper's claims judged on a run (:mod:`fernb.verdicts`): every compared model must have
learned, transfer networks must have a stage-2 head above the majority class (else they
only had their fine-tuning epochs to learn expressions), and a difference counts only
through a test on independent units (McNemar on one set of test faces, a test clustered by
image over the curve seeds, a paired t-test over faces or images, a rank correlation)."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from fernb.data.datasets import SYNTHETIC
from fernb.evaluate import (TestResult, clustered_test, mcnemar, paired_ttest,
                            rank_correlation)
from fernb.models.parts import ENSEMBLE_PARTS, PartNetwork, paper_layers
from fernb.studies.parts.protocol import KIND_NAMES, curve_kinds, subjects
from fernb.studies.parts.results import Results
from fernb.studies.parts.learning import _learned
from fernb.studies.parts.tables import (COLUMNS, accuracies, conv_share, correct,
                                        curve_correct, places)
from fernb.verdicts import UNTESTABLE, Check, Claim, condition, judge, judge_fact, learned

# Sec. V-A's order of discriminability, from the AUs each part takes part in.
PAPER_ORDER = ("mouth", "eyes", "eyebrows", "jaw", "nose")
# The mechanism regime's comparisons: (better, worse) as the paper's argument expects.
CURVE_COMPARISONS = (("ftl", "baseline"), ("ftl", "control"), ("el", "baseline"),
                     ("el", "control"))


def _heads(results: Results, protocol: str, *columns: str, name: str) -> list[Check]:
    """Wadhawan's own precondition: the transfer ensembles' stage-2 heads learned."""
    return [_learned(results, protocol, c, name, artifact="head") for c in columns
            if c in ("FTL", "EL")]


def _same_size(a: str, size_a: int, b: str, size_b: int, parameter: str) -> Check:
    """Two ensembles are compared only with as many networks each: otherwise the test
    compares ensemble sizes, not kinds of network."""
    return condition(size_a == size_b,
                     f"{a} has {size_a} networks and {b} {size_b}: an ensemble against a "
                     f"smaller one (set {parameter} to {max(size_a, size_b)} to compare them)")


def _sizes(results: Results, where: str, *columns: str) -> list[Check]:
    """:func:`_same_size` for two ensemble columns of Table I (EL's five part networks,
    ``n_networks`` of the Baseline and FTL) trained at ``where``; none for a part."""
    kinds = {name: kind for kind, name in KIND_NAMES.items()}
    if not set(columns) <= set(kinds):
        return []
    a, b = (len(results.networks("default", where, kinds[c])) for c in columns)
    return [_same_size(columns[0], a, columns[1], b, "n_networks")]


def compare(results: Results, protocol: str, a: str, b: str, claim: str, source: str,
            names: Mapping[str, str]) -> Claim:
    """Column ``a`` beats column ``b`` of Table I (or III) on the same test faces: an exact
    McNemar test, once both learned (and any transfer ensemble's stage-2 head did) and two
    ensembles have as many networks."""
    name = names[protocol]
    own = "wild" if protocol == "cross" else protocol  # where the networks trained
    requires = [_learned(results, protocol, a, name), _learned(results, protocol, b, name),
                *_heads(results, own, a, b, name=names[own]),
                *_sizes(results, places(results)[own][0], a, b)]
    test = mcnemar(correct(results, protocol, a), correct(results, protocol, b))
    return judge(claim, source, test, expect="greater", requires=requires, scale=100,
                 what="points")


def best_part(results: Results, protocol: str) -> str:
    """The most accurate EL sub-network on the protocol's test faces."""
    values = accuracies(results, protocol)
    return max(ENSEMBLE_PARTS, key=lambda p: values[p])


def el_over_parts(results: Results, protocol: str, names: Mapping[str, str]) -> Claim:
    """EL beats the mean of its five sub-networks (Sec. V-A): a sign-flip test clustered by
    face, EL's correctness against the sub-networks' mean correctness on each face."""
    parts = np.stack([correct(results, protocol, p) for p in ENSEMBLE_PARTS])
    requires = [_learned(results, protocol, "EL", names[protocol])]
    return judge("EL beats the mean of its sub-networks (they are complementary)", "Sec. V-A",
                 clustered_test(correct(results, protocol, "EL"), parts), expect="greater",
                 requires=requires, scale=100, what="points")


def probe_order(probe: pd.DataFrame) -> Claim:
    """Sec. V-A's order from the AUs, against what a linear probe reads from each part's
    true landmarks: a rank correlation over the five parts."""
    truth = probe.loc[list(PAPER_ORDER), "true landmarks (%)"]
    expected = np.arange(len(PAPER_ORDER), 0, -1)  # mouth first
    test = rank_correlation(expected, truth.to_numpy())
    return judge("the parts' landmarks tell the expression in the order mouth, eyes, "
                 "eyebrows, jaw, nose", "Sec. V-A", test, expect="greater")


def landmark_change(errors: pd.DataFrame, part: str, expect: str) -> Claim:
    """Sec. V-B: fine-tuning lowers (``expect="less"``) or raises (``"greater"``) the EL
    part network's landmark error, by a paired t-test over the validation faces."""
    row = errors.loc[(f"EL {part}", part)]
    test = TestResult("paired t-test", "faces", int(row["faces"]), float(row["change (px)"]),
                      float(row["p"]))
    verb = "lowers" if expect == "less" else "raises"
    whose = f"{part}'" if part.endswith("s") else f"{part}'s"
    return judge(f"fine-tuning {verb} the {whose} landmark error", "Sec. V-B", test,
                 expect=expect, what="px")


def own_part(scores: Mapping[str, Mapping[str, np.ndarray]], regions: Mapping[str, np.ndarray],
             requires: list[Check]) -> Claim:
    """Sec. V-C: each EL sub-network's Grad-CAM mass falls in its own part's region more than
    a uniform map's would (a paired t-test over the faces per part; all five must hold)."""
    reasons, ok = [], True
    for part in ENSEMBLE_PARTS:
        share = scores[f"EL {part}"][part]
        chance = regions[part].mean(axis=(1, 2)).astype(float)
        keep = np.isfinite(share)
        if keep.sum() < 2:
            ok = False
            reasons.append(f"{part}: fewer than two faces with a map")
            continue
        test = paired_ttest(share[keep], chance[keep], unit="faces")
        ok &= test.significant() and test.estimate > 0
        reasons.append(f"{part} {test.describe(100, 'points')}")
    return judge_fact("each EL sub-network looks at its own part", "Sec. V-C, Fig. 11", ok,
                      "own region's share minus chance: " + "; ".join(reasons),
                      requires=requires)


def expression_evidence(scores: Mapping[str, Mapping[str, np.ndarray]],
                        requires: list[Check]) -> Claim:
    """Sec. V-C: FTL's maps put more of their mass on the expression's regions than the
    Baseline's (a paired t-test over the faces where both maps have mass)."""
    claim = "FTL's maps fall on the expression's regions more than the Baseline's"
    if "expression" not in scores["FTL"]:
        return Claim(claim, "Sec. V-C, Fig. 11", UNTESTABLE,
                     "the dataset has no evidence masks")
    a, b = scores["FTL"]["expression"], scores["Baseline"]["expression"]
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 2:
        return Claim(claim, "Sec. V-C, Fig. 11", UNTESTABLE, "fewer than two faces with maps")
    return judge(claim, "Sec. V-C, Fig. 11", paired_ttest(a[keep], b[keep], unit="faces"),
                 expect="greater", requires=requires, scale=100, what="points")


def claims(results: Results, names: Mapping[str, str], probe: pd.DataFrame,
           errors: pd.DataFrame, scores: Mapping[str, Mapping[str, np.ndarray]],
           regions: Mapping[str, np.ndarray]) -> dict[str, Claim]:
    """The default regime's claims by key (the keys of ``paper_results.yaml`` where the
    paper gives the number)."""
    out: dict[str, Claim] = {}
    for protocol, where in (("lab", "Table I (lab)"), ("wild", "Table I (wild)")):
        out[f"{protocol}_ftl_minus_baseline"] = compare(
            results, protocol, "FTL", "Baseline",
            f"transfer from landmarks beats direct training (FTL > Baseline), "
            f"{names[protocol]}", where, names)
        out[f"{protocol}_el_minus_ftl"] = compare(
            results, protocol, "EL", "FTL",
            f"the part-based ensemble beats FTL (EL > FTL), {names[protocol]}", where, names)
        best = best_part(results, protocol)
        out[f"{protocol}_el_minus_best_part"] = compare(
            results, protocol, "EL", best,
            f"EL beats its best sub-network ({best} on this test set), {names[protocol]}",
            where, names)
        out[f"{protocol}_mouth_minus_nose"] = compare(
            results, protocol, "mouth", "nose",
            f"the mouth sub-network beats the nose sub-network, {names[protocol]}", where,
            names)
    out["sfew_el_gain_over_parts_mean"] = el_over_parts(results, "wild", names)
    out["probe_order"] = probe_order(probe)
    out["vb_mouth"] = landmark_change(errors, "mouth", "less")
    out["vb_eyes"] = landmark_change(errors, "eyes", "less")
    out["vb_nose"] = landmark_change(errors, "nose", "greater")
    learned_el = [_learned(results, "lab", "EL", names["lab"])]
    out["own_part"] = own_part(scores, regions, learned_el)
    out["expression_evidence"] = expression_evidence(
        scores, [_learned(results, "lab", c, names["lab"]) for c in ("FTL", "Baseline")])
    out["cross_ftl_minus_baseline"] = compare(
        results, "cross", "FTL", "Baseline",
        "trained in the wild, FTL beats the Baseline on the lab set", "Table III", names)
    out["cross_el_minus_ftl"] = compare(
        results, "cross", "EL", "FTL", "trained in the wild, EL beats FTL on the lab set",
        "Table III", names)
    out["cross_el_minus_wild_el"] = Claim(
        "the wild-trained EL is more accurate on the lab set than on its own test set",
        "Table III", UNTESTABLE,
        "the two accuracies come from two different sets of faces: no paired units to test "
        "a difference on")
    return out


def curve_claims(results: Results) -> pd.DataFrame:
    """The mechanism regime's verdicts: at each number of expression-labelled subjects, does
    FTL (EL) beat the Baseline and the control? A sign-flip test clustered by test face over
    the curve seeds' ensembles, once every compared ensemble learned, the transfer
    ensemble's stage-2 head learned and the two have as many networks."""
    rows = []
    settings = results.settings
    seeds = settings.curve_seeds
    for n in sorted(settings.curve):
        y = results.labels[("mechanism", str(n))]

        def checks(kind: str, artifact: str = "test") -> list[Check]:
            out = []
            for r in seeds:
                z = results.logits("mechanism", str(n), kind, seed=r, artifact=artifact)
                label = (f"{KIND_NAMES[kind]}{' stage 2' if artifact == 'head' else ''} at "
                         f"{subjects(n)}" + (f" (draw {r})" if len(seeds) > 1 else ""))
                out.append(learned(label, z, y, n_classes=z.shape[-1], rule="softmax_sum"))
            return out

        for a, b in [(a, b) for a, b in CURVE_COMPARISONS
                     if {a, b} <= set(curve_kinds(settings))]:
            size_a = len(results.networks("mechanism", str(n), a, seeds[0]))
            size_b = len(results.networks("mechanism", str(n), b, seeds[0]))
            requires = [*checks(a), *checks(b), *checks(a, "head"),
                        _same_size(KIND_NAMES[a], size_a, KIND_NAMES[b], size_b,
                                   "curve_networks")]
            test = clustered_test(curve_correct(results, n, a), curve_correct(results, n, b))
            claim = judge(f"{KIND_NAMES[a]} beats the {KIND_NAMES[b]}", "mechanism regime",
                          test,
                          expect="greater", requires=requires, scale=100, what="points")
            rows.append({"labelled subjects": n, "comparison":
                         f"{KIND_NAMES[a]} > {KIND_NAMES[b]}", "verdict": claim.verdict,
                         "why": claim.reason, "difference (points)": 100 * test.estimate,
                         "p": test.p})
    return pd.DataFrame(rows).set_index(["labelled subjects", "comparison"])


def _millions(count: float) -> float:
    return round(float(count) / 1e6, 4)


def arithmetic(cost: pd.DataFrame) -> dict[str, object]:
    """Table II and Sec. III-C / IV-E as this book computes them (``cost``:
    :func:`fernb.studies.parts.tables.complexity`), under ``paper_results.yaml``'s keys."""
    return {
        "extractor_params_millions": _millions(cost.at["extractor", "parameters"]),
        "subnetwork_params_millions": _millions(cost.at["sub-network", "parameters"]),
        "el_params_millions": _millions(cost.at["ensemble", "parameters"]),
        "el_params_keras_millions": _millions(cost.at["ensemble", "parameters (Keras)"]),
        "expression_head_params_millions": _millions(cost.at["expression head",
                                                             "parameters"]),
        "landmark_head_nose_params_millions": _millions(cost.at["landmark head (nose)",
                                                                "parameters"]),
        "landmark_head_full_params_millions": _millions(cost.at["landmark head (full)",
                                                                "parameters"]),
        "subnetwork_gflops": round(float(cost.at["sub-network", "FLOPs (eqs. 7-9)"]) / 1e9, 4),
        "el_gflops": round(float(cost.at["ensemble", "FLOPs (eqs. 7-9)"]) / 1e9, 4),
        "conv_flops_share": round(conv_share(), 2),
        "subnetwork_storage_mib": round(float(cost.at["sub-network", "storage (MiB)"]), 2),
        "el_storage_mib": round(float(cost.at["ensemble", "storage (MiB)"]), 2),
        "paper_layers": paper_layers(PartNetwork()),
    }


def real_data(dataset: str, wild_dataset: str) -> bool:
    """Whether both sets are real, so that accuracies compare with the paper's in value."""
    return dataset not in SYNTHETIC and wild_dataset not in SYNTHETIC


def measured(results: Results, cost: pd.DataFrame, judged: Mapping[str, Claim]
             ) -> dict[str, object]:
    """This run's entries for :func:`fernb.report.paper_vs_book` (``"fll_to_fer"``): the
    arithmetic, every judged comparison, and, on the paper's datasets only, the accuracies
    under the dataset's own keys (CK+ or JAFFE, SFEW)."""
    settings = results.settings
    values: dict[str, object] = {**arithmetic(cost)}
    values |= {k: v for k, v in judged.items() if k in _DIRECTION_KEYS}
    if real_data(settings.dataset, settings.wild_dataset) and \
            settings.dataset in ("ckplus", "jaffe") and settings.wild_dataset == "sfew":
        lab, wild, cross = (accuracies(results, p) for p in ("lab", "wild", "cross"))
        for prefix, m in ((settings.dataset, lab), ("sfew", wild)):
            values |= {f"{prefix}_baseline_accuracy": m["Baseline"],
                       f"{prefix}_ftl_accuracy": m["FTL"], f"{prefix}_el_accuracy": m["EL"],
                       f"{prefix}_parts_accuracy": [m[p] for p in ENSEMBLE_PARTS]}
        values[f"cross_sfew_to_{settings.dataset}"] = cross["EL"]
    return values


_DIRECTION_KEYS = ("lab_ftl_minus_baseline", "lab_el_minus_ftl", "lab_el_minus_best_part",
                   "lab_mouth_minus_nose", "wild_ftl_minus_baseline", "wild_el_minus_ftl",
                   "wild_el_minus_best_part", "wild_mouth_minus_nose",
                   "sfew_el_gain_over_parts_mean", "cross_ftl_minus_baseline",
                   "cross_el_minus_ftl", "cross_el_minus_wild_el")


def metrics(results: Results) -> dict[str, float]:
    """The run's accuracies for ``metrics.json``, named by the sets actually used."""
    settings = results.settings
    out = {"lab_dataset": settings.dataset, "wild_dataset": settings.wild_dataset}
    for protocol in ("lab", "wild", "cross"):
        m = accuracies(results, protocol)
        out |= {f"{protocol}_{c.lower()}_accuracy": m[c] for c in COLUMNS}
    return out
