"""The chapter's tables of networks (numeric until :meth:`fernb.report.Report.table` formats
them): Table 3 recomputed, the architectures, did every network learn, Table 1 (where the
label ranks) and Table 2 (the ablation) with its tests; the helpers the other readings share
(:mod:`.voting`, :mod:`.mechanism`, :mod:`.saliency`).

A *network* row is the mean over a model's networks (single models: the paper does not say
which of its networks it reports); an *ensemble* row votes over the networks of one replicate
and is the mean over replicates. Tests follow the units: networks of their own seeds are
compared by a paired t-test over seeds; decisions of ensembles that share one test set by a
sign-flip test clustered by image (:func:`fernb.evaluate.clustered_test`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from fernb.ensemble import PluralityVote, SoftmaxSum, TopTwoVote, label_rank_distribution
from fernb.evaluate import TestResult, clustered_test, paired_ttest
from fernb.models.faml import r18_faml
from fernb.studies.faml.protocol import CE, CONTROL, DEFAULT, FGA, LSR, Regime, Results
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
