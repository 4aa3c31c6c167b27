"""The chapter's tables (numeric until :meth:`fernb.report.Report.table` formats them) and
figures, each computed from :class:`~fernb.studies.faml.protocol.Results`.

A *network* row is the mean over a model's networks (single models: the paper does not say
which of its networks it reports); an *ensemble* row votes over the networks of one replicate
and is the mean over replicates. Tests follow the units: networks of their own seeds are
compared by a paired t-test over seeds; decisions of ensembles that share one test set by a
sign-flip test clustered by image (:func:`fernb.evaluate.clustered_test`).
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from fernb.ensemble import (PluralityVote, SoftmaxSum, TopTwoVote, label_rank_distribution,
                            random_tie_accuracy, t2v_regime, t2v_sweep, t2v_votes,
                            top_two_counts)
from fernb.evaluate import TestResult, clustered_test, normalized_confusion, paired_ttest
from fernb.explain import chance_level, evidence_score, gradcam
from fernb.models.faml import r18_faml
from fernb.studies.faml.protocol import (CE, CONTROL, DEFAULT, FGA, LSR, Regime, Results)
from fernb.studies.faml.settings import PRETRAIN_DATASET, TABLE6_BACKBONES, Settings
from fernb.verdicts import learned

# Table 3 (Zhou et al.): six R18+FAML networks on one "Anger" RAF-DB image; classes in the
# paper's order. Its T2V row is [8.7, 0, 0, 7.7, 0, 1, 0] and the decision AN.
TABLE3_CLASSES = ("AN", "DI", "FE", "HA", "NE", "SA", "SU")
TABLE3_LOGITS = np.array([
    [0.295, 0.138, -1.331, 0.917, -1.429, -0.502, -0.712],
    [0.312, 0.058, -1.383, 0.888, -1.426, -0.547, -0.495],
    [0.187, -0.119, -0.835, 1.715, -1.240, -0.118, -1.127],
    [1.518, -0.168, -1.641, 0.489, -1.482, -0.985, -0.491],
    [0.798, -0.210, -1.823, 0.753, -1.308, -0.582, -1.493],
    [0.403, -0.433, -1.392, -0.637, -0.493, -0.131, -1.072],
])
TABLE3_CLASS_COLUMN = ("FE", "FE", "FE", "AN", "AN", "AN")

# The names a reader sees for the chapter's models.
NAMES = {"FAML": "R18+FAML", FGA: "R18+FAML-FGA", CONTROL: "R18+FAML trained on"}
BASIC = ("R18", *TABLE6_BACKBONES, "FAML", FGA)  # Table 6's basic networks, in its order
SWEEP_RATIOS = (0.0, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.526, 0.6, 0.75, 0.9, 1.0, 1.5, 3.0)


def name(model: str) -> str:
    return NAMES.get(model, model)


def rules(settings: Settings) -> dict[str, object]:
    """Zhou's three rules with this run's T2V weights (the settings' ``alpha``, ``beta``)."""
    return {"T2V": TopTwoVote(settings.alpha, settings.beta), "T1V": PluralityVote(),
            "NOI": SoftmaxSum()}


def correct(logits: np.ndarray, labels: np.ndarray, rule: object | None = None) -> np.ndarray:
    """(M, N) correctness of every network (``rule`` None) or (N,) of the ensemble."""
    if rule is None:
        return (logits.argmax(-1) == labels[:, None]).T
    return rule(torch.from_numpy(logits)).numpy() == labels


def ensembles(regime: Regime, model: str, rule: object) -> np.ndarray:
    """(R, N) correctness of ``model``'s ensemble in each replicate under ``rule``."""
    return np.stack([correct(regime.logits[(model, r)], regime.labels, rule)
                     for r in regime.replicates(model)])


def networks(regime: Regime, model: str) -> np.ndarray:
    """(R x M, N) correctness of every network of ``model``."""
    return correct(regime.pooled(model), regime.labels)


# ----------------------------------------------------------------------------- Table 3

def table3(settings: Settings) -> pd.DataFrame:
    """Zhou Table 3 recomputed: each network's outputs, its first and second class (eq. 10),
    the class the paper prints, and the T2V row (eq. 12) with this run's weights."""
    z = torch.from_numpy(TABLE3_LOGITS).unsqueeze(0)  # (1, 6, 7)
    order = np.argsort(-TABLE3_LOGITS, axis=1, kind="stable")
    rule = TopTwoVote(settings.alpha, settings.beta)
    frame = pd.DataFrame(TABLE3_LOGITS, columns=list(TABLE3_CLASSES),
                         index=[f"S_N {i + 1}" for i in range(len(TABLE3_LOGITS))])
    frame["first"] = [TABLE3_CLASSES[i] for i in order[:, 0]]
    frame["second"] = [TABLE3_CLASSES[i] for i in order[:, 1]]
    frame["class printed"] = list(TABLE3_CLASS_COLUMN)
    frame.loc["T2V"] = [*rule.scores(z)[0].tolist(), TABLE3_CLASSES[int(rule(z))], None, "AN"]
    frame.index.name = "model"
    return frame


def table3_rules(settings: Settings) -> pd.DataFrame:
    """Every rule's class scores and decision on Table 3's image (true class AN)."""
    z = torch.from_numpy(TABLE3_LOGITS).unsqueeze(0)
    rows = {}
    for label, rule in rules(settings).items():
        rows[label] = [*rule.scores(z)[0].tolist(), TABLE3_CLASSES[int(rule(z))]]
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=[*TABLE3_CLASSES, "decision"])
    frame.index.name = "rule"
    return frame


