"""Predictions and metrics: accuracy, recall, confusion matrices (scikit-learn), fold
aggregation, paired t-tests (scipy; ESR Table 2) and valence/arousal RMSE (ESR Table 4).

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
class TTestResult:
    """A paired t-test of two approaches' per-fold scores."""

    a: str
    b: str
    t: float
    p: float
    alpha: float = 0.05

    @property
    def significant(self) -> bool:
        return bool(self.p < self.alpha)

    @property
    def row(self) -> dict[str, str | float]:
        """One table row, p marked as in ESR Table 2 (✓ significant, ✗ not)."""
        return {"comparison": f"{self.a} vs {self.b}", "t": self.t, "p": self.p,
                "significant": "✓" if self.significant else "✗"}


def paired_ttest(a: ArrayLike, b: ArrayLike, *, names: tuple[str, str] = ("a", "b"),
                 alpha: float = 0.05) -> TTestResult:
    """Two-sided paired t-test of per-fold scores (``scipy.stats.ttest_rel``; ESR Table 2)."""
    x, y = to_numpy(a).astype(float).reshape(-1), to_numpy(b).astype(float).reshape(-1)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"paired t-test needs two equal-length samples of >= 2 folds, got "
                         f"{len(x)} and {len(y)}")
    res = stats.ttest_rel(x, y)
    return TTestResult(names[0], names[1], float(res.statistic), float(res.pvalue), alpha)


def ttest_table(scores: Mapping[str, ArrayLike], *, alpha: float = 0.05,
                decimals: int = 3) -> pd.DataFrame:
    """ESR Table 2 layout: p-values of every pair of approaches (rows vs later columns),
    marked ✓ when p < alpha, "−" below the diagonal."""
    names = list(scores)
    if len(names) < 2:
        raise ValueError(f"need at least two approaches, got {names}")
    table = pd.DataFrame("−", index=names[:-1], columns=names[1:])
    for i, j in itertools.combinations(range(len(names)), 2):
        r = paired_ttest(scores[names[i]], scores[names[j]], names=(names[i], names[j]),
                         alpha=alpha)
        table.loc[names[i], names[j]] = f"{r.p:.{decimals}f} {r.row['significant']}"
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
