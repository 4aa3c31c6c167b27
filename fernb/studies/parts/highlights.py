"""Every number and sentence chapter 3's prose cites, computed from the run
(:func:`highlights`), so that no notebook cell chooses a sentence and every sentence about a
result stays true when the chapter is rerun with other parameters."""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from fernb.evaluate import format_p
from fernb.models.parts import ENSEMBLE_PARTS
from fernb.report import format_value
from fernb.studies.parts.claims import PAPER_ORDER, best_part
from fernb.studies.parts.protocol import KIND_NAMES, curve_kinds
from fernb.studies.parts.results import Results
from fernb.studies.parts.settings import held_out_subjects, pool_val_subjects
from fernb.studies.parts.tables import accuracies, curve_table, majority, rate_table, \
    travel_table
from fernb.verdicts import HOLDS, UNTESTABLE, Claim, Learning


def _pct(value: float) -> str:
    return f"{value:.1f}"


def _join(items: Sequence[str], last: str = "and") -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {last} {items[-1]}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def settings_sentences(results: Results) -> dict[str, str]:
    """The two regimes' settings, as the chapter states them before the results."""
    s = results.settings
    plan = results.plan
    lab, wild, pool = plan.lab.load(), plan.wild.load(), plan.pool.load()
    trials = _join([str(t) for t in s.trials])
    default = (
        f"{s.dataset} ({len(np.unique(lab.subjects))} subjects, {len(lab)} faces) for the "
        f"lab set and {s.wild_dataset} ({len(wild)} faces) in the wild, at "
        f"{s.image_size}x{s.image_size} px and width {s.width:g}; "
        f"trial{'s' if len(s.trials) > 1 else ''} {trials} of {s.n_folds} "
        f"subject-independent folds; "
        f"{_plural(s.n_networks, 'network')} in the Baseline and FTL ensembles and EL's "
        f"five; at most {_plural(s.direct_epochs, 'epoch')} for the Baseline, "
        f"{s.landmark_epochs} of landmarks, {s.head_epochs} for the head and "
        f"{s.finetune_epochs} of fine-tuning "
        f"(in the wild {s.wild_direct_epochs}, {s.wild_landmark_epochs}, {s.head_epochs} and "
        f"{s.wild_finetune_epochs}), each epoch about {s.epoch_images} images and every "
        f"stage stopped {s.patience} epochs ({s.head_patience} for the head) after its best "
        + ("validation loss" if s.stop_on == "loss" else
           "validation accuracy (stage 1: its loss)")
        + f"; synthetic expressions moving their landmarks {s.motion:g} times as far as the "
        f"generator's default; stage 2's features "
        + ("standardised" if s.standardize else "as the extractor gives them (the paper's "
                                                 "network, no standardisation)"))
    candidates = s.n_subjects - held_out_subjects(s.n_subjects, s.n_folds)
    test = plan.mechanism_split["test"]
    pool_ids = np.unique(pool.subjects)
    el_on_curve = "el" in curve_kinds(s)
    mechanism = (
        f"a landmark pool of {len(pool_ids)} other synth-lab subjects, every frame of their "
        f"sequences ({len(pool)} faces, landmarks only; "
        f"{_plural(pool_val_subjects(len(pool_ids)), 'subject')} of them for stage 1's "
        f"early stopping, {_plural(s.pool_epochs, 'epoch')} at most); labelled sets of "
        f"{_join([str(n) for n in sorted(s.curve)])} subjects drawn, each inside the "
        f"next, from the {candidates} synth-lab subjects outside the test and validation "
        f"folds ({_plural(len(s.curve_seeds), 'draw')}); at every point "
        f"{_plural(s.curve_networks, 'network')} of each of Baseline, FTL and control"
        + (" and EL's five" if el_on_curve else "")
        + f", tested on the {len(test)} faces of the "
        f"{len(np.unique(test.load().subjects))} held-out subjects"
        + ("" if el_on_curve else
           f" (EL, five part networks, joins the curve when curve_networks is "
           f"{len(ENSEMBLE_PARTS)}, as in the gpu and paper profiles: five networks against "
           f"one would compare ensemble sizes, not kinds)"))
    return {"default_settings": default, "mechanism_settings": mechanism}


