"""Predictions and metrics: accuracy, recall, confusion matrices (scikit-learn), fold
aggregation, valence/arousal RMSE (ESR Table 4), and the tests every chapter judges a
difference by, each on its independent units (scipy): a paired t-test over seeds or folds, an
exact McNemar test of two models on one test set, a test clustered by image when several
ensembles share one test set, and a rank correlation.

Metrics take model outputs in the project's one convention, logits of shape
(N, members, classes), or already reduced (N, C) scores or (N,) class predictions. Outputs
with more than one member need a decision ``rule`` (a :data:`fernb.ensemble.RULES` name or a
:class:`~fernb.ensemble.DecisionRule`). Accuracies are fractions in [0, 1].
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy import stats
from sklearn.metrics import (accuracy_score, confusion_matrix, recall_score,
                             root_mean_squared_error)
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fernb.complexity import eval_mode
from fernb.device import channels_last, resolve_device, resolve_precision, to_memory_format
from fernb.ensemble import RULES, DecisionRule, as_logits, get_rule, to_numpy

ArrayLike = torch.Tensor | np.ndarray | Sequence


def _batches(data: Dataset | DataLoader | torch.Tensor, batch_size: int) -> Iterable:
    if isinstance(data, torch.Tensor):
        return data.split(batch_size)
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, Dataset):
        return DataLoader(data, batch_size=batch_size, shuffle=False)
    raise TypeError(f"data must be a FaceDataset, torch Dataset, DataLoader or tensor, got "
                    f"{type(data).__name__}")


def predict(model: nn.Module, data: Dataset | DataLoader | torch.Tensor, *,
            device: str | torch.device = "auto", precision: str = "auto",
            batch_size: int = 256, output: str = "forward"
            ) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Model outputs for every sample, in order, as (N, M, C) logits on the CPU.

    Runs under ``torch.no_grad()`` in eval mode and restores every sub-module's own mode
    afterwards (frozen BatchNorm stays in eval). The model is moved to ``device`` (``"auto"``:
    CUDA when available). Batches that are ``(image, target)`` pairs
    use the images only. A (B, C) output (a plain classifier) becomes (B, 1, C); a model
    returning a tuple of tensors gets a tuple of concatenated outputs. ``output`` names the
    model method to call, e.g. ``"forward_affect"`` for ESR-9's valence/arousal (B, M, 2).
    ``precision`` is the forward pass's autocast (:mod:`fernb.device`); outputs are fp32.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not callable(getattr(model, output, None)):
        raise ValueError(f"the model has no method {output!r}")
    method = getattr(model, output)
    batches = _batches(data, batch_size)
    device = resolve_device(device)
    mixed = resolve_precision(precision, device)
    model.to(device)
    outputs = []
    with eval_mode(model), torch.no_grad(), channels_last(model) as layout:
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            with mixed.autocast():
                out = method(to_memory_format(x.to(device), layout))
            if isinstance(out, (tuple, list)):
                outputs.append(tuple(_cpu32(o) for o in out))
            else:
                outputs.append(_cpu32(out.unsqueeze(1) if out.ndim == 2 else out))
    if not outputs:
        raise ValueError("data is empty: nothing to predict")
    if isinstance(outputs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outputs))
    return torch.cat(outputs)


def _cpu32(out: torch.Tensor) -> torch.Tensor:
    """An output on the CPU, floating point in fp32, in the default memory layout."""
    out = out.float() if out.is_floating_point() else out
    return out.cpu().contiguous()


def to_predictions(outputs: ArrayLike, rule: str | DecisionRule | None = None) -> np.ndarray:
    """(N,) classes from (N, M, C) logits (via ``rule`` when M > 1), (N, C) scores or (N,)."""
    arr = outputs if isinstance(outputs, torch.Tensor) else np.asarray(outputs)
    if arr.ndim == 1:
        return to_numpy(arr).astype(np.int64)
    if arr.ndim == 2:
        return to_numpy(arr).argmax(axis=1)
    logits = as_logits(arr)
    if logits.shape[1] > 1 and rule is None:
        raise ValueError(f"outputs have {logits.shape[1]} members: pass rule= one of "
                         f"{sorted(RULES)} (or a DecisionRule) to combine them")
    chosen = get_rule(rule) if rule is not None else RULES["plurality"]
    return to_numpy(chosen(logits))


def _labels(labels: ArrayLike, n: int) -> np.ndarray:
    y = to_numpy(labels).reshape(-1).astype(np.int64)
    if len(y) != n:
        raise ValueError(f"{n} predictions but {len(y)} labels")
    return y


def accuracy(outputs: ArrayLike, labels: ArrayLike,
             rule: str | DecisionRule | None = None) -> float:
    """Fraction of correct predictions (``sklearn.metrics.accuracy_score``)."""
    pred = to_predictions(outputs, rule)
    return float(accuracy_score(_labels(labels, len(pred)), pred))


def per_class_recall(outputs: ArrayLike, labels: ArrayLike, classes: Sequence[str],
                     rule: str | DecisionRule | None = None) -> pd.Series:
    """Recall of every class (the diagonal of the row-normalised confusion matrix);
    NaN for a class absent from ``labels``."""
    pred = to_predictions(outputs, rule)
    recall = recall_score(_labels(labels, len(pred)), pred, labels=list(range(len(classes))),
                          average=None, zero_division=np.nan)
    return pd.Series(recall, index=list(classes), name="recall")


def normalized_confusion(outputs: ArrayLike, labels: ArrayLike, classes: Sequence[str],
                         rule: str | DecisionRule | None = None,
                         normalize: str | None = "true") -> pd.DataFrame:
    """Confusion matrix (rows: true class, columns: predicted), rows summing to 1 by default
    as in ESR Fig. 6-7; ``normalize`` as in ``sklearn.metrics.confusion_matrix``."""
    pred = to_predictions(outputs, rule)
    cm = confusion_matrix(_labels(labels, len(pred)), pred, labels=list(range(len(classes))),
                          normalize=normalize)
    return pd.DataFrame(cm, index=pd.Index(classes, name="true"),
                        columns=pd.Index(classes, name="predicted"))


def accuracy_table(logits: ArrayLike, labels: ArrayLike,
                   rules: Iterable[str | DecisionRule] = tuple(RULES),
                   member_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Accuracy of every member and of every decision rule, one row each.

    Columns: ``model`` (member name or rule name), ``kind`` ("member" or "ensemble") and
    ``accuracy``.
    """
    z = as_logits(logits if isinstance(logits, torch.Tensor) else np.asarray(logits))
    m = z.shape[1]
    names = ([f"member {i + 1}" for i in range(m)] if member_names is None
             else list(member_names))
    if len(names) != m:
        raise ValueError(f"{len(names)} member_names for {m} members")
    rows = [{"model": name, "kind": "member", "accuracy": accuracy(z[:, i], labels)}
            for i, name in enumerate(names)]
    for rule in rules:
        label = rule if isinstance(rule, str) else repr(rule)
        rows.append({"model": label, "kind": "ensemble",
                     "accuracy": accuracy(z, labels, rule=get_rule(rule))})
    return pd.DataFrame(rows)


