"""The paper's claims judged on a run (:mod:`fernb.verdicts`), the values of the paper-vs-book
table, and every number and sentence the chapter's prose cites (:func:`highlights`).

Every claim that compares models requires that each compared model learned (its weakest
network above the majority class by a one-sided binomial test) and the method's own
preconditions; differences count only through a test on independent units: seeds for
networks, child-control pairs for FGA, images (clustered) for ensembles that share one test
set, images (paired) for saliency scores.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from fernb.evaluate import TestResult, format_p, rank_correlation
from fernb.studies.faml import mechanism as M
from fernb.studies.faml import saliency as S
from fernb.studies.faml import tables as T
from fernb.studies.faml import voting as V
from fernb.studies.faml.protocol import (CE, CONTROL, DEFAULT, FGA, LSR, MECHANISM, Results,
                                         plan)
from fernb.studies.faml.settings import Settings
from fernb.verdicts import (HOLDS, UNTESTABLE, Check, Claim, condition, enough_units, judge,
                            judge_fact)

# paper_results.yaml's key of each Table 6 row.
T6_KEYS = {"RI18": "ri18", "ResNet34": "resnet34", "VGG16": "vgg16",
           "DenseNet121": "densenet121", "R18": "r18", "R18+FAML": "faml",
           "R18+FAML-FGA": "faml_fga"}
RHO_POINTS = 5  # a rank correlation needs at least this many basic networks


def _learned(results: Results, *models: str, regime: str = "default") -> list[Check]:
    r = results.default if regime == "default" else results.mechanism
    return [c for c in T.learning_checks(r, models)]


def _paired(values: np.ndarray, reference: float, unit: str) -> TestResult | None:
    from fernb.evaluate import paired_ttest
    if len(values) < 2:
        return None
    return paired_ttest(values, np.full(len(values), reference), unit=unit)


def confidence_check(results: Results) -> Check:
    """The mechanism regime's own precondition: the CE members are more confident on their
    errors than the LSR members (paired over members, p < 0.05)."""
    t = M.confidence_test(results)
    if t is None:
        return condition(False, "fewer than two members make errors to compare confidence on")
    ok = t.significant() and t.estimate > 0
    return condition(ok, f"the CE members are not shown more confident on their errors than "
                         f"the LSR members ({t.describe(1, '')})",
                     f"CE members more confident on errors ({t.describe(1, '')})")


def claims(results: Results, evidence: pd.DataFrame | None = None) -> list[Claim]:
    """The paper's claims, each judged on this run (and the mechanism regime's)."""
    s, d = results.settings, results.default
    tests = T.ablation_tests(results)
    t6 = V.table6(results)
    points = 100, "points"
    shares, uniform = T.second_place_shares(d, "FAML")
    found = [
        judge("a network's wrong answers often have the true class second", "Table 1",
              _paired(shares, uniform, "networks"), expect="greater",
              requires=_learned(results, "FAML"), scale=100,
              what="points above a uniform spread"),
        judge("facial-area fusion with attention (FA) improves R18", "Table 2", tests["fa"],
              expect="greater", requires=_learned(results, "R18", "R18+FA"), scale=points[0],
              what=points[1]),
        judge("the multiple losses (ML) improve R18+FA", "Table 2", tests["ml"],
              expect="greater", requires=_learned(results, "R18+FA", "FAML"),
              scale=points[0], what=points[1]),
        judge("FGA improves the single FAML network (child against its main parent)",
              "Table 2", tests["fga_parent"], expect="greater",
              requires=_learned(results, "FAML", FGA), scale=points[0], what=points[1]),
        judge("FGA's gain comes from the fusion (child against its parent trained as long)",
              "Table 2", tests["fga_control"], expect="greater",
              requires=_learned(results, FGA, CONTROL), scale=points[0], what=points[1]),
        judge("T2V improves on the single FAML network", "Table 2", tests["t2v"],
              expect="greater", requires=_learned(results, "FAML"), scale=points[0],
              what=points[1]),
        judge("FAML-FGA-T2V beats FAML-T2V", "Table 2", tests["fga_t2v"], expect="greater",
              requires=_learned(results, "FAML", FGA), scale=points[0], what=points[1]),
        judge("accuracy rises with the number of networks", "Table 4",
              V.networks_test(results), expect="greater", requires=_learned(results, FGA),
              scale=points[0], what=points[1]),
        judge_fact("Table 3's image: T2V decides Anger", "Table 3",
                   T.table3(s).loc["T2V", "first"] == "AN",
                   f"T2V scores {T.table3(s).loc['T2V', list(T.TABLE3_CLASSES)].tolist()}"),
    ]
    basic = V.basic_networks(results)
    requires = _learned(results, *basic)
    for other, label in (("T1V", "bagging (T1V)"), ("NOI", "NOI")):
        found.append(judge(f"T2V beats {label} on the basic networks", "Table 6",
                           V.pooled_rule_test(results, other), expect="greater",
                           requires=requires, scale=points[0], what=points[1]))
    found.append(gain_claim(t6, requires))
    recall = S.recalls(d, "R18")
    hard = list(recall.index[:2])
    wanted = {"disgust", "fear"}
    found.append(judge_fact(
        "disgust and fear are R18's hardest classes", "Fig. 5 (text)", set(hard) == wanted,
        f"lowest recalls: {hard[0]} {recall.iloc[0]:.0%}, {hard[1]} {recall.iloc[1]:.0%}",
        requires=[*_learned(results, "R18"),
                  condition(wanted <= set(d.classes), "the classes lack disgust or fear")]))
    if evidence is not None:
        found.append(judge("FAML's maps lie more on expression regions than R18's", "Fig. 8",
                           S.evidence_test(evidence) if len(evidence) > 1 else None,
                           expect="greater", requires=_learned(results, "R18", "FAML"),
                           scale=1, what="of the map's mass"))
    return found + mechanism_claims(results)


def gain_claim(t6: pd.DataFrame, requires: Sequence[Check]) -> Claim:
    """Fig. 7: T2V gains less on more accurate basic networks (a rank correlation over
    them, which needs at least :data:`RHO_POINTS` of them)."""
    x, y = V.gain_points(t6)
    units = enough_units(len(x), RHO_POINTS, "basic networks")
    result = rank_correlation(x, y, min_points=RHO_POINTS) if units.ok and \
        min(len(np.unique(x)), len(np.unique(y))) >= RHO_POINTS else None
    return judge("T2V gains less on more accurate basic networks", "Fig. 7", result,
                 expect="less", requires=[*requires, units])


def mechanism_claims(results: Results) -> list[Claim]:
    """T2V's argument on the mechanism regime (Sec. 3.3): second places help where members'
    confidence misleads a softmax sum; with calibrated members they should not."""
    tests = M.mechanism_tests(results)
    requires = [*_learned(results, CE, LSR, regime="mechanism"), confidence_check(results)]
    source = "Sec. 3.3 (mechanism)"
    return [
        judge("with over-confident members T2V beats NOI", source, tests["ce_noi"],
              expect="greater", requires=requires, scale=100, what="points"),
        judge("T2V's lead over NOI comes from the members' confidence (CE against LSR "
              "members)", source, tests["mechanism"], expect="greater", requires=requires,
              scale=100, what="points"),
        judge("second places add to first places: T2V beats T1V (CE members)", source,
              tests["ce_t1v"], expect="greater", requires=requires, scale=100,
              what="points"),
        judge("with calibrated members NOI beats T2V (control)", source, tests["lsr_noi"],
              expect="less", requires=requires, scale=100, what="points"),
    ]


# ----------------------------------------------------------------------------- paper vs book

def measured(results: Results, claimed: Sequence[Claim]) -> dict[str, Any]:
    """This run's values for :func:`fernb.report.paper_vs_book` (``"faml_t2v"``): numbers for
    worked examples and accuracies, judged claims for the comparisons."""
    s, d = results.settings, results.default
    by_claim = {c.claim: c for c in claimed}
    t3 = T.table3(s)
    values: dict[str, Any] = {
        "table3_t2v_output": [float(v) for v in t3.loc["T2V", list(T.TABLE3_CLASSES)]],
        "table3_class": t3.loc["T2V", "first"]}
    ranks = T.rank_distribution(results)
    for key, model in (("r18", "R18"), ("faml", "R18+FAML")):
        row = f"{model} ({d.test.name})"
        values[f"rank_of_label_{key}"] = [float(ranks.loc[row, f"rank {k}"]) for k in (1, 2)]
    values["faml_top2"] = float(ranks.loc[f"R18+FAML ({d.test.name})", "top two"])
    values["faml_errors_rank2"] = by_claim["a network's wrong answers often have the true "
                                           "class second"]
    table2 = T.ablation(results)["accuracy (%)"]
    for row, key in (("R18", "r18_accuracy"), ("R18+FA", "r18_fa_accuracy"),
                     ("FAML", "faml_accuracy"), ("FAML-FGA", "faml_fga_accuracy"),
                     ("FAML-T2V", "faml_t2v_accuracy"),
                     ("FAML-FGA-T2V", "faml_fga_t2v_accuracy")):
        values[key] = float(table2[row])
    gains = {"fa_gain": "facial-area fusion with attention (FA) improves R18",
             "ml_gain": "the multiple losses (ML) improve R18+FA",
             "fga_gain": "FGA improves the single FAML network (child against its main "
                         "parent)",
             "t2v_gain": "T2V improves on the single FAML network",
             "fga_t2v_gain": "FAML-FGA-T2V beats FAML-T2V",
             "networks_gain": "accuracy rises with the number of networks",
             "gain_accuracy_correlation": "T2V gains less on more accurate basic networks",
             "t2v_noi_p": "T2V beats NOI on the basic networks"}
    values |= {key: by_claim[c] for key, c in gains.items()}
    curve = V.by_networks(results).loc[f"{T.name(FGA)}-T2V"].dropna()
    values |= {f"networks_{k}": float(v) for k, v in curve.items() if 2 <= k <= 6}
    t6 = V.table6(results)
    requires = _learned(results, *V.basic_networks(results))
    for row, key in T6_KEYS.items():
        if row not in t6.index:
            continue
        values[f"rules_{key}"] = [float(t6.loc[row, c]) for c in ("Origin", "T2V", "T1V",
                                                                  "NOI")]
        values[f"{key}_t2v_minus_noi"] = _row_claim(results, row, requires)
    return values


def _row_claim(results: Results, row: str, requires: Sequence[Check]) -> Claim:
    model = next(m for m in V.basic_networks(results) if T.name(m) == row)
    d, rs = results.default, T.rules(results.settings)
    from fernb.evaluate import clustered_test
    test = clustered_test(T.ensembles(d, model, rs["T2V"]), T.ensembles(d, model, rs["NOI"]))
    return judge(f"T2V beats NOI on {row}", "Table 6", test, expect="greater",
                 requires=requires, scale=100, what="points")


# ----------------------------------------------------------------------------- prose

def _verdict_count(claimed: Sequence[Claim], verdict: str) -> int:
    return sum(c.verdict == verdict for c in claimed)


def _points(test: TestResult) -> float:
    return 100 * test.estimate


def _significance(test: TestResult) -> str:
    return "significant" if test.significant() else "not significant"


def highlights(results: Results, claimed: Sequence[Claim],
               evidence: pd.DataFrame | None = None) -> dict[str, Any]:
    """Every number and sentence the chapter's prose cites, by glue name."""
    s, d, m = results.settings, results.default, results.mechanism
    out: dict[str, Any] = {}
    # -- the data and the networks
    out["n_train"] = int(d.train_counts.sum())
    out["n_test"] = len(d.labels)
    out["chance"] = 100 / len(d.classes)
    out["majority"] = 100 * d.majority
    out["majority_class"] = d.classes[int(np.bincount(d.labels).argmax())]
    out["pretrained_acc"] = (100 * float((results.pretrained["resnet18"][0][:, 0].argmax(-1)
                                         == results.pretrained["resnet18"][1]).mean())
                             if "resnet18" in results.pretrained else math.nan)
    acc = {model: 100 * float(T.networks(d, model).mean()) for model in d.models()}
    out |= {f"acc_{_key(model)}": value for model, value in acc.items()}
    checks = T.learning_checks(d)
    weakest = min(checks, key=lambda c: c.accuracy)
    out["weakest_model"] = weakest.model
    out["weakest_acc"] = 100 * weakest.accuracy
    out["learned_sentence"] = (
        "Every network of every model is above the majority class by the binomial test."
        if all(c.ok for c in checks) else
        "Not every model learned: " + "; ".join(c.reason for c in checks if not c.ok)
        + ". Claims that rest on them read \"not testable\".")
    phase = T.phase_table(d)
    stable = int(phase["phase 1 ended stable"].sum())
    total = int(phase["networks"].sum())
    out["stable_networks"] = stable
    out["all_networks"] = total
    out["phase_sentence"] = (
        f"Phase 1 ended on the stability criterion for none of the {total} networks: every "
        f"one switched to Lr_2 after max_epochs1 = {s.max_epochs1} epochs."
        if stable == 0 else
        f"Phase 1 ended on the stability criterion for {stable} of the {total} networks, "
        f"the others after max_epochs1 = {s.max_epochs1} epochs.")
    out["cam_faml"] = T.cam_layer_name(results.network("FAML", 0, 0), d.test.image_size[0])
    out["cam_r18"] = T.cam_layer_name(results.network("R18", 0, 0), d.test.image_size[0])
    # -- Table 1
    shares, uniform = T.second_place_shares(d, "FAML")
    out["faml_err2"] = 100 * float(shares.mean())
    out["uniform_err2"] = 100 * uniform
    ranks = T.rank_distribution(results)
    row = f"R18+FAML ({d.test.name})"
    out["faml_rank1"] = float(ranks.loc[row, "rank 1"])
    out["faml_rank2"] = float(ranks.loc[row, "rank 2"])
    # -- Table 2
    tests = T.ablation_tests(results)
    table2 = T.ablation(results)
    for label, key in (("FAML-T2V", "t2_faml_t2v"), ("FAML-FGA-T2V", "t2_fga_t2v")):
        out[key] = float(table2.loc[label, "accuracy (%)"])
    out["spread"] = float(table2.loc[["R18", "R18+FA", "FAML"], "sd (points)"].mean())
    for key in ("fa", "ml", "fga_control", "fga_parent", "t2v", "fga_t2v"):
        t = tests[key]
        out[f"{key}_diff"] = math.nan if t is None else _points(t)
        out[f"{key}_p"] = math.nan if t is None else t.p
    rows = d.networks.set_index(["model", "replicate", "network"])
    loss = rows["training_loss"]
    out["loss_faml"] = float(loss.loc["FAML"].mean())
    out["loss_fused"] = float(loss.loc[FGA].mean())
    out["loss_control"] = float(loss.loc[CONTROL].mean())
    out["fga_sentence"] = _fga_sentence(tests)
    # -- Table 4 and 6
    nets = V.by_networks(results).loc[f"{T.name(FGA)}-T2V"].dropna()
    out["nets_first"] = float(nets.iloc[0])
    out["nets_last"] = float(nets.iloc[-1])
    t6 = V.table6(results)
    out["t6_rows"] = len(t6)
    out["t6_t2v_noi_low"] = float(t6["T2V − NOI"].min())
    out["t6_t2v_noi_high"] = float(t6["T2V − NOI"].max())
    gains = t6[["T2V gain", "T1V gain", "NOI gain"]].to_numpy()
    out["gain_low"], out["gain_high"] = float(gains.min()), float(gains.max())
    pooled = {other: V.pooled_rule_test(results, other) for other in ("T1V", "NOI")}
    for other, t in pooled.items():
        out[f"pooled_{other.lower()}_diff"] = _points(t)
        out[f"pooled_{other.lower()}_p"] = format_p(t.p)
        out[f"pooled_{other.lower()}_significance"] = _significance(t)
    out["pooled_images"] = pooled["NOI"].n
    ties = V.ties(results)
    out["ties_low"] = float(ties["T1V ties (% of images)"].min())
    out["ties_high"] = float(ties["T1V ties (% of images)"].max())
    out["tie_frequent"] = " and ".join(ties.attrs["frequent"])
    out["tie_frequent_share"] = float(ties["tied images to the 2 most frequent classes (%)"]
                                      .mean())
    moved = ties["tie rule moves T1V (points)"]
    out["tie_moves_low"], out["tie_moves_high"] = float(moved.min()), float(moved.max())
    # -- alpha, beta
    sweep = V.sweep(results)
    ratio = min(sweep.index, key=lambda r: abs(r - s.beta / s.alpha))
    out["regime"] = V.regime_of(s)
    out["sweep_ratio"] = ratio
    out["sweep_acc"] = float(sweep.loc[ratio, "accuracy"])
    out["sweep_t1v"] = float(sweep.loc[ratio, "T1V"])
    out["sweep_noi"] = float(sweep.loc[ratio, "NOI"])
    out["sweep_same_t1v"] = float(sweep.loc[ratio, "same as T1V"])
    out["sweep_same_noi"] = float(sweep.loc[ratio, "same as NOI"])
    out["sweep_sentence"] = _sweep_sentence(sweep, ratio)
    low = [r for r in sweep.index if 0 < r * s.n_networks < 1]
    out["tiebreak_ratio"] = max(low) if low else math.nan
    out["tiebreak_same_t1v"] = float(sweep.loc[max(low), "same as T1V"]) if low else math.nan
    # -- the mechanism regime
    out["mech_test"] = len(m.labels)
    out["mech_half"] = int(m.train_counts.sum())
    out["mech_classes"] = len(m.classes)
    out["mech_majority"] = 100 * m.majority
    mt = M.mechanism_table(results)
    for model in (CE, LSR):
        k = model.lower()
        out[f"mech_{k}_acc"] = float(mt.loc[model, "member accuracy (%)"])
        out[f"mech_{k}_conf"] = float(mt.loc[model, "confidence"])
        out[f"mech_{k}_conf_err"] = float(mt.loc[model, "confidence on errors"])
        out[f"mech_{k}_spread"] = float(mt.loc[model, "confidence spread"])
        out[f"mech_{k}_err2"] = float(mt.loc[model, "errors ranked 2nd (%)"])
    mtests = M.mechanism_tests(results)
    for key, t in mtests.items():
        out[f"mech_{key}_diff"] = _points(t)
        out[f"mech_{key}_p"] = format_p(t.p)
    check = confidence_check(results)
    out["mech_precondition"] = (
        "The regime's precondition holds: " if check.ok else
        "The regime's precondition fails, so its claims read \"not testable\": ") + check.reason
    out["mech_sentence"] = _mechanism_sentence(mtests, check)
    mclaims = [c for c in claimed if c.source.startswith("Sec. 3.3")]
    out["mech_holds"] = _verdict_count(mclaims, HOLDS)
    out["mech_claims"] = len(mclaims)
    # -- Fig. 5, 8
    recall = S.recalls(d, "R18")
    out["hard_classes"] = f"{recall.index[0]} and {recall.index[1]}"
    if evidence is not None and len(evidence):
        out["evidence_images"] = len(evidence)
        out["evidence_r18"] = float(evidence["R18"].mean())
        out["evidence_faml"] = float(evidence["R18+FAML"].mean())
        out["evidence_chance"] = float(evidence["chance"].mean())
    # -- verdicts
    out["claims_total"] = len(claimed)
    out["claims_holds"] = _verdict_count(claimed, HOLDS)
    out["claims_untestable"] = _verdict_count(claimed, UNTESTABLE)
    out["claims_fails"] = len(claimed) - out["claims_holds"] - out["claims_untestable"]
    out["holding"] = "; ".join(c.claim for c in claimed if c.verdict == HOLDS) or "none"
    return out


