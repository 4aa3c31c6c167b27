"""Ensemble decision rules, diversity measures and kernel fusion.

Every rule maps member logits of shape (batch, members, classes) to one class per sample;
a single network is members = 1. Rules share one base, :class:`DecisionRule`: a subclass
overrides ``combine`` ((B, M, C) logits -> (B, C) scores) and the prediction is the arg-max
of the scores, ties going to the lowest class index (as ESR's public code does).

Sources: ESR (Siqueira et al., AAAI 2020) plurality vote; Gan et al. (PRL 2019) eq. 7 score
average; Wadhawan & Gandhi (2023) eq. 4 and Zhou et al. eq. 13 softmax sum (NOI); Zhou et al.
eq. 10-12 top-two voting (T2V), their Table 1 (rank of the labelled class in each network's
output) and eq. 9 (averaged convolution kernels, used by :mod:`fernb.fga`).

T2V scores are exact: :class:`TopTwoVote` counts first and second places as integers and
weights the counts with ``alpha`` and ``beta`` read as exact fractions (1.9 is 19/10), so
classes with the same counts get bit-identical scores whatever the order of the members, and
a tie goes to the lowest class index like every other rule.
"""
from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from fractions import Fraction

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

    Zhou et al.'s NOI, "normalized output integrating" (eq. 13), and Wadhawan & Gandhi's
    ensemble policy (eq. 4); ``weights`` scale each member's probabilities.
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
    second-ranked class, 0 elsewhere. Returns V of shape (B, M, C), e.g. to weight each
    member's saliency map by its vote as the paper does for Fig. 8 (F)."""
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
    if not (alpha > 0 and beta >= 0 and math.isfinite(alpha) and math.isfinite(beta)):
        raise ValueError(f"T2V needs finite alpha > 0 and beta >= 0, got alpha={alpha}, "
                         f"beta={beta}")


def top_two_counts(logits: ArrayLike) -> torch.Tensor:
    """How many members rank each class first and second: (B, 2, C) integers.

    ``[:, 0]`` counts first places, ``[:, 1]`` second places (ties inside a member's output:
    lower class index first, as :func:`descending_ranks`).
    """
    z = as_logits(logits)
    if z.shape[2] < 2:
        raise ValueError(f"top-two counts need at least 2 classes, got {z.shape[2]}")
    rank = descending_ranks(z)  # (B, M, C)
    return torch.stack([(rank == 0).sum(dim=1), (rank == 1).sum(dim=1)], dim=1)  # (B, 2, C)


def _integer_weights(alpha: float, beta: float, members: int) -> tuple[int, int, int]:
    """``alpha``, ``beta`` as integers over a common denominator: each is read as the nearest
    fraction with a denominator up to 10**6, so decimals are exact, (1.9, 1.0) -> (19, 10, 10),
    and a float rounding error such as 0.15000000000000002 is not."""
    a, b = (Fraction(float(w)).limit_denominator(10**6) for w in (alpha, beta))
    denominator = math.lcm(a.denominator, b.denominator)
    ia, ib = int(a * denominator), int(b * denominator)
    if (ia + ib) * members >= 2**62:
        raise ValueError(f"alpha={alpha}, beta={beta} need too many decimals for exact integer "
                         f"scores with {members} members; round them")
    return ia, ib, denominator