def aggregate_folds(results: pd.DataFrame, *, by: str | Sequence[str] = "model",
                    value: str = "accuracy", scale: float = 1.0,
                    decimals: int = 3) -> pd.DataFrame:
    """Mean and sample standard deviation (ddof=1) of ``value`` over folds, per ``by`` group.

    ``results`` is long-form, one row per (group, fold). Returns columns ``mean``, ``std``,
    ``n`` (scaled by ``scale``, e.g. 100 for %) and ``mean ± std`` formatted with
    ``decimals``, as in ESR Table 1 ("85.5 ± 3.5").
    """
    keys = [by] if isinstance(by, str) else list(by)
    missing = [c for c in [*keys, value] if c not in results.columns]
    if missing:
        raise ValueError(f"results lacks column(s) {missing}; it has {list(results.columns)}")
    grouped = results.groupby(keys, sort=False)[value]
    out = pd.DataFrame({"mean": grouped.mean() * scale, "std": grouped.std(ddof=1) * scale,
                        "n": grouped.size()})
    out["mean ± std"] = [f"{mu:.{decimals}f} ± {sd:.{decimals}f}"
                         for mu, sd in zip(out["mean"], out["std"])]
    return out


@dataclass(frozen=True)
class TestResult:
    """A difference between two approaches (or a correlation), judged on independent units.

    Attributes:
        test: what was computed, e.g. ``"paired t-test"``.
        unit: what the independent units are (``"seeds"``, ``"folds"``, ``"images"``...).
        n: how many there were.
        estimate: the mean difference a - b in the scores' own scale (a correlation's rho).
        p: the two-sided p-value.
        ci: the 95 % confidence interval of ``estimate`` (None where the test gives none).
        statistic: the test statistic (t, the discordant count, rho...).
        note: what a reader needs to know about an unusual case (e.g. a constant difference).
    """

    test: str
    unit: str
    n: int
    estimate: float
    p: float
    ci: tuple[float, float] | None = None
    statistic: float | None = None
    note: str = ""

    def significant(self, alpha: float = 0.05) -> bool:
        return bool(self.p < alpha)

    def describe(self, scale: float = 1.0, what: str = "") -> str:
        """One line for a reader, e.g. ``paired t-test over 3 seeds: +2.1 points (95% CI
        -0.5 to 4.7), p = 0.080``; ``scale`` multiplies the estimate (100 for points from
        fractions), ``what`` names its unit (``"points"``)."""
        unit = f" {what}" if what else ""
        text = f"{self.test} over {self.n} {self.unit}: {self.estimate * scale:+.3g}{unit}"
        if self.ci is not None:
            lo, hi = (v * scale for v in self.ci)
            text += f" (95% CI {lo:+.3g} to {hi:+.3g})"
        text += f", p = {format_p(self.p)}"
        return text + (f"; {self.note}" if self.note else "")