# ----------------------------------------------------------------------------- networks

def architectures(width: float, n_classes: int = 7) -> pd.DataFrame:
    """Parameters of R18, R18 with facial-area fusion and R18+FA (= R18+FAML's network), at
    the paper's width and at ``width``."""
    rows = []
    for label, fusion, attention in (("R18", False, False),
                                     ("R18 + facial-area fusion", True, False),
                                     ("R18+FA = R18+FAML's network", True, True)):
        row = {"network": label}
        for w in (1.0, width):
            net = r18_faml(n_classes=n_classes, width=w, fusion=fusion, attention=attention)
            row[f"parameters (width {w:g})"] = sum(p.numel() for p in net.parameters())
        rows.append(row)
    return pd.DataFrame(rows).set_index("network")


def cam_layer_name(net: torch.nn.Module, image_size: int) -> str:
    """The layer Grad-CAM explains at ``image_size``, as a reader names it."""
    layer = net.cam_layer(0, image_size)
    path = next(n for n, m in net.named_modules() if m is layer)
    if path.startswith("attention."):
        return f"the attention block after layer{int(path.split('.')[1]) + 1}"
    return path.removeprefix("net.")


def learning_checks(regime: Regime, models: Sequence[str] | None = None) -> list:
    """Did every model learn? Per model, :func:`fernb.verdicts.learned` of its *weakest*
    network (lowest test accuracy), so that a row that learned says every network did."""
    checks = []
    for model in models or regime.models():
        z = regime.pooled(model)
        k = int(correct(z, regime.labels).mean(1).argmin())
        checks.append(learned(f"{name(model)} (weakest of {z.shape[1]})", z[:, k],
                              regime.labels, n_classes=len(regime.classes)))
    return checks


def histories(regime: Regime) -> dict[str, list[pd.DataFrame]]:
    """Per model, every network's training history (for :meth:`fernb.report.Report.learning`)."""
    out: dict[str, list[pd.DataFrame]] = {}
    for (model, _), frames in regime.histories.items():
        out.setdefault(name(model), []).extend(frames)
    return out


