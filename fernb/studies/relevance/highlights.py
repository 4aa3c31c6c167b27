"""Every number and sentence the chapter's prose cites, computed from the run, so that no
sentence of the page can contradict the run it shows (:meth:`fernb.report.Report.glue_all`).

Numbers stay numbers (the report formats them); a sentence that depends on the run is chosen
here, never in a notebook cell.
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from fernb.report import MISSING
from fernb.verdicts import FAILS, HOLDS, UNTESTABLE, Claim

from .claims import (beats_baseline, every_variant_beats_baseline, lambda_claims,
                     mechanism_claims, on_evidence, takes_shortcut, transfer_claim, wrinkles)
from .data import Prepared
from .protocol import Results
from .settings import LABELS
from .tables import (contiguity_gradient_at_start, fold_scores, learning_checks, majority,
                     map_scores, map_statistics, mechanism_table)

VERDICT_WORDS = {HOLDS: "holds", FAILS: "does not hold", UNTESTABLE: "is not testable"}


def run_time(started: float) -> dict[str, Any]:
    """The chapter's wall time in minutes since ``started`` (``time.perf_counter()``)."""
    return {"minutes": round((time.perf_counter() - started) / 60, 1)}


def _pct(x: float) -> float:
    return round(100 * float(x), 1)


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _verdict(claim: Claim) -> str:
    return VERDICT_WORDS[claim.verdict]


def _history(results: Results, key: str) -> Any:
    return results.histories[key].set_index("epoch")


def training(results: Results) -> dict[str, Any]:
    """How far the default regime's models trained: the baseline's training and validation
    accuracy at its kept epoch, and whether the kept epochs were the last ones."""
    s = results.settings
    out: dict[str, Any] = {"majority_share": _pct(majority(results))}
    rows = results.select("default")
    last = int((rows["best_epoch"] == rows["epochs_run"]).sum())
    out["n_runs"] = len(rows)
    out["n_kept_last"] = last
    out["kept_last_sentence"] = (
        "every model kept its last epoch: the validation cross-entropy was still falling "
        "when training stopped, so longer training may change the comparison"
        if last == len(rows) else
        "no model kept its last epoch: every validation cross-entropy had reached its "
        "lowest value before training stopped" if last == 0 else
        f"{_count(last, 'model')} of {len(rows)} kept the last epoch (their validation "
        f"cross-entropy was still falling), the others an earlier one")
    base = rows[rows["variant"] == "baseline"]
    if len(base):
        train, val = [], []
        for r in base.itertuples():
            h = _history(results, r.key)
            train.append(h.loc[r.best_epoch, "train_acc_ens"])
            val.append(h.loc[r.best_epoch, "val_acc_ens"])
        out["baseline_train_acc"] = _pct(np.mean(train))
        out["baseline_val_acc"] = _pct(np.mean(val))
        out["baseline_best_epochs"] = ", ".join(str(int(e)) for e in base["best_epoch"])
    out["epochs"] = s.epochs
    return out


def accuracies(results: Results) -> dict[str, Any]:
    """Tables 4-5 in words: the most accurate model, how many proposed variants beat the
    baseline on average, and how many do so significantly."""
    acc = {v: 100 * fold_scores(results, "default", v).mean()
           for v in results.variants("default")}
    best = max(acc, key=acc.get)
    proposed = [v for v in acc if v != "baseline"]
    claims = {v: beats_baseline(results, v) for v in proposed}
    held = [v for v, c in claims.items() if c.verdict == HOLDS]
    untestable = [v for v, c in claims.items() if c.verdict == UNTESTABLE]
    every = every_variant_beats_baseline(results)
    better = sum(acc[v] > acc["baseline"] for v in proposed)
    leader = (f"The baseline CNN is the most accurate model of this run ({acc[best]:.1f} %)"
              if best == "baseline" else
              f"The most accurate model of this run is the {LABELS[best]} ({acc[best]:.1f} %, "
              f"the baseline {acc['baseline']:.1f} %)")
    leader += (f"; {better} of the {len(proposed)} proposed variants "
               f"{'is' if better == 1 else 'are'} more accurate than the baseline on average")
    if untestable:
        tested = (f"the comparison with the baseline is not testable for "
                  f"{', '.join(LABELS[v] for v in untestable)}: a compared model did not "
                  f"learn, or there are too few folds (see the claims table)")
    elif held:
        tested = (f"{len(held)} ({', '.join(LABELS[v] for v in held)}) "
                  f"{'is' if len(held) == 1 else 'are'} significantly more accurate than the "
                  f"baseline by a paired t-test over folds")
    else:
        tested = ("none is significantly more accurate than the baseline by a paired t-test "
                  "over folds")
    return {"accuracy_sentence": f"{leader}, and {tested}.",
            "every_variant_verdict": _verdict(every)}