class TopTwoVote(DecisionRule):
    """Top-two voting, T2V (Zhou et al., eq. 10-12): Out = sum over members of V (eq. 12).

    Computed from integer counts, Out_c = alpha * (firsts of c) + beta * (seconds of c), with
    alpha and beta taken as exact fractions (1.9 = 19/10), so equal counts give equal scores
    and ties go to the lowest class index. Scores are float64. The paper's
    ``alpha=1.9, beta=1.0`` (Sec. 4.1) let two second places outvote one first; ``beta=0`` is
    T1V (plurality vote). Decisions depend only on ``beta / alpha`` (see :func:`t2v_sweep`).
    """

    def __init__(self, alpha: float = 1.9, beta: float = 1.0) -> None:
        self.alpha, self.beta = float(alpha), float(beta)

    def counts(self, logits: ArrayLike) -> torch.Tensor:
        """Integer scores (B, C): the T2V output times the common denominator of alpha, beta."""
        z = as_logits(logits)
        _check_t2v(z, self.alpha, self.beta)
        a, b, _ = _integer_weights(self.alpha, self.beta, z.shape[1])
        places = top_two_counts(z)  # (B, 2, C)
        return a * places[:, 0] + b * places[:, 1]  # (B, C) int64

    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        counts = self.counts(logits)  # (B, C)
        _, _, denominator = _integer_weights(self.alpha, self.beta, logits.shape[1])
        return counts.double() / denominator  # eq. 12, (B, C)

    def __repr__(self) -> str:
        return f"TopTwoVote(alpha={self.alpha}, beta={self.beta})"


def tied_top(scores: ArrayLike) -> torch.Tensor:
    """(B, C) mask of the classes whose score equals the row's maximum: more than one where a
    rule is tied (e.g. T1V's 3 : 3 on Zhou's Table 3) and its tie-break decides."""
    s = torch.as_tensor(to_numpy(scores))
    if s.ndim != 2:
        raise ValueError(f"scores must be (batch, classes), got shape {tuple(s.shape)}")
    return s == s.max(dim=1, keepdim=True).values


def random_tie_accuracy(scores: ArrayLike, labels: ArrayLike) -> float:
    """The expected accuracy of a rule whose ties are broken uniformly at random instead of
    towards the lowest class index: an image counts 1 / k when its label is one of its k
    tied top classes. Compare with the accuracy of ``scores.argmax(1)`` to see how much the
    tie-break moves a rule."""
    top = tied_top(scores)
    y = torch.as_tensor(to_numpy(labels).reshape(-1), dtype=torch.long)
    if len(y) != len(top):
        raise ValueError(f"{len(top)} rows of scores but {len(y)} labels")
    hit = top.gather(1, y.view(-1, 1))[:, 0].double()
    return float((hit / top.sum(dim=1)).mean())


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

# Zhou et al. Table 6's columns: T2V (eq. 10-12), bagging = top-one voting, NOI (eq. 13).
ZHOU_RULES: dict[str, DecisionRule] = {
    "T2V": RULES["t2v"],
    "T1V": RULES["plurality"],
    "NOI": RULES["softmax_sum"],
}