def phase_table(regime: Regime) -> pd.DataFrame:
    """Per model: networks, epochs of phase 1 (mean), how many ended phase 1 on the stability
    criterion rather than at ``max_epochs1``, epochs in all and the final training loss."""
    rows = regime.networks
    table = rows.groupby("model", sort=False).agg(
        networks=("network", "size"), phase1_epochs=("switch_epoch", "mean"),
        stable=("stable", "sum"), epochs=("epochs", "mean"),
        training_loss=("training_loss", "mean"), seconds=("train_seconds", "sum"))
    table.index = [name(m) for m in table.index]
    table.index.name = "model"
    table["stable"] = table["stable"].astype(int)
    return table.rename(columns={"phase1_epochs": "phase 1 epochs (mean)",
                                 "stable": "phase 1 ended stable",
                                 "epochs": "epochs (mean)",
                                 "training_loss": "final training loss (mean)",
                                 "seconds": "training seconds (all networks)"})


# ----------------------------------------------------------------------------- Table 1

def rank_distribution(results: Results) -> pd.DataFrame:
    """Table 1 analogue: where each model's networks rank the labelled class (% of test
    images, mean over its networks), the top-two share, the share of errors whose label
    ranks second and the share a label spread evenly over the wrong places would give,
    100 / (C - 1); the pre-trained starts on their own test faces and the mechanism regime's
    members as contrasts."""
    rows = {}
    default, mech = results.default, results.mechanism
    for model in ("R18", *results.settings.backbones, "FAML"):
        rows[f"{name(model)} ({default.test.name})"] = label_rank_distribution(
            default.pooled(model), default.labels).mean()
    for arch, (z, y) in results.pretrained.items():
        label = "R18" if arch == "resnet18" else next(
            b for b, a in TABLE6_BACKBONES.items() if a == arch)
        rows[f"{label} pre-trained ({PRETRAIN_DATASET})"] = label_rank_distribution(z, y).iloc[0]
    for model in (CE, LSR):
        rows[f"{model} members (blended {mech.test.name})"] = label_rank_distribution(
            mech.pooled(model), mech.labels).mean()
    classes = {key: len(value) for key, value in rows.items()}
    table = pd.DataFrame(rows).T * 100
    table.columns = [f"rank {c}" for c in table.columns]
    table["top two"] = table["rank 1"] + table["rank 2"]
    table["errors ranked 2nd"] = 100 * table["rank 2"] / (100 - table["rank 1"])
    table["uniform"] = [100 / (classes[key] - 1) for key in table.index]
    table.index.name = "networks"
    return table


def second_place_shares(regime: Regime, model: str) -> tuple[np.ndarray, float]:
    """Per network that makes errors, the share of its errors whose label it ranks second,
    and the share a label spread evenly over the wrong places would give, 1 / (C - 1)."""
    z = regime.pooled(model)
    dist = label_rank_distribution(z, regime.labels).to_numpy()  # (M, C) shares of ranks
    errs = dist[:, 0] < 1
    return dist[errs, 1] / (1 - dist[errs, 0]), 1 / (len(regime.classes) - 1)


# ----------------------------------------------------------------------------- Table 2

def _row(regime: Regime, model: str, rule: object | None) -> dict[str, float]:
    if rule is None:
        per = networks(regime, model).mean(1) * 100
        return {"units": len(per), "accuracy (%)": float(per.mean()),
                "sd (points)": float(per.std(ddof=1)) if len(per) > 1 else np.nan}
    per = ensembles(regime, model, rule).mean(1) * 100
    return {"units": len(per), "accuracy (%)": float(per.mean()),
            "sd (points)": float(per.std(ddof=1)) if len(per) > 1 else np.nan}


ABLATION: dict[str, tuple[str, bool]] = {
    "R18": ("R18", False), "R18+FA": ("R18+FA", False), "FAML": ("FAML", False),
    "FAML-FGA": (FGA, False), "FAML trained on (control)": (CONTROL, False),
    "FAML-T2V": ("FAML", True), "FAML-FGA-T2V": (FGA, True),
    "FAML trained on-T2V (control)": (CONTROL, True),
}


