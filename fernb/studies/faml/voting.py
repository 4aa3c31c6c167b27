"""Zhou's decision rules on the chapter's ensembles: Table 4 (more networks), Table 6 and
Fig. 7 (T2V, bagging and NOI on every basic network), how much T1V's tie rule moves it, and
the sweep of T2V's weights. Ensembles share one test set, so they are compared by a
sign-flip test clustered by image (:func:`fernb.evaluate.clustered_test`)."""
from __future__ import annotations

import itertools
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from fernb.ensemble import random_tie_accuracy, t2v_regime, t2v_sweep
from fernb.evaluate import TestResult, clustered_test
from fernb.studies.faml.protocol import FGA, Results
from fernb.studies.faml.settings import TABLE6_BACKBONES, Settings
from fernb.studies.faml.tables import correct, ensembles, name, networks, rules

SWEEP_RATIOS = (0.0, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.526, 0.6, 0.75, 0.9, 1.0, 1.5, 3.0)
BASIC = ("R18", *TABLE6_BACKBONES, "FAML", FGA)  # Table 6's basic networks, in its order


def by_networks(results: Results) -> pd.DataFrame:
    """Table 4: T2V accuracy (%) with k = 2..M networks, the mean over every k-subset of a
    replicate's networks and over replicates, for FAML-FGA (the paper's) and FAML."""
    d, rule = results.default, rules(results.settings)["T2V"]
    rows = []
    for model in (FGA, "FAML"):
        for r in d.replicates(model):
            z = d.logits[(model, r)]
            for k in range(2, z.shape[1] + 1):
                scores = [correct(z[:, list(s)], d.labels, rule).mean()
                          for s in itertools.combinations(range(z.shape[1]), k)]
                rows.append({"model": f"{name(model)}-T2V", "networks": k,
                             "accuracy": 100 * float(np.mean(scores))})
    table = pd.DataFrame(rows).groupby(["model", "networks"], sort=False)["accuracy"].mean()
    return table.unstack("networks")


def networks_test(results: Results) -> TestResult:
    """Does T2V gain from more networks? On each image, the ensembles of all M networks
    against the mean over every pair of networks (Table 4's first and last columns),
    clustered by image."""
    d, rule = results.default, rules(results.settings)["T2V"]
    full, pairs = [], []
    for r in d.replicates(FGA):
        z = d.logits[(FGA, r)]
        full.append(correct(z, d.labels, rule))
        pairs += [correct(z[:, list(s)], d.labels, rule)
                  for s in itertools.combinations(range(z.shape[1]), 2)]
    return clustered_test(np.stack(full), np.stack(pairs))


def basic_networks(results: Results) -> list[str]:
    """The basic networks of Table 6 this run trained, in the paper's order."""
    return [m for m in BASIC if m in results.default.models()]


def table6(results: Results) -> pd.DataFrame:
    """Table 6: per basic network, the mean single-network accuracy (Origin) and that of T2V,
    bagging (T1V) and NOI (mean over replicates, %), each rule's gain over Origin, and T2V
    against T1V and NOI clustered by image (difference in points, p)."""
    d, rs = results.default, rules(results.settings)
    rows = []
    for model in basic_networks(results):
        row = {"basic network": name(model),
               "Origin": 100 * float(networks(d, model).mean())}
        scores = {label: ensembles(d, model, rule) for label, rule in rs.items()}
        row |= {label: 100 * float(s.mean()) for label, s in scores.items()}
        for label in rs:
            row[f"{label} gain"] = row[label] - row["Origin"]
        for other in ("T1V", "NOI"):
            t = clustered_test(scores["T2V"], scores[other])
            row[f"T2V − {other}"] = 100 * t.estimate
            row[f"p (T2V vs {other})"] = t.p
        rows.append(row)
    return pd.DataFrame(rows).set_index("basic network")


def pooled_rule_test(results: Results, other: str) -> TestResult:
    """T2V against ``other`` over every basic network's ensembles at once, clustered by
    image (each image's mean correctness over the ensembles)."""
    d, rs = results.default, rules(results.settings)
    a = np.concatenate([ensembles(d, m, rs["T2V"]) for m in basic_networks(results)])
    b = np.concatenate([ensembles(d, m, rs[other]) for m in basic_networks(results)])
    return clustered_test(a, b)


