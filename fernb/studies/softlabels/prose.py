"""Every value and sentence chapter 4's prose cites (glued by
:meth:`fernb.report.Report.glue_all`): computed from the run, so the page stays true when a
reader reruns the chapter with other parameters."""
from __future__ import annotations

import time
from fractions import Fraction
from typing import Any

import numpy as np

from fernb.report import MISSING
from fernb.softlabels import logit_spread
from fernb.studies.softlabels.claims import all_claims, violations_text
from fernb.studies.softlabels.protocol import main_d
from fernb.studies.softlabels.results import Regime, Results
from fernb.studies.softlabels.tables import confusion, mistakes_table
from fernb.verdicts import FAILS, HOLDS, UNTESTABLE


# What the prose cites from the mechanism regime, shown as missing when it does not run.
MECHANISM_KEYS = (
    "blend_prob", "m_flipped", "m_d_sentence", "m_own_d_sentence", "m_oracle_d_sentence",
    *[f"m_{what}_{g}" for what in ("clean", "nll") for g in ("hard", "fixed", "perturbed",
                                                             "oracle")],
    "mechanism_summary", *[f"m_{key}_{part}" for key in ("oracle_clean", "oracle_nll",
                                                        "oracle_vs_d")
                           for part in ("verdict", "why")])


class Clock:
    """The chapter's own run time, from its first cell to the call of :meth:`minutes`."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def minutes(self) -> float:
        return (time.perf_counter() - self.start) / 60


def _pct(x: np.ndarray | float) -> float:
    return 100 * float(np.mean(x))


def _join(values: Any) -> str:
    return ", ".join(f"{v:g}" for v in values)


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _d_sentence(d: Any) -> str:
    if d.valid:
        return f"every one of its {len(d.classes)} rows peaks on its own class, as Sec. 3.2 requires"
    return (f"{len(d.violations)} of its {len(d.classes)} rows peak on another class "
            f"({violations_text(d)}), which Sec. 3.2 forbids")


def _trace_sentence(regime: Regime) -> str:
    t = regime.constructor.trace
    first, last = int(t["violations"].iloc[0]), int(t["violations"].iloc[-1])
    best = int(t["violations"].min())
    n = len(t)
    text = (f"over its {_count(n, 'epoch')} the rows of its D that peak elsewhere went from "
            f"{first} to {last}")
    if last == 0:
        return text + ": the budget is enough for a valid D"
    return text + (f" (never fewer than {best})" if best > 0 else f" (0 at best, but not at "
                   f"the end)") + ", so this budget does not give a valid D built on the dataset"


# A verdict as the predicate of a sentence about a claim ("the claim ... holds").
PREDICATE = {HOLDS: "holds", FAILS: "does not hold", UNTESTABLE: "is not testable"}


def _verdicts(prefix: str, judged: dict[str, Any]) -> dict[str, str]:
    out = {}
    for key, claim in judged.items():
        out[f"{prefix}{key}_verdict"] = PREDICATE[claim.verdict]
        out[f"{prefix}{key}_why"] = claim.reason
    return out


def _untestable(judged: dict[str, Any]) -> str:
    n = sum(c.verdict == UNTESTABLE for c in judged.values())
    held = sum(c.verdict == HOLDS for c in judged.values())
    failed = len(judged) - held - n
    return (f"{held} of the {len(judged)} claims {'holds' if held == 1 else 'hold'}, "
            f"{failed} {'does' if failed == 1 else 'do'} not and {n} "
            f"{'is' if n == 1 else 'are'} not testable")


def _regime_values(prefix: str, regime: Regime) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in regime.groups:
        sc = regime.scores(name)
        out[f"{prefix}acc_{name}"] = _pct(sc.correct)
        out[f"{prefix}single_{name}"] = _pct(sc.member_correct)
        if sc.clean is not None:
            out[f"{prefix}clean_{name}"] = _pct(sc.clean)
        if sc.nll is not None:
            out[f"{prefix}nll_{name}"] = float(sc.nll.mean())
        if sc.disagreement is not None:
            out[f"{prefix}dis_{name}"] = float(sc.disagreement.mean())
    s = regime.split
    out |= {f"{prefix}n_train": len(s.train), f"{prefix}n_val": len(s.val),
            f"{prefix}n_test": len(s.test), f"{prefix}majority": _pct(regime.majority)}
    return out


def spread_sentence(spread: np.ndarray, gammas: Any) -> str:
    """What the members' score spreads (their weights in eq. 7) show in this run."""
    top = int(np.argmax(spread))
    grows = bool(np.all(np.diff(spread) > 0))
    listed = ", ".join(f"{v:.2f} at gamma {g:g}" for v, g in zip(spread, gammas))
    return (f"In this run the spreads are {listed}: they "
            + ("grow with gamma, as they do at the optimum" if grows else
               "do not grow with gamma, a sign that the members are still far from the "
               "optimum where eq. (4) fixes their scores")
            + f", and the member at gamma {gammas[top]:g} carries the largest share of "
              f"eq. (7)'s weight, {100 * spread[top] / spread.sum():.1f}%")