def ablation(results: Results) -> pd.DataFrame:
    """Table 2: every row from the same replicates. Single-model rows: the mean accuracy
    (%) over the model's networks and its spread over them; T2V rows: the ensembles' mean
    and spread over replicates. FGA rows hold the fused children only; the control trains
    each child's main parent as long, without fusion."""
    t2v = rules(results.settings)["T2V"]
    rows = []
    for label, (model, vote) in ABLATION.items():
        fa = model != "R18"
        rows.append({"model": label, "FA": "✓" if fa else "",
                     "loss": "LSR+CE" if model not in ("R18", "R18+FA") else "CE",
                     "FGA": "✓" if model == FGA else "", "T2V": "✓" if vote else "",
                     "unit": "ensembles" if vote else "networks",
                     **_row(results.default, model, t2v if vote else None)})
    return pd.DataFrame(rows).set_index("model")


def seeds_test(a: np.ndarray, b: np.ndarray, unit: str = "seeds") -> TestResult:
    """Paired t-test of per-network accuracies (fractions), network k of a against network
    k of b."""
    return paired_ttest(a.mean(1), b.mean(1), unit=unit)


def ablation_tests(results: Results) -> dict[str, TestResult | None]:
    """The tests behind Table 2's differences (estimates are fractions).

    - R18+FA vs R18 and FAML vs R18+FA: networks of their own seeds, paired t-test over
      seeds;
    - FGA: each fused child against its control (fusion alone) and against its main parent
      (what the paper's FAML-FGA row adds to FAML: fusion and a second training), paired
      t-test over the children (children of one replicate may share a parent);
    - T2V rows: ensembles against the single networks they vote over, and ensembles of fused
      children against ensembles of FAML networks and of controls, clustered by image.
    """
    d = results.default
    t2v = rules(results.settings)["T2V"]
    tests: dict[str, TestResult | None] = {}

    def guarded(key: str, make) -> None:
        try:
            tests[key] = make()
        except ValueError:
            tests[key] = None

    guarded("fa", lambda: seeds_test(networks(d, "R18+FA"), networks(d, "R18")))
    guarded("ml", lambda: seeds_test(networks(d, "FAML"), networks(d, "R18+FA")))
    guarded("fga_control", lambda: seeds_test(networks(d, FGA), networks(d, CONTROL),
                                              "child-control pairs"))
    parents = _main_parents(results)
    guarded("fga_parent", lambda: seeds_test(networks(d, FGA), parents, "child-parent pairs"))
    tests["t2v"] = clustered_test(ensembles(d, "FAML", t2v), networks(d, "FAML"))
    tests["fga_t2v"] = clustered_test(ensembles(d, FGA, t2v), ensembles(d, "FAML", t2v))
    tests["fga_t2v_control"] = clustered_test(ensembles(d, FGA, t2v),
                                              ensembles(d, CONTROL, t2v))
    return tests


def _main_parents(results: Results) -> np.ndarray:
    """(children, N) correctness of each fused child's main parent (the FAML network, or
    the previous generation's child, whose other tensors it kept)."""
    d = results.default
    rows = d.networks[d.networks["model"] == FGA]
    parents = []
    for r in d.replicates(FGA):
        population = _population(results, r)
        for _, row in rows[rows["replicate"] == r].iterrows():
            parents.append(population[:, int(row["main_parent"])])
    return correct(np.stack(parents, 1), d.labels)


def _population(results: Results, replicate: int) -> np.ndarray:
    """(N, M, C) logits of the last FGA generation's parents in ``replicate``."""
    d = results.default
    generations = results.settings.fga_generations
    if generations == 1:
        return d.logits[("FAML", replicate)]
    store = results.store
    jobs = results.plan.networks[(DEFAULT, FGA, replicate)][0].needs
    return np.concatenate([store.get(j).arrays("test")["logits"] for j in jobs], 1)


