"""Ensemble decision rules, diversity measures and FGA fusion.

Every rule maps member logits of shape (batch, members, classes) to one class per sample;
a single network is members = 1. Rules share one base, :class:`DecisionRule`: a subclass
overrides ``combine`` ((B, M, C) logits -> (B, C) scores) and the prediction is the arg-max
of the scores, ties going to the lowest class index (as ESR's public code does).

Sources: ESR (Siqueira et al., AAAI 2020) plurality vote; Gan et al. (PRL 2019) eq. 7 score
average; Wadhawan & Gandhi (2023) eq. 4 and Zhou et al. eq. 13 softmax sum (NOI); Zhou et al.
eq. 10-12 top-two voting (T2V) and Sec. 3.2 / eq. 9 feature fusion among networks (FGA).
Zhou et al.'s Algorithm 1 leaves the genetic operators open; fernb's FGA is a plain seeded GA
over per-network fusion weights, applied to scores (:func:`fga_weights`) or to parameters
(:func:`fuse_state_dicts` inside a :func:`genetic_search` fitness).
"""
from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix

ArrayLike = torch.Tensor | np.ndarray


def to_numpy(x: ArrayLike | Sequence) -> np.ndarray:
    """A tensor (detached, on the CPU) or array-like as a numpy array."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def as_logits(logits: ArrayLike) -> torch.Tensor:
    """(B, M, C) logits as a float tensor, with a helpful error for other shapes."""
    if isinstance(logits, np.ndarray):
        logits = torch.from_numpy(logits)
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor or numpy array, got "
                        f"{type(logits).__name__}")
    if logits.ndim != 3:
        raise ValueError(
            f"logits must have shape (batch, members, classes), got {tuple(logits.shape)}; "
            "a single network's (batch, classes) output becomes (batch, 1, classes) with "
            ".unsqueeze(1)")
    return logits if logits.is_floating_point() else logits.float()


def _member_weights(weights: Sequence[float] | None, members: int) -> torch.Tensor | None:
    if weights is None:
        return None
    w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
    if w.ndim != 1 or len(w) != members:
        raise ValueError(f"weights must hold one value per member ({members}), got shape "
                         f"{tuple(w.shape)}")
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"weights must be finite and non-negative, got {w.tolist()}")
    return w


class DecisionRule(ABC):
    """Base of all rules: ``scores`` gives (B, C) class scores, calling gives (B,) classes."""

    def scores(self, logits: ArrayLike) -> torch.Tensor:
        """Class scores (B, C) of member logits (B, M, C)."""
        return self.combine(as_logits(logits))

    @abstractmethod
    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, M, C) validated logits -> (B, C) scores."""

    def __call__(self, logits: ArrayLike) -> torch.Tensor:
        """Predicted class (B,); ties go to the lowest class index (``torch.argmax``)."""
        return self.scores(logits).argmax(dim=1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class PluralityVote(DecisionRule):
    """Each member votes for its arg-max class; the most voted class wins (ESR inference).

    With ties to the lowest class index this is also Zhou et al.'s T1V ("top one voting,
    i.e., bagging", Table 6) and equals :class:`TopTwoVote` with ``alpha=1, beta=0``.
    """

    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        votes = F.one_hot(logits.argmax(dim=2), logits.shape[2])  # (B, M, C)
        return votes.sum(dim=1).to(logits.dtype)  # (B, C)


def plurality_vote(logits: ArrayLike) -> torch.Tensor:
    """(B, M, C) logits -> (B,) plurality-vote classes, ties to the lowest index (ESR)."""
    return PluralityVote()(logits)


class MajorityVote(PluralityVote):
    """A class wins only with more than M/2 votes; otherwise ``fallback`` decides.

    Args:
        fallback: rule (or :data:`RULES` name) for samples without a strict majority; the
            default softmax sum keeps every sample classified. ``None`` rejects them with
            class ``-1``, which every accuracy counts as an error.
    """

    def __init__(self, fallback: DecisionRule | str | None = "softmax_sum") -> None:
        self.fallback = None if fallback is None else get_rule(fallback)

    def __call__(self, logits: ArrayLike) -> torch.Tensor:
        z = as_logits(logits)
        count, winner = self.combine(z).max(dim=1)  # (B,), (B,)
        has_majority = count > z.shape[1] / 2
        other = self.fallback(z) if self.fallback is not None else torch.full_like(winner, -1)
        return torch.where(has_majority, winner, other)

    def __repr__(self) -> str:
        return f"MajorityVote(fallback={self.fallback!r})"


class ScoreAverage(DecisionRule):
    """Unweighted average of the members' last-layer scores (Gan et al., eq. 7)."""

    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.mean(dim=1)


class SoftmaxSum(DecisionRule):
    """Sum of the members' softmax outputs, optionally weighted.

    Zhou et al.'s NOI (eq. 13) and Wadhawan & Gandhi's ensemble policy (eq. 4); with
    ``weights`` it is the weighted score sum whose weights :func:`fga_weights` searches.
    """

    def __init__(self, weights: Sequence[float] | None = None) -> None:
        self.weights = None if weights is None else [float(w) for w in weights]

    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        probs = logits.softmax(dim=2)  # (B, M, C)
        w = _member_weights(self.weights, logits.shape[1])
        if w is not None:
            probs = probs * w.to(probs).view(1, -1, 1)
        return probs.sum(dim=1)

    def __repr__(self) -> str:
        return f"SoftmaxSum(weights={self.weights})"


def descending_ranks(logits: ArrayLike) -> torch.Tensor:
    """Rank of every class in each member's output, 0 = largest (ties: lower index first)."""
    z = as_logits(logits)
    order = torch.argsort(z, dim=2, descending=True, stable=True)  # (B, M, C) class ids
    return torch.argsort(order, dim=2)  # (B, M, C) ranks


def t2v_votes(logits: ArrayLike, alpha: float = 1.9, beta: float = 1.0) -> torch.Tensor:
    """Zhou et al. eq. 10: each member gives ``alpha`` to its first and ``beta`` to its
    second-ranked class, 0 elsewhere. Returns V of shape (B, M, C)."""
    z = as_logits(logits)
    _check_t2v(z, alpha, beta)
    rank = descending_ranks(z)
    zero = torch.zeros((), dtype=z.dtype)
    return torch.where(rank == 0, alpha, torch.where(rank == 1, beta, zero)).to(z.dtype)


def t2v_votes_eq11(logits: ArrayLike, alpha: float = 1.9, beta: float = 1.0) -> torch.Tensor:
    """Zhou et al. eq. 11, the closed form of eq. 10:
    V = (alpha - 2 beta) max(S + 2 - C, 0) + beta max(S + 3 - C, 0).

    Eq. 11 reproduces eq. 10 only when S is the *ascending* rank (C - 1 for the top class,
    numpy's ``argsort().argsort()``), not the descending rank eq. 10 calls S.
    """
    z = as_logits(logits)
    _check_t2v(z, alpha, beta)
    c = z.shape[2]
    s = (c - 1 - descending_ranks(z)).to(z.dtype)  # ascending rank
    return (alpha - 2 * beta) * (s + 2 - c).clamp(min=0) + beta * (s + 3 - c).clamp(min=0)


def _check_t2v(logits: torch.Tensor, alpha: float, beta: float) -> None:
    if logits.shape[2] < 2:
        raise ValueError(f"top-two voting needs at least 2 classes, got {logits.shape[2]}")
    if not (alpha > 0 and beta >= 0):
        raise ValueError(f"T2V needs alpha > 0 and beta >= 0, got alpha={alpha}, beta={beta}")


class TopTwoVote(DecisionRule):
    """Top-two voting, T2V (Zhou et al., eq. 10-12): Out = sum over members of V (eq. 12).

    The paper's ``alpha=1.9, beta=1.0`` (Sec. 4.1) let two second places outvote one first.
    """

    def __init__(self, alpha: float = 1.9, beta: float = 1.0) -> None:
        self.alpha, self.beta = float(alpha), float(beta)

    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        return t2v_votes(logits, self.alpha, self.beta).sum(dim=1)  # eq. 12, (B, C)

    def __repr__(self) -> str:
        return f"TopTwoVote(alpha={self.alpha}, beta={self.beta})"


def get_rule(rule: str | DecisionRule) -> DecisionRule:
    """A rule instance from a :data:`RULES` name or the instance itself."""
    if isinstance(rule, DecisionRule):
        return rule
    if rule not in RULES:
        raise ValueError(f"unknown decision rule {rule!r}; choose one of {sorted(RULES)} or "
                         "pass a DecisionRule instance")
    return RULES[rule]


RULES: dict[str, DecisionRule] = {
    "plurality": PluralityVote(),
    "majority": MajorityVote(fallback=SoftmaxSum()),
    "score_average": ScoreAverage(),
    "softmax_sum": SoftmaxSum(),
    "t2v": TopTwoVote(),
}


def member_predictions(outputs: ArrayLike) -> np.ndarray:
    """(N, M) member classes from (N, M, C) logits; (N, M) integer predictions pass through."""
    arr = to_numpy(outputs)
    if arr.ndim == 3:
        return arr.argmax(axis=2)
    if arr.ndim == 2 and np.issubdtype(arr.dtype, np.integer):
        return arr
    raise ValueError(f"expected (N, M, C) logits or (N, M) integer predictions, got "
                     f"{arr.dtype} {arr.shape}")


def _correctness(outputs: ArrayLike, labels: ArrayLike) -> np.ndarray:
    preds = member_predictions(outputs)
    y = to_numpy(labels).reshape(-1)
    if len(y) != len(preds):
        raise ValueError(f"{len(preds)} predictions but {len(y)} labels")
    return preds == y[:, None]  # (N, M)


def pairwise_diversity(outputs: ArrayLike, labels: ArrayLike) -> pd.DataFrame:
    """Pairwise diversity of members (Kuncheva & Whitaker 2003), one row per pair.

    From the 2x2 table of (member a correct, member b correct) counts N11, N10, N01, N00:
    disagreement (N01 + N10) / N, Q-statistic (N11 N00 - N01 N10) / (N11 N00 + N01 N10)
    (NaN when its denominator is 0) and double fault N00 / N.
    """
    correct = _correctness(outputs, labels)
    n, m = correct.shape
    if m < 2:
        raise ValueError(f"pairwise diversity needs at least 2 members, got {m}")
    rows = []
    for a, b in itertools.combinations(range(m), 2):
        (n11, n10), (n01, n00) = confusion_matrix(correct[:, a], correct[:, b],
                                                  labels=[True, False])
        denom = n11 * n00 + n01 * n10
        rows.append({"member_a": a, "member_b": b, "disagreement": (n01 + n10) / n,
                     "q_statistic": (n11 * n00 - n01 * n10) / denom if denom else np.nan,
                     "double_fault": n00 / n})
    return pd.DataFrame(rows)


def oracle_accuracy(outputs: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of samples that at least one member classifies correctly."""
    return float(_correctness(outputs, labels).any(axis=1).mean())


def diversity(outputs: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """Pairwise measures averaged over all pairs, plus the oracle accuracy."""
    means = pairwise_diversity(outputs, labels)[["disagreement", "q_statistic",
                                                 "double_fault"]].mean()
    return {**{k: float(v) for k, v in means.items()},
            "oracle_accuracy": oracle_accuracy(outputs, labels)}


@dataclass
class GAResult:
    """Best genes found, their fitness and the best fitness after each generation."""

    weights: np.ndarray
    fitness: float
    history: list[float] = field(default_factory=list)


def genetic_search(fitness: Callable[[np.ndarray], float], n_genes: int, *,
                   population: int = 32, generations: int = 30, elite: int = 2,
                   mutation_rate: float = 0.2, mutation_std: float = 0.15,
                   seed: int = 0) -> GAResult:
    """Maximise ``fitness`` over genes in [0, 1]^n_genes with a plain, seeded GA.

    Each generation keeps the ``elite`` best individuals and breeds the rest by binary
    tournament selection, uniform crossover and Gaussian mutation (clipped to [0, 1]). The
    all-ones individual (uniform fusion, Zhou eq. 9) is in the first population, so the
    result is never worse than uniform fusion.
    """
    if n_genes < 1 or population < 2 or not 0 <= elite < population or generations < 1:
        raise ValueError("need n_genes >= 1, population >= 2, 0 <= elite < population and "
                         f"generations >= 1; got {n_genes}, {population}, {elite}, {generations}")
    rng = np.random.default_rng(seed)
    pop = rng.random((population, n_genes))
    pop[0] = 1.0
    fit = np.array([fitness(ind) for ind in pop])
    history = [float(fit.max())]
    for _ in range(generations):
        order = np.argsort(-fit, kind="stable")
        pairs = rng.integers(0, population, size=(2, population - elite, 2))
        winners = np.where(fit[pairs[..., 0]] >= fit[pairs[..., 1]], pairs[..., 0],
                           pairs[..., 1])  # (2, children) tournament winners
        mask = rng.random((population - elite, n_genes)) < 0.5
        children = np.where(mask, pop[winners[0]], pop[winners[1]])
        mutate = rng.random(children.shape) < mutation_rate
        children = np.clip(children + mutate * rng.normal(0, mutation_std, children.shape), 0, 1)
        pop = np.vstack([pop[order[:elite]], children])
        fit = np.concatenate([fit[order[:elite]], [fitness(ind) for ind in children]])
        history.append(float(fit.max()))
    best = int(np.argmax(fit))
    return GAResult(pop[best].copy(), float(fit[best]), history)


def fga_weights(logits: ArrayLike, labels: ArrayLike, **search: int | float) -> GAResult:
    """Per-member fusion weights that maximise the accuracy of the weighted softmax sum.

    The decision-level form of Zhou et al.'s FGA (Sec. 3.2): a genetic search over how much
    each network contributes, scored by accuracy on held-out data. Weights are returned
    normalised to sum to 1; use them as ``SoftmaxSum(weights=result.weights)``. Keyword
    arguments go to :func:`genetic_search`.
    """
    probs = as_logits(logits).detach().cpu().double().softmax(dim=2).numpy()  # (N, M, C)
    y = to_numpy(labels).reshape(-1)
    if len(y) != len(probs):
        raise ValueError(f"{len(probs)} samples of logits but {len(y)} labels")

    def accuracy(w: np.ndarray) -> float:
        return float((np.einsum("m,nmc->nc", w, probs).argmax(axis=1) == y).mean())

    result = genetic_search(accuracy, probs.shape[1], **search)
    total = result.weights.sum()
    result.weights = (result.weights / total if total > 0
                      else np.full_like(result.weights, 1 / len(result.weights)))
    return result


def fuse_state_dicts(state_dicts: Sequence[Mapping[str, torch.Tensor]],
                     weights: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    """Weighted average of same-architecture networks' parameters (Zhou et al., eq. 9).

    With ``weights=None`` every floating tensor is the plain mean (1/M) sum_l W^l; otherwise
    the weights are normalised to sum to 1. Integer buffers (e.g. BatchNorm's
    ``num_batches_tracked``) are taken from the first network. By the distributive law of
    convolution, a layer with fused kernels applied to a shared input equals the average of
    the layers' outputs (eq. 8 -> eq. 9); fused networks are fine-tuned afterwards.
    """
    if len(state_dicts) < 1:
        raise ValueError("fuse_state_dicts needs at least one state dict")
    keys = list(state_dicts[0])
    for i, sd in enumerate(state_dicts[1:], start=1):
        if list(sd) != keys or any(sd[k].shape != state_dicts[0][k].shape for k in keys):
            raise ValueError(f"state dict {i} does not match state dict 0 (same architecture "
                             "required)")
    w = _member_weights(weights, len(state_dicts))
    if w is None:
        w = torch.full((len(state_dicts),), 1 / len(state_dicts), dtype=torch.float64)
    elif w.sum() == 0:
        raise ValueError("weights sum to 0; give at least one network a positive weight")
    else:
        w = w / w.sum()
    fused = {}
    for k in keys:
        first = state_dicts[0][k]
        if first.is_floating_point():
            stacked = torch.stack([sd[k].double() for sd in state_dicts])  # (M, ...)
            fused[k] = torch.tensordot(w, stacked, dims=1).to(first.dtype)
        else:
            fused[k] = first.clone()
    return fused