def format_p(p: float) -> str:
    """A p-value as a reader reads it: three decimals, ``< 0.001`` below that."""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _pairs(a: ArrayLike, b: ArrayLike, what: str) -> tuple[np.ndarray, np.ndarray]:
    x = to_numpy(a).astype(float).reshape(-1)
    y = to_numpy(b).astype(float).reshape(-1)
    if len(x) != len(y):
        raise ValueError(f"{what} needs two samples of equal length (one value per unit), got "
                         f"{len(x)} and {len(y)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError(f"{what} needs finite scores, got {x.tolist()} and {y.tolist()}")
    return x, y


def paired_ttest(a: ArrayLike, b: ArrayLike, *, unit: str = "folds") -> TestResult:
    """Two-sided paired t-test of per-unit scores a and b (``scipy.stats.ttest_rel``; ESR
    Table 2), with the t confidence interval of the mean difference.

    Degenerate cases are answered, not left to NaN: the same score in every unit gives
    p = 1; the same non-zero difference in every unit has no variance for a t-test, so its
    p is the exact sign-flip (permutation) p-value 2 / 2^n, the smallest any test on n units
    can give. Fewer than two units raise an error.
    """
    x, y = _pairs(a, b, "a paired t-test")
    n = len(x)
    if n < 2:
        raise ValueError(f"a paired t-test needs at least two {unit}, got {n}")
    d = x - y
    if np.allclose(d, d[0], rtol=0, atol=1e-12 * max(1.0, float(np.abs(d).max()))):
        if abs(d[0]) <= 1e-12:
            return TestResult("paired t-test", unit, n, 0.0, 1.0, (0.0, 0.0), 0.0,
                              f"no difference in any of the {n} {unit}")
        return TestResult("paired t-test", unit, n, float(d[0]), min(1.0, 2.0 ** (1 - n)),
                          (float(d[0]), float(d[0])), float(np.sign(d[0]) * np.inf),
                          f"the same difference in every unit: exact sign-flip p")
    res = stats.ttest_rel(x, y)
    ci = res.confidence_interval(0.95)
    return TestResult("paired t-test", unit, n, float(d.mean()), float(res.pvalue),
                      (float(ci.low), float(ci.high)), float(res.statistic))


def mcnemar(correct_a: ArrayLike, correct_b: ArrayLike) -> TestResult:
    """Exact McNemar test of two models on one test set: a two-sided binomial test on the
    images exactly one of them gets right. ``estimate`` is the accuracy difference a - b with
    its Wald interval for paired proportions; no discordant image gives p = 1."""
    a = to_numpy(correct_a).astype(bool).reshape(-1)
    b = to_numpy(correct_b).astype(bool).reshape(-1)
    if len(a) != len(b) or not len(a):
        raise ValueError(f"McNemar's test needs the correctness of both models on the same "
                         f"images, got {len(a)} and {len(b)}")
    n = len(a)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    discordant = only_a + only_b
    diff = (only_a - only_b) / n
    half = 1.96 * np.sqrt(max(discordant - (only_a - only_b) ** 2 / n, 0.0)) / n
    p = float(stats.binomtest(only_a, discordant).pvalue) if discordant else 1.0
    return TestResult("exact McNemar test", "images", n, diff, p, (diff - half, diff + half),
                      float(only_a), f"{only_a} images only a gets right, {only_b} only b")


def clustered_test(scores_a: ArrayLike, scores_b: ArrayLike, *, draws: int = 10_000,
                   seed: int = 0) -> TestResult:
    """Several ensembles of kind a and of kind b scored on one shared test set: the image
    is the independent unit (ensembles built from the same networks, or tested on the same
    faces, are not). Each image's mean score over the ensembles of a kind (e.g. correct = 1)
    gives a per-image difference d; ``estimate`` is its mean, the p-value a sign-flip
    permutation test over images and the interval a percentile bootstrap over images (both
    with ``draws`` resamples, seeded).

    Args:
        scores_a, scores_b: (R_a, N) and (R_b, N) scores of each ensemble on the N images
            (a single ensemble may be given as (N,)).
    """
    a, b = (np.atleast_2d(to_numpy(s).astype(float)) for s in (scores_a, scores_b))
    if a.shape[1] != b.shape[1] or not a.shape[1]:
        raise ValueError(f"both kinds need scores on the same images, got {a.shape[1]} and "
                         f"{b.shape[1]} images")
    d = a.mean(0) - b.mean(0)  # (N,)
    n = len(d)
    rng = np.random.default_rng(seed)
    observed = abs(d.mean())
    signs = rng.choice((-1.0, 1.0), size=(draws, n))
    flipped = np.abs((signs * d).mean(1))
    p = float((1 + (flipped >= observed - 1e-15).sum()) / (draws + 1))
    boot = d[rng.integers(0, n, size=(draws, n))].mean(1)
    ci = (float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975)))
    note = f"{a.shape[0]} and {b.shape[0]} ensembles on the same images"
    return TestResult("sign-flip test clustered by image", "images", n, float(d.mean()),
                      1.0 if observed == 0 else p, ci, float(d.mean()), note)