def describe(settings: Settings) -> dict[str, Any]:
    """The two regimes' settings in words, for the prose that states them before any result
    (computed, so they stay true whatever the parameters)."""
    s = settings
    chapter = plan(s)
    train, test = chapter.networks[(DEFAULT, "R18", 0)][0].spec["faces"].load()
    mech_job = chapter.networks[(MECHANISM, CE, 0)][0]
    mech_train, mech_test = mech_job.spec["faces"].load()
    low, high = s.mechanism_intensity
    starts = ("the weights files given" if s.weights else
              f"their architecture pre-trained on {s.pretrain_subjects} synth-lab subjects")
    lab = s.mechanism_preset == "synth-lab"
    return {
        "default_regime": (
            f"{test.name} faces of {len(np.unique(train.subjects)) + len(np.unique(test.subjects))}"
            f" subjects at {s.image_size} x {s.image_size} px ({len(train)} training and "
            f"{len(test)} test images of other people), ResNets at width {s.width:g}, "
            f"{s.n_networks} networks per model in each of {s.replicates} replicate(s), all "
            f"fine-tuned from {starts}; Adam at {s.lr1:g} with cosine annealing for at most "
            f"{s.max_epochs1} epochs (phase 1 ends earlier if the training loss and accuracy "
            f"move less than {s.stable_loss:g} and {s.stable_accuracy:g} over "
            f"{s.stable_window} epochs), then {s.epochs2} epoch(s) at {s.lr2:g} with StepLR "
            f"(step {s.step_size})"),
        "mechanism_regime": (
            f"{mech_test.name} faces{' (frontal, plain background)' if lab else ''} in which "
            f"{100 * s.mechanism_blend:.0f} % of the faces blend a second emotion that shares "
            f"action units with the first (blend_pairs = \"facs\"), peak intensities from "
            f"{low:g} to {high:g} and no label noise; {s.mechanism_networks} plain R18 "
            f"members from the R18 start, member k trained on its own random half of "
            f"{s.mechanism_subjects} training subjects ({len(mech_train)} faces) for "
            f"{s.mechanism_epochs} epochs, once with plain cross-entropy (*CE*) and once, with "
            f"the same half and seed, with label smoothing at epsilon = "
            f"{s.mechanism_epsilon:g} (*LSR*); tested on {len(mech_test)} faces of "
            f"{s.mechanism_test_subjects} other people"
            f"{', one per sequence' if lab else ''}"),
        "mech_test_faces": len(mech_test),
        "p_lsr": s.p_lsr,
    }