def gates(results: Results, prep: Prepared) -> dict[str, Any]:
    """The two readings of eq. (1): how much a literal gate shaped like the targets shrinks
    the features, and on the first fold, epochs at or below the majority-class rate on
    validation faces and the validation accuracy at the kept epoch under each reading."""
    s = results.settings
    other = "literal" if s.gate == "mean" else "mean"
    out: dict[str, Any] = {"gate": s.gate, "other_gate": other}
    if prep.maps is not None:
        mean = float(prep.maps.mean())
        out["target_mean"] = round(mean, 2)
        out["literal_shrink"] = round(1 / mean ** s.n_eblocks)
    floor = majority(results)
    out["gate_sentence"] = (f"No variant was trained with the {other} gate "
                            f"(gate_contrast = []).")
    for row in results.select("gate").itertuples():
        main = results.select("default", row.variant)
        if main.empty:
            continue
        stuck, val = {}, {}
        for name, key, best in ((s.gate, main["key"].iloc[0], main["best_epoch"].iloc[0]),
                                (other, row.key, row.best_epoch)):
            h = _history(results, key)
            stuck[name] = int((h["val_acc_ens"] <= floor + 1e-9).sum())
            val[name] = _pct(h.loc[best, "val_acc_ens"])
        out["gate_sentence"] = (
            f"On the first fold, the {LABELS[row.variant]} network spends "
            f"{_count(stuck[other], 'epoch')} of {len(_history(results, row.key))} at or below "
            f"the majority-class rate ({_pct(floor)} %) on its validation subjects with the "
            f"{other} gate, and {_count(stuck[s.gate], 'epoch')} with the {s.gate} gate; at its "
            f"kept epoch it reaches {val[other]} % with the {other} gate and {val[s.gate]} % "
            f"with the {s.gate} gate (validation accuracy).")
        break
    return out


def maps(results: Results, prep: Prepared) -> dict[str, Any]:
    """The maps in numbers: error to the targets against the best constant map, spread
    within and between faces, the contiguity-only map, and the lambda claims' verdicts."""
    out: dict[str, Any] = {"contiguity_start_gradient": contiguity_gradient_at_start(
        results.settings)}
    stats = map_statistics(results, prep)
    if stats.empty:
        return out
    const_row = "Best constant map (the targets' mean)"
    out |= _by_variant(stats, ("fully", "weakly", "contiguity", "hybrid"), {
        "map_error": "error to targets (eq. 4)", "map_within": "spread within a face",
        "map_between": "spread between faces", "map_peak": "peak area"})
    if const_row in stats.index:
        out["constant_map_error"] = stats.loc[const_row, "error to targets (eq. 4)"]
        out["target_within"] = stats.loc["Landmark targets (eq. 4)", "spread within a face"]
        out["target_between"] = stats.loc["Landmark targets (eq. 4)", "spread between faces"]
    if "fully_map_error" in out and "constant_map_error" in out:
        better = out["fully_map_error"] < out["constant_map_error"]
        out["fully_map_sentence"] = (
            "closer to the targets than the best constant map, so it learned where the "
            "landmarks are" if better else
            "no closer to the targets than the best constant map: it has not learned where "
            "the landmarks are")
    if "contiguity_map_within" in out:
        others = [out[f"{v}_map_within"] for v in ("fully", "weakly", "hybrid")
                  if f"{v}_map_within" in out]
        flat = out["contiguity_map_within"] < min(others) if others else False
        out["contiguity_sentence"] = (
            "its map is the flattest of all (the smallest spread within a face)" if flat else
            "its map still varies within a face as much as another variant's: the "
            "cross-entropy, not eq. 7, shaped it")
    for claim, name in zip(lambda_claims(results), ("fig9", "fig10_sparse", "fig10_defined")):
        out[f"{name}_verdict"] = _verdict(claim)
    return out


