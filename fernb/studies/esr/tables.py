"""Chapter 1's tables and figures, read from the stored results. Tables stay numeric (a value
that does not exist is NaN); :meth:`fernb.report.Report.table` formats them."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fernb import complexity, figures
from fernb.chapters import load_profile
from fernb.ensemble import DIVERSITY_LABELS, diversity
from fernb.evaluate import accuracy, accuracy_table, format_p, normalized_confusion, rmse, \
    ttest_table
from fernb.explain import chance_level, evidence_score, overlay
from fernb.models.esr import ESR, single_network, traditional_ensemble
from fernb.params import python_literal
from fernb.studies.esr.protocol import LabResults, Results, WildResults
from fernb.studies.esr.settings import Settings

TABLE1 = ("Single network", "Traditional ensemble", "ESR-4 Lvl. 3", "ESR-4 Lvl. 4")


# ----------------------------------------------------------------------- settings and cost

def scaled_down(settings: Settings) -> pd.DataFrame:
    """Every setting of this run next to the ``paper`` profile's (the paper's protocol where
    it prints one), with what it is; the folders of real datasets left out."""
    paper = {**settings.defaults(), **load_profile("paper").get("01_esr", {})}
    rows = []
    for name, declared in settings.declared().items():
        if name in ("data_root", "wild_root", "device"):
            continue
        rows.append({"parameter": name, "this run": _shown(getattr(settings, name)),
                     "paper profile": _shown(paper[name]), "what it is": declared.help})
    return pd.DataFrame(rows).set_index("parameter")


def _shown(value: object) -> object:
    return python_literal(value) if isinstance(value, (list, dict, str)) else value


def paper_models() -> dict[str, ESR]:
    """The paper's in-the-lab networks (width 1.0, eight classes): the single network, the
    traditional ensemble and ESR-4 at every branching level."""
    models = {"Single network": single_network(), "Traditional ensemble": traditional_ensemble()}
    return models | {f"ESR-4 Lvl. {lv}": ESR(arch="lab", level=lv, n_branches=4)
                     for lv in range(1, 6)}


def paper_complexity() -> pd.DataFrame:
    """Parameters, FLOPs and storage of the paper's networks at its 96x96 input, with ratios
    to the traditional ensemble (Table 1's counts)."""
    return complexity.complexity_table(paper_models(), (1, 96, 96),
                                       reference="Traditional ensemble")


def measured_cost(settings: Settings, n_classes: int) -> pd.DataFrame:
    """:func:`fernb.complexity.measured_cost` of this run's TE and ESR-4 at every level (its
    width, image size and classes): time per image of a training step and of inference as
    ratios to the TE (median and range over the rounds), next to FLOPs and parameters."""
    models = {"Traditional ensemble": traditional_ensemble(
        n_networks=settings.n_train_folds, n_classes=n_classes, width=settings.width)}
    models |= {f"ESR-4 Lvl. {lv}": ESR(arch="lab", level=lv, n_branches=settings.n_train_folds,
                                       n_classes=n_classes, width=settings.width)
               for lv in range(1, 6)}
    timing = complexity.measured_cost(models, (1, settings.image_size, settings.image_size),
                                      reference="Traditional ensemble", device=settings.device)
    return pd.DataFrame({
        "training time (median)": timing["train_time_ratio"],
        "training time (lowest)": timing["train_ratio_low"],
        "training time (highest)": timing["train_ratio_high"],
        "inference time (median)": timing["inference_time_ratio"],
        "inference time (lowest)": timing["inference_ratio_low"],
        "inference time (highest)": timing["inference_ratio_high"],
        "FLOPs": timing["flops_ratio"], "parameters": timing["params_ratio"]})


# ----------------------------------------------------------------------- the lab runs

def runs_table(lab: LabResults) -> pd.DataFrame:
    """One row per run: trial, approach, test accuracy (%), parameters and training
    seconds."""
    t = lab.table
    return pd.DataFrame({"trial": t["trial"], "approach": t["label"],
                         "accuracy (%)": 100 * t["accuracy"], "parameters": t["params"],
                         "training seconds": t["train_seconds"]}).set_index(["trial", "approach"])


def keys_of(lab: LabResults, label: str) -> list[str]:
    """The run keys of one approach (e.g. "ESR-4 Lvl. 3 (varied)"), in trial order."""
    rows = lab.table[lab.table["label"] == label].sort_values("trial")
    return rows["key"].tolist()


def labels_of(lab: LabResults) -> list[str]:
    """Every approach of the study, in plan order."""
    return list(dict.fromkeys(lab.table["label"]))


def approaches(lab: LabResults, strategy: str) -> dict[str, str]:
    """Table 1's approaches (the names the paper gives them) -> this study's labels: single
    network, TE and ESR-4 at levels 3 and 4 under ``strategy`` (those the grid holds)."""
    labels = set(labels_of(lab))
    picked = {"Single network": "Single network", "Traditional ensemble": "Traditional ensemble"}
    for level in (3, 4):
        label = f"ESR-4 Lvl. {level} ({strategy})"
        if label in labels:
            picked[f"ESR-4 Lvl. {level}"] = label
    return picked


def trial_scores(lab: LabResults, label: str) -> pd.Series:
    """Test accuracy (%) of one approach per trial."""
    rows = lab.table[lab.table["label"] == label]
    return pd.Series(100 * rows["accuracy"].to_numpy(), index=rows["trial"].to_numpy(),
                     name=label).sort_index()


def pooled(lab: LabResults, label: str) -> tuple[np.ndarray, np.ndarray]:
    """Test logits (N, M, C) and labels of one approach, all trials' test folds together
    (disjoint faces)."""
    keys = keys_of(lab, label)
    return (np.concatenate([lab.logits[k] for k in keys]),
            np.concatenate([lab.labels[k] for k in keys]))


def majority_rate(lab: LabResults) -> float:
    """The share of the most frequent class in the trials' test folds."""
    labels = pooled(lab, "Single network")[1]
    return float(np.bincount(labels).max() / len(labels))


def by_level(lab: LabResults) -> pd.DataFrame:
    """Mean and std over trials of ESR-4's accuracy (%) per strategy and level (Fig. 4);
    the std is NaN with one trial."""
    t = lab.table[(lab.table["model"] == "ESR") & (lab.table["init"] == "own")]
    grouped = t.assign(accuracy=100 * t["accuracy"]).groupby(["strategy", "level"],
                                                             sort=False)["accuracy"]
    return grouped.agg(mean="mean", std="std", trials="size").reset_index()


def fig4(lab: LabResults) -> Figure:
    """Fig. 4: mean test accuracy over trials per strategy and level (band: one std), with
    the single network and the TE as dashed lines."""
    levels = by_level(lab)
    fig = figures.line_with_error(levels.fillna({"std": 0.0}), x="level", y="mean", err="std",
                                  hue="strategy")
    ax = fig.axes[0]
    for label, style, name in (("Single network", ":", "single network"),
                               ("Traditional ensemble", "--", "traditional ensemble")):
        ax.axhline(trial_scores(lab, label).mean(), ls=style, c="gray", label=name)
    ax.set(xlabel="branching level (shared convolutions)", ylabel="test accuracy (%)")
    ax.legend(fontsize=8)
    return fig


def table1(lab: LabResults, strategy: str, params: Mapping[str, int]) -> pd.DataFrame:
    """Table 1: test accuracy (%) mean and std over trials, and the paper network's
    parameters."""
    rows = []
    for name, label in approaches(lab, strategy).items():
        scores = trial_scores(lab, label)
        rows.append({"approach": name, "parameters (paper network)": int(params[name]),
                     "accuracy (%)": scores.mean(), "std": scores.std(ddof=1),
                     "trials": len(scores)})
    return pd.DataFrame(rows).set_index("approach")


def table2(lab: LabResults, strategy: str) -> pd.DataFrame:
    """Table 2: paired t-test p-values between the approaches over the trials (below the
    diagonal, and with fewer than two trials, NaN)."""
    scores = {n: trial_scores(lab, label).to_numpy()
              for n, label in approaches(lab, strategy).items()}
    if len(next(iter(scores.values()))) < 2:  # no test: the layout, every p missing
        names = list(scores)
        return pd.DataFrame(np.nan, index=names[:-1], columns=names[1:])
    return ttest_table(scores, unit="trials")


def p_formats(table: pd.DataFrame) -> dict[str, object]:
    """Every column shown as a p-value (three decimals, ``< 0.001`` below)."""
    return {c: format_p for c in table.columns}


def diversity_table(lab: LabResults, labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean over trials of the pairwise diversity of each ensemble's members (Kuncheva &
    Whitaker: disagreement, Q-statistic, double fault) and its oracle accuracy; an undefined
    value (e.g. a Q-statistic of members never both wrong) is NaN."""
    labels = [lb for lb in labels_of(lab) if lb != "Single network"] if labels is None \
        else labels
    rows = [{"ensemble": label, **diversity(lab.logits[k], lab.labels[k])}
            for label in labels for k in keys_of(lab, label)]
    table = pd.DataFrame(rows).groupby("ensemble", sort=False).mean(numeric_only=True)
    return table.rename(columns=DIVERSITY_LABELS)


def trial_diversity(lab: LabResults, label: str, measure: str = "disagreement") -> pd.Series:
    """One diversity measure of an ensemble's members per trial."""
    return pd.Series([diversity(lab.logits[k], lab.labels[k])[measure]
                      for k in keys_of(lab, label)], index=trial_scores(lab, label).index)


def init_control(lab: LabResults, strategy: str, level: int) -> pd.DataFrame:
    """The saliency run's ESR with its added branches from distinct draws (Algorithm 1)
    against the same ESR whose added branches start from one identical draw: accuracy and
    member diversity, mean over trials."""
    own = f"ESR-4 Lvl. {level} ({strategy})"
    same = f"ESR-4 Lvl. {level} ({strategy}, identical starts)"
    table = diversity_table(lab, [own, same])
    table.insert(0, "accuracy (%)", [trial_scores(lab, lb).mean() for lb in (own, same)])
    table.index = pd.Index(["own draw per branch", "one identical draw"],
                           name="initialisation of added branches")
    return table


def convergence(lab: LabResults, strategy: str, level: int) -> pd.DataFrame:
    """Validation accuracy (%) per epoch of each newly added ESR branch and TE network in
    every trial (Fig. 5, left): columns trial, epoch, member, model, accuracy."""
    esr = f"ESR-4 Lvl. {level} ({strategy})"
    curves = []
    for model, label in (("ESR", esr), ("TE", "Traditional ensemble")):
        for key in keys_of(lab, label):
            trial = int(lab.table.loc[lab.table["key"] == key, "trial"].iloc[0])
            for b, frame in enumerate(lab.histories[key], start=1):
                column = f"val_acc_{b}" if model == "ESR" else "val_acc_1"
                curves.append(pd.DataFrame({
                    "trial": trial, "epoch": frame["epoch"], "member": f"branch/network {b}",
                    "model": model, "accuracy": 100 * frame[column]}))
    return pd.concat(curves, ignore_index=True)


def fig5_convergence(curves: pd.DataFrame) -> Figure:
    """Fig. 5, left: one panel per added member, ESR against TE (mean over trials, band: 95%
    interval)."""
    return figures.facet_lines(curves, x="epoch", y="accuracy", hue="model", col="member")


def first_update(curves: pd.DataFrame) -> pd.DataFrame:
    """Validation accuracy (%) after the first epoch of each added member (the second
    onwards: the first is the same network in both), ESR against TE, per trial."""
    first = curves[curves["epoch"] == 1].pivot_table(index=["trial", "member"],
                                                     columns="model", values="accuracy")
    first = first.drop(index="branch/network 1", level="member", errors="ignore")
    first["ESR - TE"] = first["ESR"] - first["TE"]
    first["ESR / TE"] = first["ESR"] / first["TE"].where(first["TE"] > 0)
    first.columns.name = None
    return first


def first_update_table(first: pd.DataFrame) -> pd.DataFrame:
    """:func:`first_update` as a reader reads it: mean over trials per member."""
    return first.groupby(level="member").mean()


# ----------------------------------------------------------------------- saliency, confusions

def saliency_figure(results: Results) -> Figure:
    """Fig. 5, right: Grad-CAM of the newest ESR branch and TE network at each milestone for
    the first saliency face of the first trial; an empty map is marked."""
    s = results.settings
    lab, data = results.lab, results.data
    esr_key = keys_of(lab, f"ESR-4 Lvl. {s.level} ({s.strategy})")[0]
    te_key = keys_of(lab, "Traditional ensemble")[0]
    face = data.images[int(lab.saliency[esr_key]["images"][0])]
    overlays, titles = [], []
    for key, name in ((esr_key, "ESR"), (te_key, "TE")):
        for stage in range(1, s.n_train_folds + 1):
            for e in sorted(s.milestones):
                cam = lab.saliency[key][f"stage{stage}_epoch{e}"][0]
                overlays.append(overlay(face, cam))
                titles.append(f"{name} {stage}, ep. {e}" + (" (empty)" if cam.max() == 0 else ""))
    return figures.image_grid(overlays, titles, ncols=len(s.milestones) * 2)


def evidence_table(results: Results) -> pd.DataFrame:
    """Share of each milestone map's mass inside the faces' evidence regions (mean over the
    faces), per model, member and epoch, next to chance (a uniform map's score); NaN for a
    map with no positive evidence. Empty for data without evidence masks (real datasets)."""
    s, lab, data = results.settings, results.lab, results.data
    if data.masks is None:
        return pd.DataFrame()
    esr_key = keys_of(lab, f"ESR-4 Lvl. {s.level} ({s.strategy})")[0]
    te_key = keys_of(lab, "Traditional ensemble")[0]
    masks = data.masks[lab.saliency[esr_key]["images"]]
    rows = []
    for name, key in (("ESR", esr_key), ("TE", te_key)):
        for stage in range(1, s.n_train_folds + 1):
            for epoch in sorted(s.milestones):
                scores = np.asarray(evidence_score(
                    lab.saliency[key][f"stage{stage}_epoch{epoch}"], masks))
                scores = scores[np.isfinite(scores)]
                rows.append({"model": name, "member": stage, "epoch": epoch,
                             "score": float(scores.mean()) if len(scores) else np.nan})
    table = pd.DataFrame(rows).pivot_table(index=["model", "member"], columns="epoch",
                                           values="score", dropna=False)
    table.columns = [f"epoch {e}" for e in table.columns]
    table["chance"] = float(np.mean(chance_level(masks)))
    return table


def confusion_esr4(results: Results) -> Figure:
    """The saliency run's ESR, test folds of all trials together."""
    s = results.settings
    logits, labels = pooled(results.lab, f"ESR-4 Lvl. {s.level} ({s.strategy})")
    cm = normalized_confusion(logits, labels, results.data.classes, rule="plurality")
    return figures.confusion_matrix(cm, results.data.classes,
                                    title=f"ESR-4 Lvl. {s.level} ({s.strategy}), all test folds")


# ----------------------------------------------------------------------- ESR-9

def esr9_members(wild: WildResults) -> pd.DataFrame:
    """Test accuracy (%) of every ESR-9 branch and of the ensemble's plurality vote."""
    names = [f"branch {b + 1}" for b in range(wild.logits.shape[1])]
    table = accuracy_table(wild.logits, wild.labels, rules=("plurality",), member_names=names)
    return table.assign(accuracy=100 * table["accuracy"]).rename(
        columns={"accuracy": "accuracy (%)"}).set_index("model")


def best_branch(wild: WildResults) -> int:
    """The index of ESR-9's most accurate branch on the test set."""
    return int(np.argmax([accuracy(wild.logits[:, m], wild.labels)
                          for m in range(wild.logits.shape[1])]))


def confusion_esr9(wild: WildResults, name: str) -> Figure:
    cm = normalized_confusion(wild.logits, wild.labels, wild.classes, rule="plurality")
    return figures.confusion_matrix(cm, wild.classes, title=f"ESR-9 on {name}")


def rmse_table(wild: WildResults) -> pd.DataFrame:
    """Table 4: valence and arousal RMSE of ESR-9 (mean of the branches' predictions), of
    every branch, and of predicting the training mean (empty without valence/arousal)."""
    if wild.affect is None:
        return pd.DataFrame()
    predicted, target = wild.affect["predicted"], wild.affect["target"]
    rows = {"ESR-9 (mean of branches)": rmse(predicted, target)}
    rows |= {f"branch {m + 1}": rmse(predicted[:, m], target) for m in range(predicted.shape[1])}
    rows["predict the training mean"] = rmse(
        np.broadcast_to(wild.affect["train_mean"], target.shape), target)
    return pd.DataFrame(rows).T


# ----------------------------------------------------------------------- training curves

def _stages(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """A model's stages one after the other: stage b's epochs follow stage b-1's."""
    parts, offset = [], 0
    for frame in frames:
        parts.append(frame.assign(epoch=frame["epoch"] + offset))
        offset += int(frame["epoch"].max())
    return pd.concat(parts, ignore_index=True)


def lab_curves(lab: LabResults) -> dict[str, list[pd.DataFrame]]:
    """Training curves of every approach, one per trial (the band spans the trials): the
    single network; each TE network, trained alone (the band spans networks and trials);
    every ESR through its stages, the ensemble of the branches trained so far."""
    curves: dict[str, list[pd.DataFrame]] = {}
    for label in labels_of(lab):
        keys = keys_of(lab, label)
        if label == "Traditional ensemble":
            curves["TE network"] = [f for k in keys for f in lab.histories[k]]
        else:
            curves[label] = [_stages(lab.histories[k]) for k in keys]
    return curves


def wild_curves(wild: WildResults) -> dict[str, list[pd.DataFrame]]:
    """ESR-9 through its stages (emotions) and its valence/arousal heads through theirs."""
    curves = {"ESR-9": [_stages(wild.histories)]}
    if wild.affect_histories:
        curves["ESR-9 valence/arousal heads"] = [_stages(wild.affect_histories)]
    return curves