def rate_sentences(results: Results) -> dict[str, object]:
    """How the fine-tuning rate was chosen, and how far the weights moved."""
    summary = results.rate.record["summary"]
    rates = rate_table(results)
    out: dict[str, object] = {"ft_rate": format_value(summary["rate"], ".2g"),
                              "ft_target": 100 * summary["target"],
                              "stage1_travel": 100 * summary["stage1_travel"],
                              "share": results.settings.finetune_share}
    if rates["travel (%)"].notna().all():
        measured = _join([f"{format_value(100 * t, '.1f')}% at {lr:g}"
                          for lr, t in (rates["travel (%)"] / 100).items()])
        out["rate_reading"] = (
            f"Fine-tuned for its {results.settings.finetune_epochs} epochs, the first FTL "
            f"network of the lab set moved its kernels by {measured}; stage 1 had moved them "
            f"by {100 * summary['stage1_travel']:.0f}%. The rate that moves them "
            f"{results.settings.finetune_share:g} of that, {100 * summary['target']:.1f}%, is "
            f"{summary['rate']:.2g} (interpolated between the measured rates)")
    else:
        out["rate_reading"] = (f"This run fine-tunes at the one rate it was given, "
                               f"{summary['rate']:.2g}, without measuring others")
    travel = travel_table(results)
    lab = travel.sort_index().xs(("default", f"lab-t{results.settings.trials[0]}"))
    out["travel_reading"] = (
        f"On the lab set stage 1 moved the FTL networks' kernels by "
        f"{lab.at['FTL', 'stage 1 (%)']:.0f}% of their size and EL's by "
        f"{lab.at['EL', 'stage 1 (%)']:.0f}%; fine-tuning then moved them by "
        f"{lab.at['FTL', 'expressions (%)']:.1f}% and {lab.at['EL', 'expressions (%)']:.1f}%, "
        f"while direct training moved the Baseline's by "
        f"{lab.at['Baseline', 'expressions (%)']:.0f}%")
    return out


def _learning_phrase(check: Learning) -> str:
    verb = "learned" if check.ok else "did not learn"
    return (f"{check.model} {verb} ({100 * check.accuracy:.1f}% against the majority "
            f"class's {100 * check.majority:.1f}%, p = {format_p(check.p)})")


def learning_sentences(checks: Sequence[Learning], curve: Sequence[Learning]
                       ) -> dict[str, str]:
    """Which models learned, in words."""
    failed = [c.model for c in checks if not c.ok]
    heads = [c for c in checks if "stage 2" in c.model]
    curve_failed = [c.model for c in curve if not c.ok]
    return {
        "learned_reading": (
            f"All {len(checks)} models of the default regime learned" if not failed else
            f"{len(checks) - len(failed)} of the {len(checks)} models of the default regime "
            f"learned; {_listed(failed)} did not, and every claim resting on them reads "
            f"\"not testable\""),
        "stage2_reading": "; ".join(_learning_phrase(c) for c in heads),
        "curve_learned_reading": (
            f"All {len(curve)} models of the learning curve learned" if not curve_failed
            else f"{len(curve) - len(curve_failed)} of the {len(curve)} models of the "
                 f"learning curve learned; {_listed(curve_failed)} did not"),
    }


def _verdict_phrase(claim: Claim) -> str:
    """The verdict and its reason; of several failed preconditions, the first and how many
    more (the claims table has them all)."""
    reasons = claim.reason.split("; ") if claim.verdict == UNTESTABLE else [claim.reason]
    more = f", and {len(reasons) - 1} more" if len(reasons) > 1 else ""
    return f"\"{claim.verdict}\" ({reasons[0]}{more})"


def _listed(items: Sequence[str], most: int = 4) -> str:
    items = list(items)
    if len(items) <= most:
        return _join(items)
    return f"{', '.join(items[:most])} and {len(items) - most} more"


def table1_sentences(results: Results, names: Mapping[str, str],
                     judged: Mapping[str, Claim]) -> dict[str, object]:
    """Table I in words: each comparison with its verdict, the parts' order."""
    out: dict[str, object] = {}
    for protocol in ("lab", "wild"):
        m = accuracies(results, protocol)
        order = sorted(ENSEMBLE_PARTS, key=lambda p: -m[p])
        out[f"{protocol}_reading"] = (
            f"Baseline {_pct(m['Baseline'])}%, FTL {_pct(m['FTL'])}%, EL {_pct(m['EL'])}%; "
            f"FTL against the Baseline: "
            f"{_verdict_phrase(judged[f'{protocol}_ftl_minus_baseline'])}; EL against FTL: "
            f"{_verdict_phrase(judged[f'{protocol}_el_minus_ftl'])}")
        out[f"{protocol}_part_order"] = _join(
            [f"{p} {_pct(m[p])}%" for p in order], "then")
        out[f"{protocol}_best_part"] = best_part(results, protocol)
    return out