def label_rank_distribution(logits: ArrayLike, labels: ArrayLike) -> pd.DataFrame:
    """Share of samples whose labelled class each member ranks 1st, 2nd, ... (Zhou Table 1).

    Returns a DataFrame with one row per member (index ``member``, 1-based) and one column
    per rank 1..C (1 = the member's top class; ties: lower class index first); rows sum to 1.
    Column 1 is each member's accuracy, columns 1 and 2 together its top-two accuracy.
    """
    z = as_logits(logits)
    y = torch.as_tensor(to_numpy(labels).reshape(-1), dtype=torch.long)
    n, m, c = z.shape
    if len(y) != n:
        raise ValueError(f"{n} samples of logits but {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= c):
        raise ValueError(f"labels must lie in [0, {c - 1}], got {int(y.min())}..{int(y.max())}")
    ranks = descending_ranks(z).gather(2, y.view(-1, 1, 1).expand(n, m, 1))[..., 0]  # (N, M)
    counts = F.one_hot(ranks, c).sum(dim=0).double() / n  # (M, C)
    return pd.DataFrame(counts.numpy(), index=pd.RangeIndex(1, m + 1, name="member"),
                        columns=pd.RangeIndex(1, c + 1, name="rank"))


def t2v_regime(alpha: float, beta: float, members: int) -> str:
    """What T2V with these weights does for ``members`` networks (decisions depend on
    ``beta / alpha`` only)."""
    if members < 1:
        raise ValueError(f"members must be at least 1, got {members}")
    if beta == 0:
        return "T1V (plurality vote)"
    if members * beta < alpha:
        return "T1V, ties broken by second places"
    if 2 * beta <= alpha:
        return "a first place outweighs two second places"
    if beta < alpha:
        return "two second places outweigh a first place"
    if beta == alpha:
        return "top-two plurality (first = second)"
    return "second places outweigh first places"


def t2v_sweep(logits: ArrayLike, labels: ArrayLike,
              ratios: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.526, 0.6, 0.7, 0.8,
                                         0.9, 1.0, 1.5)) -> pd.DataFrame:
    """T2V with alpha = 1 and beta = each ratio, against T1V and NOI (Zhou Sec. 4.1, 4.4).

    The default grid includes 0.526 ~ 1.0 / 1.9, the paper's weights. One row per ratio:
    ``beta_over_alpha``, ``accuracy``, ``agree_t1v`` and ``agree_noi`` (share of samples on
    which T2V decides like T1V / NOI) and ``regime`` (:func:`t2v_regime`); ``attrs`` hold the
    accuracies of T1V and NOI. At ratio 0 T2V is T1V; as soon as M * ratio >= 1 second places
    can overturn first places.
    """
    z = as_logits(logits)
    y = torch.as_tensor(to_numpy(labels).reshape(-1))
    if len(y) != z.shape[0]:
        raise ValueError(f"{z.shape[0]} samples of logits but {len(y)} labels")
    if not len(ratios) or any(not (r >= 0 and math.isfinite(r)) for r in ratios):
        raise ValueError(f"ratios must be a non-empty sequence of finite values >= 0, got "
                         f"{list(ratios)}")
    t1v, noi = ZHOU_RULES["T1V"](z), ZHOU_RULES["NOI"](z)
    rows = []
    for r in ratios:
        pred = TopTwoVote(1.0, float(r))(z)
        rows.append({"beta_over_alpha": float(r),
                     "accuracy": float((pred == y).double().mean()),
                     "agree_t1v": float((pred == t1v).double().mean()),
                     "agree_noi": float((pred == noi).double().mean()),
                     "regime": t2v_regime(1.0, float(r), z.shape[1])})
    table = pd.DataFrame(rows)
    table.attrs = {"T1V": float((t1v == y).double().mean()),
                   "NOI": float((noi == y).double().mean())}
    return table


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


def disagreement_per_sample(outputs: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """(N,) each sample's share of member pairs of which exactly one member is correct:
    averaged over the samples it is the disagreement of :func:`pairwise_diversity`, and per
    sample it lets two ensembles tested on the same images be compared image by image
    (:func:`fernb.evaluate.clustered_test`)."""
    correct = _correctness(outputs, labels).astype(np.int64)
    m = correct.shape[1]
    if m < 2:
        raise ValueError(f"disagreement needs at least 2 members, got {m}")
    right = correct.sum(1)
    return right * (m - right) / (m * (m - 1) / 2)


def oracle_accuracy(outputs: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of samples that at least one member classifies correctly."""
    return float(_correctness(outputs, labels).any(axis=1).mean())


# Column names of :func:`diversity` as a reader's table shows them.
DIVERSITY_LABELS: dict[str, str] = {"disagreement": "disagreement", "q_statistic": "Q-statistic",
                                    "double_fault": "double fault",
                                    "oracle_accuracy": "oracle accuracy"}


def diversity(outputs: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """Pairwise measures averaged over all pairs, plus the oracle accuracy (the fraction of
    samples some member gets right); :data:`DIVERSITY_LABELS` names them for tables."""
    means = pairwise_diversity(outputs, labels)[["disagreement", "q_statistic",
                                                 "double_fault"]].mean()
    return {**{k: float(v) for k, v in means.items()},
            "oracle_accuracy": oracle_accuracy(outputs, labels)}


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