def comparison_table(tests: Mapping[str, TestResult | None]) -> pd.DataFrame:
    """Each test as a row: estimate (points), 95 % interval, p, units."""
    labels = {"fa": "R18+FA − R18", "ml": "FAML − R18+FA",
              "fga_control": "FAML-FGA − FAML trained on (fusion alone)",
              "fga_parent": "FAML-FGA − its main FAML parent (fusion and more training)",
              "t2v": "FAML-T2V − FAML", "fga_t2v": "FAML-FGA-T2V − FAML-T2V",
              "fga_t2v_control": "FAML-FGA-T2V − FAML trained on-T2V"}
    rows = []
    for key, label in labels.items():
        t = tests.get(key)
        if t is None:
            rows.append({"comparison": label, "test": "too few units"})
            continue
        rows.append({"comparison": label, "test": t.test, "units": t.n, "unit": t.unit,
                     "difference (points)": 100 * t.estimate,
                     "95% CI low": 100 * t.ci[0] if t.ci else np.nan,
                     "95% CI high": 100 * t.ci[1] if t.ci else np.nan, "p": t.p})
    return pd.DataFrame(rows).set_index("comparison")


# ----------------------------------------------------------------------------- Tables 4, 6

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


# ----------------------------------------------------------------------------- alpha, beta

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


# ----------------------------------------------------------------------------- mechanism

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


# ----------------------------------------------------------------------------- Fig. 5, 8

def confusion(regime: Regime, model: str, rule: object | None = None) -> pd.DataFrame:
    """Row-normalised confusion matrix pooled over replicates: of every network (``rule``
    None) or of the ensembles under ``rule``."""
    preds, labels = [], []
    for r in regime.replicates(model):
        z = regime.logits[(model, r)]
        if rule is None:
            preds.append(z.argmax(-1).T.reshape(-1))
            labels.append(np.tile(regime.labels, z.shape[1]))
        else:
            preds.append(rule(torch.from_numpy(z)).numpy())
            labels.append(regime.labels)
    return normalized_confusion(np.concatenate(preds), np.concatenate(labels), regime.classes)


def recalls(regime: Regime, model: str) -> pd.Series:
    """Recall of every class over all of ``model``'s networks, lowest first."""
    cm = confusion(regime, model)
    return pd.Series(np.diag(cm.to_numpy()), index=cm.index).sort_values(kind="stable")


FIG8_ROWS = ("R18", "R18+FA", "FAML", FGA, "FAML-FGA-T2V")


def example_images(regime: Regime) -> np.ndarray:
    """Indices of one test image per class (the first of each), Fig. 8's columns."""
    return np.array([np.flatnonzero(regime.labels == c)[0] for c in range(len(regime.classes))
                     if np.any(regime.labels == c)])


def saliency(results: Results, images: np.ndarray) -> dict[str, np.ndarray]:
    """Grad-CAM maps (B, H, W) of the true class for each Fig. 8 row: the first network of
    R18, R18+FA, FAML and FAML-FGA, and FAML-FGA-T2V as the paper draws it, the maps of its
    networks summed with their T2V votes for the class (eq. 10-12), renormalised to [0, 1]."""
    d, s = results.default, results.settings
    x, y = d.test.tensors(images)
    maps = {}
    for row in FIG8_ROWS:
        model = row.removesuffix("-T2V")
        count = d.logits[(model, 0)].shape[1]
        members = range(count) if row.endswith("T2V") else range(1)
        per_net = [gradcam(results.network(model, 0, k), x, member=0, targets=y.tolist())
                   for k in members]
        if not row.endswith("T2V"):
            maps[row] = per_net[0]
            continue
        z = d.logits[(model, 0)][images]  # (B, M, C)
        votes = t2v_votes(z, s.alpha, s.beta).numpy()[np.arange(len(images)), :, y.numpy()]
        summed = np.einsum("bm,mbhw->bhw", votes, np.stack(per_net))
        peak = summed.max(axis=(1, 2), keepdims=True)
        maps[row] = np.where(peak > 0, summed / np.where(peak > 0, peak, 1), 0).astype(
            np.float32)
    return maps