def curve_sentences(results: Results, verdicts: pd.DataFrame) -> dict[str, str]:
    """Where, if anywhere, FTL and EL beat the Baseline and the control."""
    table = curve_table(results)
    holds = verdicts[verdicts["verdict"] == HOLDS]
    phrases = []
    for comparison, rows in verdicts.groupby(level="comparison", sort=False):
        won = [str(n) for (n, _) in rows.index if (n, comparison) in holds.index]
        untestable = [str(n) for (n, _), v in rows["verdict"].items() if v == "not testable"]
        text = (f"{comparison} at {_join(won)} labelled subjects" if won else
                f"{comparison} at no point")
        if untestable:
            text += f" (not testable at {_join(untestable)})"
        phrases.append(text)
    smallest, largest = table.index.min(), table.index.max()
    others = [KIND_NAMES[k] for k in curve_kinds(results.settings) if k != "baseline"]
    first, last = table.loc[smallest], table.loc[largest]
    named = _join([f"{'the ' if k == 'control' else ''}{k} {_pct(first[k])}%" for k in others])
    return {
        "curve_reading": "; ".join(phrases),
        "curve_smallest": (
            f"With {_plural(smallest, 'labelled subject')} the Baseline reaches "
            f"{_pct(first['Baseline'])}%, {named} (majority class "
            f"{_pct(first['majority class'])}%); with {largest}, "
            + _join([f"{_pct(last[k])}%" for k in ["Baseline", *others]])),
    }


def displacement_sentences(shifts: pd.DataFrame) -> dict[str, object]:
    """What the displacement table shows, read from it."""
    emotions = shifts.drop(index="neutral (floor)")
    mean = emotions.mean().sort_values(ascending=False)
    floor = float(shifts.loc["neutral (floor)"].max())
    movers = {p: emotions[p][emotions[p] > max(2 * floor, 0.1)].sort_values(
        ascending=False) for p in ENSEMBLE_PARTS}
    parts = []
    for p in ENSEMBLE_PARTS:
        top = movers[p].index[:3]
        parts.append(f"the {p} by {_join(list(top))}" if len(top) else
                     f"the {p} by none of them")
    return {"displacement_order": _join([f"{p} {mean[p]:.2f} px" for p in mean.index],
                                        "then"),
            "displacement_floor": floor,
            "displacement_movers": "; ".join(parts)}


def probe_sentences(probe: pd.DataFrame, shifts: pd.DataFrame | None,
                    judged: Mapping[str, Claim]) -> dict[str, object]:
    """The probe's reading: the parts' order and how well the localisers see."""
    truth = probe.loc[list(ENSEMBLE_PARTS), "true landmarks (%)"].sort_values(ascending=False)
    error = float(probe["localisation error (px)"].mean())
    out: dict[str, object] = {
        "probe_order": _join([f"{p} {v:.1f}%" for p, v in truth.items()], "then"),
        "probe_full_true": float(probe.at["full", "true landmarks (%)"]),
        "probe_full_predicted": float(probe.at["full", "predicted landmarks (%)"]),
        "loc_error": error, "probe_verdict": _verdict_phrase(judged["probe_order"])}
    if shifts is not None and len(shifts):
        shift = float(shifts.drop(index="neutral (floor)").to_numpy().mean())
        out["shift_px"] = shift
        out["precision_reading"] = (
            f"localise with a mean error of {error:.2f} px, "
            f"{'less' if error < shift else 'more'} than the {shift:.2f} px an expression "
            f"moves a part's points on average")
    return out


def wild_probe_sentences(results: Results, probe: pd.DataFrame) -> dict[str, str]:
    """The probe on the wild set in words: what the true and the predicted 68 points tell,
    against the wild test faces' majority class, and how far off the localisers are."""
    data, split = results.plan.wild.load(), results.plan.wild_split
    rate = 100 * majority(data.labels[split.test])
    return {"wild_probe_reading": (
        f"with all 68 points the probe reads the expression of {len(split.test)} {data.name} "
        f"test faces at {probe.at['full', 'true landmarks (%)']:.1f}% from their true "
        f"landmarks and at {probe.at['full', 'predicted landmarks (%)']:.1f}% from those the "
        f"first FTL network's stage 1 predicts (majority class {rate:.1f}%); the wild "
        f"localisers' mean error is {probe['localisation error (px)'].mean():.2f} px")}


