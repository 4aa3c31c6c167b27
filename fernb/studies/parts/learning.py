"""Did every model of chapter 3 learn? The training curves of each stage (stage 1's
landmark regression, the heads, fine-tuning, direct training) and the tests of every
compared model against the majority class (:func:`fernb.verdicts.learned`)."""
from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from fernb.ensemble import SoftmaxSum
from fernb.studies.parts.protocol import KIND_NAMES, curve_kinds, subjects
from fernb.studies.parts.results import Results
from fernb.studies.parts.tables import COLUMNS, column_logits, logits, majority, places
from fernb.verdicts import Learning, learned


def default_histories(results: Results, protocol: str = "lab"
                      ) -> dict[str, list[pd.DataFrame]]:
    """The default regime's expression training curves on the lab set (or the wild set):
    the Baseline's, and FTL's and EL's stage 2 and stage 3, one history per network."""
    out: dict[str, list[pd.DataFrame]] = {}
    for where in places(results)[protocol]:
        for net in results.networks("default", where, "baseline"):
            out.setdefault("Baseline", []).append(results.entry(net).frame("history"))
        for kind in ("ftl", "el"):
            for net in results.networks("default", where, kind):
                entry = results.entry(net)
                out.setdefault(f"{KIND_NAMES[kind]} stage 2", []).append(
                    entry.frame("head_history"))
                out.setdefault(f"{KIND_NAMES[kind]} stage 3", []).append(
                    entry.frame("history"))
    return out


def landmark_histories(results: Results) -> dict[str, list[pd.DataFrame]]:
    """Stage 1's curves (L1 loss and RMSE of the normalised coordinates): FTL's and EL's
    networks on the lab trials, and on the landmark pool of the mechanism regime."""
    out: dict[str, list[pd.DataFrame]] = {}
    seen = set()
    for regime, where, name in [("default", w, "lab") for w in places(results)["lab"]] + \
            [("mechanism", str(min(results.settings.curve)), "pool")]:
        for kind in ("ftl", "el"):
            for net in results.networks(regime, where, kind):
                if net.stage1.key in seen:
                    continue
                seen.add(net.stage1.key)
                out.setdefault(f"{KIND_NAMES[kind]}, {name}", []).append(
                    results.stage1(net).frame("history"))
    return out


def curve_histories(results: Results, n: int) -> dict[str, list[pd.DataFrame]]:
    """The mechanism regime's expression curves at ``n`` labelled subjects: the Baseline's,
    and the fine-tuning of the control, FTL and EL."""
    out: dict[str, list[pd.DataFrame]] = {}
    for kind in curve_kinds(results.settings):
        for net in results.networks("mechanism", str(n), kind):
            out.setdefault(f"{KIND_NAMES[kind]}, {subjects(n)}", []).append(
                results.entry(net).frame("history"))
    return out


def default_checks(results: Results, names: dict[str, str]) -> list[Learning]:
    """Did each compared model of the default regime learn? Every Table I column and the
    transfer ensembles after stage 2, on each protocol's test faces (and the wild-trained
    ensembles on the lab set)."""
    checks = []
    for protocol in ("lab", "wild", "cross"):
        name = names[protocol]
        for column in COLUMNS:
            checks.append(_learned(results, protocol, column, name))
        if protocol != "cross":
            for column in ("FTL", "EL"):
                checks.append(_learned(results, protocol, column, name, artifact="head"))
    return checks


def _learned(results: Results, protocol: str, column: str, name: str, *,
             artifact: str | None = None) -> Learning:
    z, y = column_logits(results, protocol, column, artifact=artifact)
    label = f"{column}{' stage 2' if artifact == 'head' else ''} on {name}"
    n_classes = z.shape[-1]
    return learned(label, z, y, n_classes=n_classes, rule=SoftmaxSum())


def curve_checks(results: Results) -> list[Learning]:
    """Did each model of the learning curve learn? Each kind's ensemble per point and seed,
    and FTL and EL after stage 2."""
    checks = []
    kinds = curve_kinds(results.settings)
    for n in sorted(results.settings.curve):
        y = results.labels[("mechanism", str(n))]
        for r in results.settings.curve_seeds:
            seed = f" (draw {r})" if len(results.settings.curve_seeds) > 1 else ""
            for kind in kinds:
                z = results.logits("mechanism", str(n), kind, seed=r)
                checks.append(learned(f"{KIND_NAMES[kind]} at {subjects(n)}{seed}", z, y,
                                      n_classes=z.shape[-1], rule=SoftmaxSum()))
            for kind in [k for k in ("ftl", "el") if k in kinds]:
                z = results.logits("mechanism", str(n), kind, seed=r, artifact="head")
                checks.append(learned(f"{KIND_NAMES[kind]} stage 2 at {subjects(n)}{seed}", z,
                                      y, n_classes=z.shape[-1], rule=SoftmaxSum()))
    return checks


def wild_curves(results: Results) -> Figure:
    """The wild set's expression training curves (:func:`default_histories`), with the
    majority class's rate of its test faces."""
    from fernb.figures import curves_frame, training_curves
    return training_curves(curves_frame(default_histories(results, "wild")),
                           majority=majority_rate(results, "wild"))


def landmark_curves(results: Results) -> Figure:
    """Stage 1's training curves (:func:`landmark_histories`)."""
    from fernb.figures import curves_frame, training_curves
    return training_curves(curves_frame(landmark_histories(results)))


def curve_learning_histories(results: Results) -> dict[str, list[pd.DataFrame]]:
    """The learning curve's expression training curves at its smallest point, where the
    labels are scarcest."""
    return curve_histories(results, min(results.settings.curve))


def majority_rate(results: Results, protocol: str) -> float:
    """The majority class's share of the protocol's test faces."""
    return majority(logits(results, protocol, "baseline")[1])


def lab_majority(results: Results) -> float:
    """The majority class's share of the lab test faces."""
    return majority_rate(results, "lab")


def curve_majority(results: Results) -> float:
    """The majority class's share of the mechanism regime's test faces."""
    return majority(results.labels[("mechanism", str(min(results.settings.curve)))])