def saliency_grid(regime: Regime, images: np.ndarray, maps: Mapping[str, np.ndarray]
                  ) -> Figure:
    """Fig. 8 analogue: the input faces (first row) and each model's map on them."""
    from fernb.explain import overlay
    from fernb.figures import image_grid
    gray = regime.test.images[images]
    tiles = list(gray)
    titles = [regime.classes[c] for c in regime.labels[images]]
    for row, m in maps.items():
        tiles += [overlay(g, cam) for g, cam in zip(gray, m)]
        titles += [(name(row) if i == 0 else "") + (" (empty)" if cam.max() == 0 else "")
                   for i, cam in enumerate(m)]
    return image_grid(tiles, titles, ncols=len(images))


def evidence(results: Results, n_images: int) -> pd.DataFrame | None:
    """Per test image (the first ``n_images`` with an evidence region), the share of the
    Grad-CAM mass inside the expression's evidence regions, mean over the networks of R18
    and of FAML (replicate 1), with chance (a uniform map's score); None without masks."""
    d = results.default
    if d.test.masks is None:
        return None
    chosen = np.flatnonzero(d.test.masks.reshape(len(d.test), -1).any(1))[:n_images]
    x, y = d.test.tensors(chosen)
    masks = d.test.masks[chosen]
    frame = pd.DataFrame({"image": chosen, "chance": chance_level(masks)})
    for model in ("R18", "FAML"):
        scores = [evidence_score(gradcam(results.network(model, 0, k), x, member=0,
                                         targets=y.tolist()), masks)
                  for k in range(d.logits[(model, 0)].shape[1])]
        frame[name(model)] = np.nanmean(np.stack(scores), axis=0)
    return frame.dropna().set_index("image")


def evidence_test(frame: pd.DataFrame) -> TestResult:
    """R18+FAML's evidence score against R18's, paired over images."""
    return paired_ttest(frame["R18+FAML"], frame["R18"], unit="images")


def with_note(result: TestResult, note: str) -> TestResult:
    return replace(result, note="; ".join(n for n in (result.note, note) if n))


def evidence_summary(frame: pd.DataFrame | None) -> pd.DataFrame:
    """Mean evidence score (share of the map's mass on the expression's regions) of each
    model over the images, next to chance; a note when the faces carry no evidence masks."""
    if frame is None or not len(frame):
        return pd.DataFrame({"note": ["these faces carry no evidence masks (only the "
                                      "synthetic sets have them)"]})
    table = frame.mean().to_frame("mean evidence score").T
    table.insert(0, "images", len(frame))
    return table


def plot_confusions(results: Results) -> Figure:
    """Fig. 5: row-normalised confusion matrices of every R18 network, every R18+FAML
    network, and the R18+FAML-FGA-T2V ensembles (test faces pooled over replicates)."""
    d = results.default
    panels = (("R18 networks", confusion(d, "R18")),
              ("R18+FAML networks", confusion(d, "FAML")),
              ("R18+FAML-FGA-T2V", confusion(d, FGA, rules(results.settings)["T2V"])))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    short = [c[:3] for c in d.classes]
    for ax, (title, cm) in zip(axes, panels):
        ax.imshow(cm.to_numpy(), vmin=0, vmax=1, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm.to_numpy()):
            ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if v > 0.5 else "black")
        ax.set(title=title, xticks=range(len(short)), yticks=range(len(short)),
               xticklabels=short, yticklabels=short, xlabel="predicted", ylabel="true")
        ax.grid(False)
    fig.tight_layout()
    return fig


def fga_lineage(results: Results) -> pd.DataFrame:
    """Each fused child of the last generation: its parents and main parent (FAML networks,
    1-based, or the previous generation's children), and the training losses of the child
    and of its control."""
    d = results.default
    rows = d.networks.set_index(["model", "replicate", "network"])
    out = []
    for (model, r, k), row in rows.loc[[FGA]].iterrows() if FGA in rows.index else []:
        out.append({"replicate": r + 1, "child": k,
                    "parents": ", ".join(str(p + 1) for p in row["parents"]),
                    "main parent": int(row["main_parent"]) + 1,
                    "child's training loss": row["training_loss"],
                    "control's training loss": rows.loc[(CONTROL, r, k), "training_loss"]})
    return pd.DataFrame(out).set_index(["replicate", "child"])