def _by_variant(table: pd.DataFrame, variants: Sequence[str], columns: Mapping[str, str]
                ) -> dict[str, Any]:
    """``{variant}_{key}``: the value of ``columns[key]`` in each variant's row of ``table``
    (variants without a row are left out)."""
    return {f"{variant}_{key}": table.loc[LABELS[variant], column]
            for variant in variants if LABELS[variant] in table.index
            for key, column in columns.items()}


def evidence(results: Results, prep: Prepared) -> dict[str, Any]:
    """The evidence scores the prose cites (fractions), and the verdicts of the map claims."""
    out: dict[str, Any] = {}
    if prep.masks is None:
        return out
    table = map_scores(results, prep)
    chance = table.loc["Chance (uniform map)", "x_hat evidence"]
    out["chance"] = chance
    out |= _by_variant(table, ("fully", "weakly", "hybrid", "baseline"), {
        "evidence": "x_hat evidence", "away": "x_hat away from landmarks",
        "cam_before": "Grad-CAM before pointing", "cam_after": "Grad-CAM after pointing"})
    for variant in ("fully", "weakly"):
        if variant in results.variants("default"):
            out[f"{variant}_on_evidence_verdict"] = _verdict(on_evidence(results, variant))
    out["wrinkles_verdict"] = _verdict(wrinkles(results))
    return out


def mechanism(results: Results, prep: Prepared | None) -> dict[str, Any]:
    """The mechanism regime in numbers and words."""
    if not results.variants("mechanism"):
        return {"mechanism_sentence": "The mechanism regime was not run "
                                      "(mechanism_variants = [])."}
    table = mechanism_table(results)
    out: dict[str, Any] = {}
    for variant in results.variants("mechanism"):
        label = LABELS[variant]
        out[f"mech_{variant}_independent"] = table.loc[label, "accuracy, cue independent (%)"]
        out[f"mech_{variant}_misleading"] = table.loc[label, "accuracy, cue misleading (%)"]
        out[f"mech_{variant}_trained"] = table.loc[label, "accuracy, cue as in training (%)"]
        out[f"mech_{variant}_follows"] = table.loc[label, "follows a misleading cue (%)"]
        if variant != "baseline":
            out[f"mech_{variant}_map_cue"] = table.loc[label, "x_hat mass on the cue"]
    out["cue_patch_share"] = float(table["cue patch's share of the image"].iloc[0])
    shortcut = takes_shortcut(results)
    out["shortcut_verdict"] = _verdict(shortcut)
    claims = mechanism_claims(results, prep)[1:]
    held = [c.claim.split(":")[0] for c in claims if c.verdict == HOLDS]
    untestable = [c for c in claims if c.verdict == UNTESTABLE]
    if shortcut.verdict != HOLDS:
        sentence = ("The baseline does not rely on the cue, so this run cannot say whether a "
                    "prior removes it.")
    elif held:
        sentence = (f"Of the {len(claims)} comparisons in the claims table, "
                    f"{len(held)} {'holds' if len(held) == 1 else 'hold'}: "
                    f"{'; '.join(held)} (a significantly higher accuracy when the cue misleads).")
    else:
        sentence = (f"None of the {len(claims)} comparisons in the claims table finds a variant "
                    f"significantly more accurate than its rival when the cue misleads.")
    if untestable and shortcut.verdict == HOLDS:
        verb = "is" if len(untestable) == 1 else "are"
        sentence += (f" {_count(len(untestable), 'comparison')} {verb} not testable "
                     f"(see the table).")
    out["mechanism_sentence"] = sentence
    if "mech_fully_map_cue" in out:
        out["prior_map_sentence"] = (
            "puts less of its mass on the cue patch than a uniform map would"
            if out["mech_fully_map_cue"] < out["cue_patch_share"] else
            "puts at least as much of its mass on the cue patch as a uniform map would, "
            "although the landmark targets are zero there")
    return out