def elapsed(started: float) -> dict[str, float]:
    """The chapter's run time so far (minutes), from ``time.perf_counter()`` at its start."""
    import time
    return {"minutes": (time.perf_counter() - started) / 60}


def _key(model: str) -> str:
    return {"R18+FA": "fa", FGA: "fga", CONTROL: "control"}.get(model, model.lower())


def _fga_sentence(tests: Mapping[str, TestResult | None]) -> str:
    parent, control = tests["fga_parent"], tests["fga_control"]
    if parent is None or control is None:
        return "There are too few fused children for a test."
    return (f"Against its main parent a fused child differs by {_points(parent):+.2f} points "
            f"({_significance(parent)}, p = {format_p(parent.p)}); against the same parent "
            f"trained as long without fusion by {_points(control):+.2f} points "
            f"({_significance(control)}, p = {format_p(control.p)}).")


def _sweep_sentence(sweep: pd.DataFrame, ratio: float) -> str:
    best = sweep["accuracy"].idxmax()
    return (f"The most accurate ratio of the sweep is {best:g} "
            f"({sweep.loc[best, 'accuracy']:.1f} %), against {sweep.loc[ratio, 'accuracy']:.1f}"
            f" % at the paper's; at 0, T2V is T1V ({sweep.loc[0.0, 'accuracy']:.1f} %).")


def _mechanism_sentence(tests: Mapping[str, TestResult], check: Check) -> str:
    ce, lsr, mech = tests["ce_noi"], tests["lsr_noi"], tests["mechanism"]
    text = (f"With the CE members T2V is {_points(ce):+.2f} points against NOI "
            f"({_significance(ce)}), with the LSR members {_points(lsr):+.2f} "
            f"({_significance(lsr)}); the difference between the two, the mechanism, is "
            f"{_points(mech):+.2f} points ({_significance(mech)}, p = {format_p(mech.p)}).")
    if not check.ok:
        text += " The members' confidence did not differ as the regime needs, so none of " \
                "this is evidence either way."
    return text