def rank_correlation(x: ArrayLike, y: ArrayLike, *, min_points: int = 5) -> TestResult:
    """Spearman's rank correlation with its two-sided p-value; fewer than ``min_points``
    distinct values on either axis raise an error (a rank correlation of three points says
    nothing)."""
    u, v = _pairs(x, y, "a rank correlation")
    distinct = min(len(np.unique(u)), len(np.unique(v)))
    if distinct < min_points:
        raise ValueError(f"a rank correlation needs at least {min_points} distinct points, "
                         f"got {distinct}")
    res = stats.spearmanr(u, v)
    return TestResult("Spearman rank correlation", "points", len(u), float(res.statistic),
                      float(res.pvalue), None, float(res.statistic))


def ttest_table(scores: Mapping[str, ArrayLike], *, alpha: float = 0.05,
                unit: str = "folds") -> pd.DataFrame:
    """ESR Table 2 layout: the paired t-test p-value of every pair of approaches (rows vs
    later columns; NaN below the diagonal). Numbers only: mark p < ``alpha`` when showing."""
    names = list(scores)
    if len(names) < 2:
        raise ValueError(f"need at least two approaches, got {names}")
    table = pd.DataFrame(np.nan, index=names[:-1], columns=names[1:])
    for i, j in itertools.combinations(range(len(names)), 2):
        table.loc[names[i], names[j]] = paired_ttest(scores[names[i]], scores[names[j]],
                                                     unit=unit).p
    return table


def rmse(pred: ArrayLike, target: ArrayLike,
         dims: Sequence[str] = ("valence", "arousal")) -> dict[str, float]:
    """Root-mean-square error per affect dimension (ESR Table 4).

    ``pred`` is (N, 2) or (N, M, 2); members are averaged first, as ESR-9 does. Columns follow
    ``FaceDataset.valence_arousal``: (valence, arousal).
    """
    p, t = to_numpy(pred).astype(float), to_numpy(target).astype(float)
    if p.ndim == 3:
        p = p.mean(axis=1)
    if p.shape != t.shape or p.ndim != 2 or p.shape[1] != len(dims):
        raise ValueError(f"pred must be (N, {len(dims)}) or (N, M, {len(dims)}) and match "
                         f"target; got {p.shape} vs {t.shape}")
    errors = root_mean_squared_error(t, p, multioutput="raw_values")
    return {d: float(e) for d, e in zip(dims, errors)}


def top_confusions(outputs: ArrayLike, labels: ArrayLike, classes: Sequence[str], k: int = 4,
                   rule: str | DecisionRule | None = None) -> pd.Series:
    """The ``k`` largest off-diagonal shares of the row-normalised confusion matrix, indexed
    by (true, predicted)."""
    cm = normalized_confusion(outputs, labels, classes, rule=rule)
    pairs = cm.stack()
    pairs = pairs[[t != p for t, p in pairs.index]]
    pairs.index.names = ["true", "predicted"]
    return pairs.sort_values(ascending=False, kind="stable").head(k).rename("share of true class")