def ties(results: Results) -> pd.DataFrame:
    """How much the tie rule moves T1V: per basic network (ensembles pooled over replicates),
    the share of images on which T1V's first places tie, T1V's accuracy with ties to the
    lowest class index (``fernb.ensemble``'s rule) and with ties broken at random, and the
    share of tied images the lowest-index rule gives to the two most frequent training
    classes; T2V's ties for comparison."""
    d, rs = results.default, rules(results.settings)
    frequent = np.argsort(-d.train_counts, kind="stable")[:2]
    rows = []
    for model in basic_networks(results):
        tied = shares = lowest = random = t2v_tied = 0.0
        replicates = d.replicates(model)
        for r in replicates:
            z = torch.from_numpy(d.logits[(model, r)])
            scores = rs["T1V"].scores(z)
            top = scores == scores.max(1, keepdim=True).values
            is_tied = top.sum(1) > 1
            tied += float(is_tied.double().mean())
            winner = scores.argmax(1).numpy()
            shares += float(np.isin(winner[is_tied.numpy()], frequent).mean()) \
                if is_tied.any() else np.nan
            lowest += float((winner == d.labels).mean())
            random += random_tie_accuracy(scores, d.labels)
            t2 = rs["T2V"].scores(z)
            t2v_tied += float(((t2 == t2.max(1, keepdim=True).values).sum(1) > 1)
                              .double().mean())
        n = len(replicates)
        rows.append({"basic network": name(model), "T1V ties (% of images)": 100 * tied / n,
                     "T1V, ties to the lowest index (%)": 100 * lowest / n,
                     "T1V, ties at random (%)": 100 * random / n,
                     "tie rule moves T1V (points)": 100 * (lowest - random) / n,
                     "tied images to the 2 most frequent classes (%)": 100 * shares / n,
                     "T2V ties (% of images)": 100 * t2v_tied / n})
    table = pd.DataFrame(rows).set_index("basic network")
    table.attrs["frequent"] = [d.classes[i] for i in frequent]
    return table


def gain_points(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Fig. 7's points: (Origin, T2V gain) of each basic network."""
    return table["Origin"].to_numpy(), table["T2V gain"].to_numpy()


def plot_gains(table: pd.DataFrame) -> Figure:
    """Fig. 7: each rule's gain over the mean single network against that accuracy."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for column, label, marker in (("T2V gain", "T2V", "o"), ("T1V gain", "bagging (T1V)", "s"),
                                  ("NOI gain", "NOI", "^")):
        ax.plot(table["Origin"], table[column], marker=marker, ls="none", label=label)
    for row_name, row in table.iterrows():
        ax.annotate(row_name, (row["Origin"], row["T2V gain"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    ax.axhline(0, c="gray", lw=0.8)
    ax.set(xlabel="accuracy of the basic network (%)", ylabel="gain of the ensemble (points)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def sweep(results: Results, ratios: Sequence[float] = SWEEP_RATIOS) -> pd.DataFrame:
    """T2V's accuracy and agreement with T1V and NOI (%) as beta / alpha varies
    (:func:`fernb.ensemble.t2v_sweep`), mean over the FAML ensembles; ``regime`` says what
    the ratio does with this many networks (:func:`fernb.ensemble.t2v_regime`)."""
    d = results.default
    frames = []
    for r in d.replicates("FAML"):
        table = t2v_sweep(d.logits[("FAML", r)], d.labels, ratios)
        frames.append(table.assign(T1V=table.attrs["T1V"], NOI=table.attrs["NOI"]))
    frame = pd.concat(frames)
    numeric = ["accuracy", "agree_t1v", "agree_noi", "T1V", "NOI"]
    table = frame.groupby("beta_over_alpha", sort=True)[numeric].mean() * 100
    table["regime"] = frame.groupby("beta_over_alpha", sort=True)["regime"].first()
    return table.rename(columns={"agree_t1v": "same as T1V", "agree_noi": "same as NOI"})


def plot_sweep(table: pd.DataFrame, settings: Settings) -> Figure:
    """T2V's accuracy and agreement with T1V and NOI against beta / alpha."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    x = table.index.to_numpy()
    left.plot(x, table["accuracy"], marker="o", label="T2V")
    left.axhline(table["T1V"].iloc[0], ls="--", c="gray", label="T1V")
    left.axhline(table["NOI"].iloc[0], ls=":", c="black", label="NOI")
    left.set(xlabel="beta / alpha", ylabel="test accuracy (%)")
    right.plot(x, table["same as T1V"], marker="o", label="same decision as T1V")
    right.plot(x, table["same as NOI"], marker="s", label="same decision as NOI")
    right.set(xlabel="beta / alpha", ylabel="share of test images (%)")
    for ax in (left, right):
        ax.axvline(settings.beta / settings.alpha, c="red", lw=0.8)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def regime_of(settings: Settings) -> str:
    """What this run's weights do with its ensembles' networks."""
    return t2v_regime(settings.alpha, settings.beta, settings.n_networks)