def rising_sentence(curves: list[Any]) -> str:
    """How the members' validation accuracy (fractions, one curve per member) moved over
    their last two epochs, and what that says about their training."""
    if min(len(c) for c in curves) < 3:
        return ("cannot show a trend: they trained for fewer than three epochs, too few to "
                "tell whether they were still learning")
    rise = float(np.mean([100 * (c.iloc[-1] - c.iloc[-3]) for c in curves]))
    if rise > 1:
        return (f"rose by {rise:.1f} points over their last two epochs on average: these "
                f"networks are not trained to convergence, and longer training would change "
                f"the numbers below")
    return (f"changed by {rise:+.1f} points over their last two epochs on average: these "
            f"networks have levelled off")


def highlights(results: Results, clock: Clock | None = None) -> dict[str, Any]:
    """The chapter's glued values, by name."""
    st, r, sweep = results.settings, results.default, results.sweep
    judged = all_claims(results)
    d = r.soft_labels[r.main]
    own = r.soft_labels["dataset"]
    decay = st.decay_epoch
    out: dict[str, Any] = {
        "image_size": st.image_size, "width": str(Fraction(st.width).limit_denominator(64)),
        "epochs": _count(st.epochs, "epoch"), "source_epochs": _count(st.source_epochs, "epoch"),
        "n_members": st.n_members, "repeats": _count(st.repeats, "seed"),
        "grid": _join(st.gamma_grid), "n_grid": len(st.gamma_grid), "lr": st.lr,
        "optimizer": {"adam": "Adam", "sgd": "SGD with momentum"}[st.optimizer],
        "decay": (f"multiplied by 0.1 after epoch {decay} of {st.epochs}" if decay
                  else "kept constant"),
        "batch_size": st.batch_size, "augment": st.augment, "dataset": st.dataset,
        "source": st.source, "d_used": f"D built on {d.built_on}",
        "d_sentence": _d_sentence(d), "own_d_sentence": _d_sentence(own),
        "own_val": _pct(r.constructor.val.argmax(1) == r.constructor.val_labels),
        "trace_sentence": _trace_sentence(r),
        "gamma_set": _join(sweep.gammas), "fixed_gamma": f"{sweep.fixed_gamma:g}",
        "sweep_spread": 100 * float(sweep.table["val accuracy"].max()
                                    - sweep.table["val accuracy"].min()),
        "sweep_best": f"{sweep.table.loc[sweep.table['val accuracy'].idxmax(), 'gamma']:g}",
        "default_summary": _untestable(judged["default"]),
        "training_min": results.seconds / 60,
    }
    if results.source is not None:
        s = results.source
        out |= {"source_val": _pct(s.val.argmax(1) == s.val_labels),
                "source_test": _pct(s.test.argmax(1) == s.test_labels),
                "source_classes": len(s.classes)}
    out |= _regime_values("", r)
    out |= _verdicts("", judged["default"])
    z = r.groups["perturbed"].logits()
    spread = np.stack([logit_spread(e) for e in z]).mean(0)
    out["spread_sentence"] = spread_sentence(spread, r.groups["perturbed"].gammas)
    out["acc_pert_probs"] = _pct(r.scores("perturbed").correct_probabilities)
    for name in r.groups:
        cm = confusion(r, name)
        never = [c for c in cm.columns if cm[c].sum() == 0]
        out[f"never_{name}"] = (f"never predicts {', '.join(never)}" if never
                                else "predicts every class")
    out["still_rising"] = rising_sentence([n.history["val_acc_ens"]
                                           for g in r.groups.values() for n in g.members])
    table = mistakes_table(confusion(r), d)
    follows = int((table["mistake follows D"] == "yes").sum())
    out["mistakes_follow_d"] = (f"in {follows} of {len(table)} classes the ensemble's most "
                                f"frequent mistake is the class D's row weighs most after "
                                f"the true one")
    m = results.mechanism
    if m is not None:
        out |= _regime_values("m_", m)
        out |= _verdicts("", judged["mechanism"])
        out["mechanism_summary"] = _untestable(judged["mechanism"])
        out["blend_prob"] = 100 * st.mechanism_blend_prob
        out["m_own_d_sentence"] = _d_sentence(m.soft_labels["dataset"])
        out["m_d_sentence"] = _d_sentence(m.soft_labels[main_d(st)])
        out["m_oracle_d_sentence"] = _d_sentence(m.soft_labels["oracle"])
        flipped = m.data.meta["clean_label"] != m.data.labels
        out["m_flipped"] = _pct(flipped)
    else:
        out |= {k: MISSING for k in MECHANISM_KEYS}
    if clock is not None:
        out["elapsed_min"] = clock.minutes()
    return out