def vb_sentences(errors: pd.DataFrame, judged: Mapping[str, Claim]) -> dict[str, str]:
    """Sec. V-B in words: how each EL part network's error changed, and the verdicts."""
    el = errors.loc[[i for i in errors.index if i[0].startswith("EL ")]]
    changes = _join([f"{part} {row['before (px)']:.2f} to {row['after (px)']:.2f} px "
                     f"({row['change (%)']:+.0f}%)" for (_, part), row in el.iterrows()])
    return {"vb_changes": changes,
            "vb_verdicts": "; ".join(f"{judged[k].claim}: {_verdict_phrase(judged[k])}"
                                     for k in ("vb_mouth", "vb_eyes", "vb_nose"))}


def summary_sentences(results: Results, names: Mapping[str, str],
                      judged: Mapping[str, Claim]) -> dict[str, str]:
    return {"cross_reading": "; ".join(
        f"{judged[k].claim}: {_verdict_phrase(judged[k])}"
        for k in ("cross_ftl_minus_baseline", "cross_el_minus_ftl")),
        "gradcam_reading": "; ".join(
            f"{judged[k].claim}: {_verdict_phrase(judged[k])}"
            for k in ("own_part", "expression_evidence")),
        "el_parts_reading": (
            f"{judged['sfew_el_gain_over_parts_mean'].claim} in the wild: "
            f"{_verdict_phrase(judged['sfew_el_gain_over_parts_mean'])}; "
            f"{judged['lab_el_minus_best_part'].claim}: "
            f"{_verdict_phrase(judged['lab_el_minus_best_part'])}")}


def paper_vs_book_sentences(table: pd.DataFrame) -> dict[str, object]:
    """How many of the paper's arithmetic figures this book reproduces, and which not."""
    exact = table[table["verdict"].isin(["exact", "differs"])]
    differs = [q for (_, q) in exact.index[exact["verdict"] == "differs"]]
    return {"n_arithmetic": len(exact), "n_exact": int((exact["verdict"] == "exact").sum()),
            "n_differs": len(differs), "differs_list": "; ".join(differs)}


def minutes(started: float) -> dict[str, float]:
    """The chapter's run time so far, in minutes (from ``time.perf_counter()``)."""
    return {"minutes": (time.perf_counter() - started) / 60}


def feature_sentences(results: Results) -> dict[str, float]:
    """How much the first lab FTL network's stage-1 features vary between the training
    faces: the mean over features of their standard deviation, and of their mean (what the
    head of stage 2 sees before standardisation)."""
    from fernb.studies.parts.analysis import network
    from fernb.transfer import extract_features, inputs
    net = results.networks("default", f"lab-t{results.settings.trials[0]}", "ftl")[0]
    features = extract_features(network(results, net, "stage1"),
                                inputs(net.job.spec["train"].load()))
    return {"feature_sd": float(features.std(0).mean()),
            "feature_mean": float(features.mean(0).mean())}


def mechanism_sentences(results: Results, curve: Sequence[Learning]) -> dict[str, object]:
    """What the learning curve's control and FTL show, and how well the pool-trained
    localiser sees the held-out faces (its mean error over the 68 points, pixels)."""
    from fernb.studies.parts.analysis import network
    from fernb.transfer import image_errors
    points = sorted(results.settings.curve)

    def where(prefix: str) -> list[str]:
        return [str(n) for n in points
                if all(c.ok for c in curve if c.model.startswith(f"{prefix} at {n} subject"))]

    control, ftl, head = where("control"), where("FTL"), where("FTL stage 2")
    net = results.networks("mechanism", str(points[0]), "ftl",
                           results.settings.curve_seeds[0])[0]
    test = results.plan.mechanism_split["test"].load()
    error = float(image_errors(network(results, net, "stage1"), test)["full"].mean()
                  * results.settings.image_size)
    return {
        "pool_loc_error": error,
        "control_reading": (
            f"The control learned at {_join(control)} labelled subjects" if control else
            "The control never rose above the majority class: random features, which "
            "fine-tuning at the chosen rate barely moves, carry no expression a head can "
            "read") + "; " + (
            f"FTL learned at {_join(ftl)} labelled subjects" if ftl else
            "FTL learned at no point") + (
            f" and its stage-2 head on the pool-trained features at {_join(head)}" if head
            else ", its stage-2 head at no point")}
