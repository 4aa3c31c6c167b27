"""Every paper's loss, each citing its equation. All take member outputs (B, M, ...)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight


def member_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """ESR eq. (1): sum over members of the batch-mean cross-entropy.

    Args:
        logits: (B, M, C).
        targets: (B,) class indices or (B, C) class distributions (soft labels).
    """
    return sum(F.cross_entropy(logits[:, m], targets) for m in range(logits.shape[1]))


def member_rmse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over members and output dimensions of the RMSE, e.g. valence and arousal
    (ESR-9's affect fine-tuning minimises the RMSE, Table 4)."""
    mse = (outputs - targets.unsqueeze(1)).pow(2).mean(0)  # (M, D)
    return mse.sqrt().sum()


def member_l1(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Wadhawan & Gandhi eq. (1): sum over members of the mean absolute error |y - y_hat|
    over samples and coordinates (Keras' "mae", the landmark pre-training loss).

    Args:
        outputs: (B, M, D) predicted normalised coordinates.
        targets: (B, D) ground truth in [0, 1].
    """
    return sum(F.l1_loss(outputs[:, m], targets) for m in range(outputs.shape[1]))


# Ferreira, Marques, Cardoso and Rebelo, IEEE Access 2018: relevance-map regularisers.
#
# L = L_classification + lambda L_facial_parts (eq. 2). Over a batch of N images, eqs. (3) and
# (5) sum while eq. (4) averages, so read literally eq. (4) weighs lambda / N against the
# summed cross-entropy. Every term here is a batch mean: eqs. (3) and (5) keep their printed
# ratio and eq. (4) gets the full lambda. Within an image, eqs. (6) and (7) divide by the
# map's m x n pixels as printed; eq. (4), printed without that factor, is read as the
# per-pixel mean, the "mean squared error" of Sec. IV-B (``mse_reduction="sum"`` sums the
# pixels instead).

RELEVANCE_MODES = ("fully", "weakly", "hybrid", "sparsity", "contiguity")


def _spatial_mean(values: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B,): the mean over everything but the batch axis."""
    return values.flatten(1).mean(1)


def relevance_mse(maps: torch.Tensor, targets: torch.Tensor,
                  reduction: str = "mean") -> torch.Tensor:
    """Eq. (4), per image: squared error between predicted and target relevance maps.

    Args:
        maps: (B, 1, H, W) predicted ``x_hat``.
        targets: (B, 1, H, W) or (B, H, W) target maps.
        reduction: ``"mean"`` over the pixels or ``"sum"``.

    Returns:
        (B,) values.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if targets.numel() != maps.numel() or targets.shape[0] != maps.shape[0]:
        raise ValueError(f"target maps {tuple(targets.shape)} do not match the relevance maps "
                         f"{tuple(maps.shape)}; build them at the input's size")
    err = (maps.float() - targets.reshape(maps.shape).float()).pow(2)
    return _spatial_mean(err) if reduction == "mean" else err.flatten(1).sum(1)


def relevance_sparsity(maps: torch.Tensor) -> torch.Tensor:
    """Eq. (6), per image: the l1 norm of ``x_hat`` divided by its m x n pixels, (B,)."""
    return _spatial_mean(maps.float().abs())


def relevance_contiguity(maps: torch.Tensor) -> torch.Tensor:
    """Eq. (7), per image: anisotropic total variation of ``x_hat`` divided by m x n, (B,).

    Sums ``|x[i+1, j] - x[i, j]|`` and ``|x[i, j+1] - x[i, j]|`` wherever both pixels exist.
    """
    x = maps.float()
    m, n = x.shape[-2:]
    rows = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).sum(1)
    cols = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).sum(1)
    channels = x[0].numel() // (m * n)
    return (rows + cols) / (m * n * channels)


class RelevanceLoss:
    """Eq. (2) for ``FitConfig(forward="forward_with_map", loss=RelevanceLoss(mode))``.

    Modes (Sec. III-B; Table 4 reports each):

    - ``"fully"``: CE + lambda_fully * eq. (4);
    - ``"weakly"``: CE + lambda_weakly * (eq. 6 + gamma * eq. 7), i.e. eq. (5);
    - ``"hybrid"``: CE + lambda_fully * eq. (4) + lambda_weakly * eq. (5), the "weighted
      summation of the loss terms defined in Equations 4 and 5";
    - ``"sparsity"``: CE + lambda_weakly * eq. (6) (eq. 5 without contiguity);
    - ``"contiguity"``: CE + lambda_weakly * gamma * eq. (7) (eq. 5 without sparsity).

    CE is eq. (3), :func:`member_cross_entropy` (batch mean). Defaults are the values of the
    relevance-map figures: lambda = 10 (Fig. 9), lambda = 1e-4 and gamma = 1 (Fig. 10).

    Called as ``loss(output, targets)`` with ``output = (logits (B, M, C), maps (B, 1, H, W))``
    and ``targets`` either the labels alone or a tuple ``(labels, target_maps, ...)``. Modes
    without eq. (4) ignore target maps, so one dataset of (x, label, map) serves every mode.
    """

    def __init__(self, mode: str = "hybrid", *, lambda_fully: float = 10.0,
                 lambda_weakly: float = 1e-4, gamma: float = 1.0,
                 mse_reduction: str = "mean") -> None:
        if mode not in RELEVANCE_MODES:
            raise ValueError(f"mode must be one of {RELEVANCE_MODES}, got {mode!r}")
        for name, value in (("lambda_fully", lambda_fully), ("lambda_weakly", lambda_weakly),
                            ("gamma", gamma)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0 (eqs. 2 and 5), got {value}")
        if mse_reduction not in ("mean", "sum"):
            raise ValueError(f"mse_reduction must be 'mean' or 'sum', got {mse_reduction!r}")
        self.mode, self.gamma, self.mse_reduction = mode, gamma, mse_reduction
        self.lambda_fully, self.lambda_weakly = lambda_fully, lambda_weakly

    @property
    def needs_target_maps(self) -> bool:
        return self.mode in ("fully", "hybrid")

    def spec(self) -> dict[str, Any]:
        """What the loss computes, for a stored run's key (:mod:`fernb.specs`)."""
        return {"loss": "RelevanceLoss", "mode": self.mode, "lambda_fully": self.lambda_fully,
                "lambda_weakly": self.lambda_weakly, "gamma": self.gamma,
                "mse_reduction": self.mse_reduction}

    def terms(self, output: tuple[torch.Tensor, torch.Tensor],
              targets: torch.Tensor | tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        """The unweighted batch-mean terms this mode uses: ``classification`` and some of
        ``mse``, ``sparsity``, ``contiguity``."""
        if isinstance(output, torch.Tensor) or len(output) < 2:
            raise ValueError("RelevanceLoss needs (logits, relevance maps): train with "
                             "fit(..., forward='forward_with_map')")
        logits, maps = output[0], output[1]
        labels = targets if isinstance(targets, torch.Tensor) else targets[0]
        out = {"classification": member_cross_entropy(logits, labels)}
        if self.needs_target_maps:
            if isinstance(targets, torch.Tensor) or len(targets) < 2:
                raise ValueError(f"mode={self.mode!r} needs target maps: give samples "
                                 f"(x, label, target_map), e.g. from "
                                 f"fernb.models.relevance.target_maps")
            out["mse"] = relevance_mse(maps, targets[1], self.mse_reduction).mean()
        if self.mode in ("weakly", "hybrid", "sparsity"):
            out["sparsity"] = relevance_sparsity(maps).mean()
        if self.mode in ("weakly", "hybrid", "contiguity"):
            out["contiguity"] = relevance_contiguity(maps).mean()
        return out

    def __call__(self, output: tuple[torch.Tensor, torch.Tensor],
                 targets: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
        terms = self.terms(output, targets)
        loss = terms["classification"] + self.lambda_fully * terms.get("mse", 0.0)
        return loss + self.lambda_weakly * (terms.get("sparsity", 0.0)
                                            + self.gamma * terms.get("contiguity", 0.0))

    def __repr__(self) -> str:
        return (f"RelevanceLoss({self.mode!r}, lambda_fully={self.lambda_fully}, "
                f"lambda_weakly={self.lambda_weakly}, gamma={self.gamma})")


# Gan, Chen and Xu, Pattern Recognition Letters 2019: soft labels with a diverse ensemble.

class SoftLabelLoss:
    """Eq. (5) for ``FitConfig(loss=SoftLabelLoss(D))``: the cross-entropy of each member's
    softmax (eq. 6) against the soft label ``D[y_i]`` of the sample's class, batch-mean and
    summed over members (:func:`member_cross_entropy` with (B, C) distribution targets).

    The paper calls eq. (5) a KL divergence loss; as printed it is the cross-entropy
    H(d, p) = KL(d || p) + H(d), which differs from the KL divergence by the entropy of the
    fixed soft label d, so both have the same gradients and minimiser.

    Args:
        soft_labels: (C, C) tensor or array D, row j the soft label of class j, rows summing to 1
            (e.g. :func:`fernb.softlabels.perturb` of the constructor's matrix).

    Called as ``loss(logits (B, M, C), targets)`` with class indices (B,), or a tuple whose
    first element they are.
    """

    def __init__(self, soft_labels: torch.Tensor) -> None:
        d = torch.as_tensor(soft_labels, dtype=torch.float32)
        if d.ndim != 2 or d.shape[0] != d.shape[1] or d.shape[0] < 2:
            raise ValueError(f"soft_labels must be a (C, C) matrix with C >= 2, got shape "
                             f"{tuple(d.shape)}")
        if not torch.isfinite(d).all() or (d < 0).any():
            raise ValueError("soft_labels must be finite and non-negative")
        sums = d.sum(1)
        if not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
            raise ValueError(f"every row of soft_labels must sum to 1 (eq. 3), got row sums "
                             f"{[round(s, 4) for s in sums.tolist()]}")
        self.soft_labels = d

    def spec(self) -> dict[str, Any]:
        """What the loss computes, for a stored run's key (:mod:`fernb.specs`)."""
        return {"loss": "SoftLabelLoss", "soft_labels": self.soft_labels}

    def __call__(self, logits: torch.Tensor,
                 targets: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
        labels = targets if isinstance(targets, torch.Tensor) else targets[0]
        if labels.ndim != 1 or labels.is_floating_point():
            raise ValueError(f"SoftLabelLoss takes class indices (B,), got {labels.dtype} "
                             f"{tuple(labels.shape)}")
        c = self.soft_labels.shape[0]
        if logits.shape[-1] != c:
            raise ValueError(f"soft_labels are {c} x {c} but the model has "
                             f"{logits.shape[-1]} outputs")
        d = self.soft_labels.to(logits.device)[labels]  # (B, C)
        return member_cross_entropy(logits, d)

    def __repr__(self) -> str:
        return f"SoftLabelLoss(C={self.soft_labels.shape[0]})"


# Zhou, Xie & Tian (arXiv 2311.03478), Sec. 3.1 and 4.1: multiple losses (ML).

def zhou_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                       class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Zhou eq. (1)-(2): L_CE = -sum_i p_i log q_i with one-hot p (eq. 1) and softmax q
    (eq. 3); batch mean, summed over members.

    With ``class_weights`` (the paper's WCE, Sec. 4.1) sample i counts w_{y_i} times and the
    batch mean is sum_i w_{y_i} L_i / sum_i w_{y_i} (torch's weighted mean).

    Args:
        logits: (B, M, C).
        targets: (B,) class indices.
        class_weights: (C,) weights, e.g. :func:`balanced_class_weights`.
    """
    weight = None if class_weights is None else class_weights.to(logits.device, logits.dtype)
    return sum(F.cross_entropy(logits[:, m], targets, weight=weight)
               for m in range(logits.shape[1]))


def zhou_label_smoothing(logits: torch.Tensor, targets: torch.Tensor,
                         epsilon: float = 0.1) -> torch.Tensor:
    """Zhou eq. (4)-(5): cross-entropy against p = 1 - epsilon on the label and
    epsilon / (C - 1) on every other class; batch mean, summed over members.

    Eq. (4) spreads epsilon over the C - 1 other classes, torch's ``label_smoothing=s`` over
    all C (the label gets 1 - s + s / C): both agree for s = epsilon C / (C - 1).
    """
    c = logits.shape[-1]
    if c < 2 or not 0 <= epsilon <= (c - 1) / c:
        raise ValueError(f"epsilon must lie in [0, (C - 1) / C] = [0, {(c - 1) / c:.3f}] for "
                         f"C = {c} classes (the label keeps the largest share), got {epsilon}")
    s = epsilon * c / (c - 1)
    return sum(F.cross_entropy(logits[:, m], targets, label_smoothing=s)
               for m in range(logits.shape[1]))


def balanced_class_weights(labels: np.ndarray | torch.Tensor, n_classes: int) -> torch.Tensor:
    """Class weights for the weighted cross-entropy: w_c = N / (C n_c), N training samples,
    C classes, n_c samples of class c (scikit-learn's "balanced"). Every class then carries
    the same total weight N / C, and the mean weight per sample is 1.

    Zhou et al. (Sec. 4.1) "over-sample the training data by adding weight to the CE loss"
    without a formula; this is the usual one. Pass the *training* labels.
    """
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
    missing = sorted(set(range(n_classes)) - set(np.unique(y).tolist()))
    if missing:
        raise ValueError(f"classes {missing} have no training samples, so their weight "
                         f"N / (C n_c) is undefined; check n_classes={n_classes} and the labels")
    w = compute_class_weight("balanced", classes=np.arange(n_classes), y=y)
    return torch.as_tensor(w, dtype=torch.float32)


class MultiLoss:
    """ML (Zhou Sec. 3.1): every training batch uses the label-smoothing loss (eq. 4-5) with
    probability ``p_lsr`` and the cross-entropy (eq. 1-2, class-weighted when
    ``class_weights`` is given) otherwise -- one of the two, not their weighted sum.

    The draw uses torch's global CPU generator, which :func:`fernb.train.fit` seeds and stores
    in its checkpoints, so a run is reproducible and resumes exactly. When gradients are off
    (``fit``'s validation passes, any evaluation) nothing is drawn and the loss is the
    expectation p_lsr L_LSR + (1 - p_lsr) L_CE, so validating does not disturb the training
    draws. ``mix="sum"`` uses that weighted sum for training batches too: the single-path
    alternative (e.g. 0.2 CE + 0.8 LSR) the paper argues against, for comparison.

    Paper settings (Sec. 4.1): RAF-DB ``p_lsr=0.8`` with CE; AffectNet ``p_lsr=0.2`` with the
    weighted CE; epsilon 0.1. ``counts`` tallies the draws ("lsr", "ce").
    """

    MIXES = ("random", "sum")

    def __init__(self, *, p_lsr: float = 0.8, epsilon: float = 0.1,
                 class_weights: torch.Tensor | np.ndarray | None = None,
                 mix: str = "random") -> None:
        if not 0 <= p_lsr <= 1:
            raise ValueError(f"p_lsr must be a probability in [0, 1], got {p_lsr}")
        if mix not in self.MIXES:
            raise ValueError(f"mix must be one of {self.MIXES}, got {mix!r}")
        if not 0 <= epsilon < 1:
            raise ValueError(f"epsilon must lie in [0, 1), got {epsilon}")
        if class_weights is not None:
            class_weights = torch.as_tensor(class_weights, dtype=torch.float32)
            if class_weights.ndim != 1 or not torch.isfinite(class_weights).all() or \
                    (class_weights < 0).any():
                raise ValueError("class_weights must be a 1-D vector of finite, non-negative "
                                 "weights, one per class")
        self.p_lsr, self.epsilon, self.mix = float(p_lsr), float(epsilon), mix
        self.class_weights = class_weights
        self.counts = {"lsr": 0, "ce": 0}

    def spec(self) -> dict[str, Any]:
        """What the loss computes, for a stored run's key (:mod:`fernb.specs`)."""
        return {"loss": "MultiLoss", "p_lsr": self.p_lsr, "epsilon": self.epsilon,
                "class_weights": self.class_weights, "mix": self.mix}

    def lsr(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return zhou_label_smoothing(logits, labels, self.epsilon)

    def ce(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.class_weights is not None and len(self.class_weights) != logits.shape[-1]:
            raise ValueError(f"class_weights has {len(self.class_weights)} entries but the "
                             f"model has {logits.shape[-1]} outputs")
        return zhou_cross_entropy(logits, labels, self.class_weights)

    def __call__(self, output: torch.Tensor | tuple[torch.Tensor, ...],
                 targets: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
        logits = output if isinstance(output, torch.Tensor) else output[0]  # (B, M, C)
        labels = targets if isinstance(targets, torch.Tensor) else targets[0]  # (B,)
        if self.mix == "sum" or not torch.is_grad_enabled():
            return self.p_lsr * self.lsr(logits, labels) + \
                (1 - self.p_lsr) * self.ce(logits, labels)
        if float(torch.rand(())) < self.p_lsr:
            self.counts["lsr"] += 1
            return self.lsr(logits, labels)
        self.counts["ce"] += 1
        return self.ce(logits, labels)

    def __repr__(self) -> str:
        weighted = self.class_weights is not None
        return (f"MultiLoss(p_lsr={self.p_lsr}, epsilon={self.epsilon}, "
                f"class_weighted={weighted}, mix={self.mix!r})")