def transfer(results: Results) -> dict[str, Any]:
    """Table 6 in words: the target's majority class, the best model, whether they learned
    and the claim's verdict."""
    if not results.variants("transfer"):
        return {"transfer_sentence": "This run did not run Table 6 (wild_variants = [])."}
    checks = learning_checks(results, "transfer")
    accs = {v: 100 * fold_scores(results, "transfer", v).mean()
            for v in results.variants("transfer")}
    failed = [v for v, c in checks.items() if not c.ok]
    claim = transfer_claim(results)
    numbers = (f"On the target faces the most frequent class is "
               f"{_pct(majority(results, 'transfer'))} % of the images and the best model "
               f"reaches {round(max(accs.values()), 1)} %. ")
    verdict = (f"Every fine-tuned model learned (above the majority class), and the claim "
               f"{_verdict(claim)}." if not failed else
               f"{_count(len(failed), 'fine-tuned model')} did not learn (not above the "
               f"majority class), so the claim is not testable: these networks have not learned "
               f"the in-the-wild faces at this budget.")
    return {"transfer_sentence": numbers + verdict}


# Every value the prose cites; a value this run cannot give (a variant not run, no landmarks)
# shows as the report's missing-value symbol.
CITED = (
    "majority_share", "kept_last_sentence", "baseline_train_acc", "baseline_val_acc",
    "baseline_best_epochs", "accuracy_sentence", "every_variant_verdict", "target_mean",
    "literal_shrink", "gate_sentence", "contiguity_start_gradient", "fully_map_error",
    "constant_map_error", "fully_map_sentence", "fully_map_within", "target_within",
    "fully_map_between", "target_between", "contiguity_map_within", "contiguity_sentence",
    "fig9_verdict", "fig10_sparse_verdict", "fig10_defined_verdict", "fully_evidence",
    "weakly_evidence", "chance", "fully_on_evidence_verdict", "weakly_on_evidence_verdict",
    "hybrid_cam_before", "baseline_cam_before", "hybrid_cam_after", "weakly_away",
    "fully_away", "wrinkles_verdict", "mech_baseline_trained", "mech_baseline_independent",
    "mech_baseline_misleading", "shortcut_verdict", "mech_fully_independent",
    "mech_fully_misleading", "mech_unguided_independent", "mech_unguided_misleading",
    "mechanism_sentence", "prior_map_sentence", "mech_fully_map_cue", "cue_patch_share",
    "mech_unguided_map_cue", "transfer_sentence",
    "border_outside_peak", "border_moved_peak")


def highlights(results: Results, prep: Prepared, *, border: dict[str, float] | None = None
               ) -> dict[str, Any]:
    """Every value the chapter's prose cites (``report.glue_all``): each of :data:`CITED`,
    the report's missing-value symbol where this run cannot give it."""
    out: dict[str, Any] = {}
    out |= training(results)
    out |= accuracies(results)
    out |= gates(results, prep)
    out |= maps(results, prep)
    out |= evidence(results, prep)
    out |= mechanism(results, prep)
    out |= transfer(results)
    if border:
        out["border_outside_peak"] = border["outside_peak"]
        out["border_moved_peak"] = border["moved_peak"]
    for key in CITED:
        out.setdefault(key, MISSING)
    return {k: (float(v) if isinstance(v, (np.floating,)) else v) for k, v in out.items()}
