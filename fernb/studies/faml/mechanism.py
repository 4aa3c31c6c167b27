"""The mechanism regime's readings: the members' confidence, each rule's accuracy on the
over-confident (CE) and the calibrated (LSR) ensemble, and the tests clustered by image."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from fernb.ensemble import top_two_counts
from fernb.evaluate import TestResult, clustered_test, paired_ttest
from fernb.studies.faml.protocol import CE, LSR, Regime, Results
from fernb.studies.faml.settings import Settings
from fernb.studies.faml.tables import correct, name, networks, rules, second_place_shares

def confidence(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Members' confidence (max softmax probability): mean, mean on their errors, and its
    spread between the members on one image (standard deviation, mean over images)."""
    p = torch.from_numpy(logits).softmax(-1)
    top = p.max(-1).values.numpy()  # (N, M)
    wrong = p.argmax(-1).numpy() != labels[:, None]
    return {"confidence": float(top.mean()),
            "confidence on errors": float(top[wrong].mean()) if wrong.any() else np.nan,
            "confidence spread": float(top.std(1, ddof=1).mean())}


def member_error_confidence(regime: Regime, model: str) -> np.ndarray:
    """(M,) each member's mean confidence on the images it gets wrong."""
    z = regime.pooled(model)
    p = torch.from_numpy(z).softmax(-1)
    top, wrong = p.max(-1).values.numpy(), p.argmax(-1).numpy() != regime.labels[:, None]
    return np.array([top[wrong[:, k], k].mean() if wrong[:, k].any() else np.nan
                     for k in range(z.shape[1])])


def mechanism_table(results: Results) -> pd.DataFrame:
    """The mechanism regime per ensemble (CE: over-confident members; LSR: the same members
    trained with label smoothing): the members' accuracy and confidence, where their errors
    put the label, and each rule's accuracy (%)."""
    m, rs = results.mechanism, rules(results.settings)
    rows = []
    for model in (CE, LSR):
        z = m.pooled(model)
        shares, uniform = second_place_shares(m, model)
        row = {"members": model, "member accuracy (%)": 100 * float(networks(m, model).mean()),
               **{k: v for k, v in confidence(z, m.labels).items()},
               "errors ranked 2nd (%)": 100 * float(shares.mean())}
        for label, rule in rs.items():
            row[label] = 100 * float(correct(z, m.labels, rule).mean())
        row["T2V − NOI"] = row["T2V"] - row["NOI"]
        row["T2V − T1V"] = row["T2V"] - row["T1V"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("members")


def mechanism_tests(results: Results) -> dict[str, TestResult]:
    """The mechanism regime's tests, clustered by image: T2V against NOI and T1V for each
    ensemble, and the mechanism itself, T2V's lead over NOI with over-confident (CE) against
    calibrated (LSR) members (the per-image difference of the two differences)."""
    m, rs = results.mechanism, rules(results.settings)
    c = {(model, label): correct(m.pooled(model), m.labels, rule)[None].astype(float)
         for model in (CE, LSR) for label, rule in rs.items()}
    tests = {f"{model.lower()}_{other.lower()}": clustered_test(c[(model, "T2V")],
                                                                 c[(model, other)])
             for model in (CE, LSR) for other in ("NOI", "T1V")}
    lead = {model: c[(model, "T2V")] - c[(model, "NOI")] for model in (CE, LSR)}
    tests["mechanism"] = clustered_test(lead[CE], lead[LSR])
    return tests


def confidence_test(results: Results) -> TestResult | None:
    """The regime's precondition: are the CE members more confident on their errors than
    the LSR members? Member k of both trained on the same half with the same seed: a paired
    t-test over the members (those that make errors; None with fewer than two)."""
    m = results.mechanism
    ce, lsr = member_error_confidence(m, CE), member_error_confidence(m, LSR)
    both = np.isfinite(ce) & np.isfinite(lsr)
    if both.sum() < 2:
        return None
    return paired_ttest(ce[both], lsr[both], unit="members")


def mechanism_test_table(tests: Mapping[str, TestResult]) -> pd.DataFrame:
    labels = {"ce_noi": "CE members: T2V − NOI", "lsr_noi": "LSR members: T2V − NOI",
              "mechanism": "(T2V − NOI) with CE − with LSR members",
              "ce_t1v": "CE members: T2V − T1V", "lsr_t1v": "LSR members: T2V − T1V"}
    rows = [{"comparison": label, "images": tests[key].n,
             "difference (points)": 100 * tests[key].estimate,
             "95% CI low": 100 * tests[key].ci[0], "95% CI high": 100 * tests[key].ci[1],
             "p": tests[key].p} for key, label in labels.items()]
    return pd.DataFrame(rows).set_index("comparison")


def plot_confidence(results: Results) -> Figure:
    """The members' confidence on the images they get right and wrong, CE against LSR."""
    m = results.mechanism
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharey=True)
    bins = np.linspace(0, 1, 21)
    for ax, model in zip(axes, (CE, LSR)):
        p = torch.from_numpy(m.pooled(model)).softmax(-1)
        top, hit = p.max(-1).values.numpy(), p.argmax(-1).numpy() == m.labels[:, None]
        ax.hist(top[hit], bins=bins, alpha=0.6, label="right", density=True)
        ax.hist(top[~hit], bins=bins, alpha=0.6, label="wrong", density=True)
        ax.set(title=f"{model} members", xlabel="confidence (max softmax probability)")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("density")
    fig.tight_layout()
    return fig


def disagreements(regime: Regime, models: Sequence[str], settings: Settings) -> pd.DataFrame:
    """When do T2V and NOI decide differently, and who is right? Images grouped by ensemble
    and by how many members put T2V's class first: T2V can overturn the softmax sum only
    where the members split their first places."""
    rs = rules(settings)
    rows = []
    for model in models:
        for r in regime.replicates(model):
            z = torch.from_numpy(regime.logits[(model, r)])
            t2v, noi = rs["T2V"](z).numpy(), rs["NOI"](z).numpy()
            firsts = top_two_counts(z)[:, 0].numpy()  # (N, C)
            n_first = firsts[np.arange(len(t2v)), t2v]
            for i in np.flatnonzero(t2v != noi):
                rows.append({"members": name(model), "firsts of T2V's class": int(n_first[i]),
                             "T2V right": t2v[i] == regime.labels[i],
                             "NOI right": noi[i] == regime.labels[i]})
    if not rows:
        return pd.DataFrame(columns=["images", "T2V right", "NOI right", "neither right"])
    frame = pd.DataFrame(rows)
    grouped = frame.groupby(["members", "firsts of T2V's class"])
    table = pd.DataFrame({"images": grouped.size(), "T2V right": grouped["T2V right"].sum(),
                          "NOI right": grouped["NOI right"].sum()})
    table["neither right"] = table["images"] - table["T2V right"] - table["NOI right"]
    return table.astype(int)
