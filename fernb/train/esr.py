"""ESR's training algorithms (Siqueira, Magg and Wermter, AAAI 2020), built on :func:`fit`.

:func:`train_esr` grows an ESR one branch at a time (Algorithm 1) under the paper's four
treatments of already-trained parts, :func:`finetune_affect` trains ESR-9's valence/arousal
heads (Table 4) and :func:`train_bagging` the traditional ensemble; every stage trains with
eq. (1), the sum of the members' cross-entropies.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from fernb.data.datasets import FaceDataset
from fernb.models.esr import ESR
from fernb.train.loop import Data, FitConfig, History, fit, freeze

STRATEGIES = ("fixed", "varied", "frozen", "interleaved")
EpochHook = Callable[[int, nn.Module], None]


def _subset(data: FaceDataset | Dataset, indices: np.ndarray) -> FaceDataset | Dataset:
    if len(indices) == 0:
        raise ValueError("a training subset is empty")
    if isinstance(data, FaceDataset):
        return data.subset(indices)
    return Subset(data, np.asarray(indices).tolist())


def _stage_dir(checkpoint: str | Path | None, name: str) -> Path | None:
    return Path(checkpoint) / name if checkpoint is not None else None


class _Interleaved(nn.Module):
    """Interleaved training (Siqueira et al. 2018): in train mode each call runs the shared
    base and one branch, in turn, and returns its logits (B, 1, C); the other branches take no
    part, so neither their weights, their optimizer state nor their BatchNorm statistics
    move. In eval mode it is the whole ESR (B, M, C), scored with eq. (1)."""

    def __init__(self, esr: ESR) -> None:
        super().__init__()
        self.esr = esr
        self.step = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.esr(x)  # (B, M, C)
        branch = self.esr.branches[self.step % len(self.esr.branches)]
        self.step += 1
        return branch(self.esr.forward_features(x)).unsqueeze(1)  # (B, 1, C)


def _unfreeze(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(True)


def train_esr(model: ESR, train: FaceDataset | Dataset, subsets: Sequence[np.ndarray],
              val: Data | None, config: FitConfig, *, strategy: str = "varied",
              epochs: int | Sequence[int] | None = None, lr_trained: float = 0.02,
              init: str = "fresh", checkpoint: str | Path | None = None,
              on_epoch_end: EpochHook | None = None) -> tuple[ESR, list[History]]:
    """Grow an ESR one branch at a time (Algorithm 1) and train it with eq. (1).

    Branch ``b`` is trained together with branches ``1..b-1`` on ``subsets[b-1]`` (indices
    into ``train``; e.g. :func:`fernb.data.splits.leave_one_fold_out` on CK+ or
    :func:`balanced_subset` on AffectNet). Treatment of what is already trained when a branch
    is added (paper, "Training ESRs at different branching levels"):

    - ``"fixed"``: shared layers and trained branches keep the optimizer's ``lr``
      (lr_sl = lr_tb = 0.1).
    - ``"varied"``: shared layers ``lr``, trained branches ``lr_trained`` (0.1 / 0.02).
    - ``"frozen"``: shared layers and trained branches are frozen (lr_sl = lr_tb = 0),
      BatchNorm statistics included; the base trains with the first branch only. The
      returned model is trainable again (``requires_grad`` restored everywhere).
    - ``"interleaved"``: all branches exist from the start and are trained on the union of
      the subsets, each mini-batch running and updating only the shared layers and one
      branch, in turn (Siqueira et al. 2018), for ``sum(epochs)`` epochs so that it gets the
      training budget of the sequential strategies. Its ``train_loss`` and ``train_acc_1``
      are those of the branch each mini-batch updated (``val_loss`` is eq. (1) over all
      branches), and a resumed run restarts the branch rotation.

    Every stage keeps the weights of its epoch with the best ``config.select`` (see
    :func:`fit`).

    Args:
        model: an ESR with exactly one branch (``"interleaved"``: any number; branches are
            added up to ``len(subsets)``).
        config: how every stage trains (optimizer, schedule, batch size, precision...).
        epochs: epochs per added branch, one number for all or one per branch (ESR-9 in the
            authors' code: 50 for the first branch, then 20); None: ``config.epochs``.
        init: how added branches start, see :meth:`ESR.add_branch`.
        checkpoint: stage ``s`` checkpoints in ``checkpoint/branch_<s>`` (``all`` for
            interleaved training).
        on_epoch_end: passed to every stage's :func:`fit`.

    Returns:
        The grown model and one History per added branch (one in total for
        ``"interleaved"``), for convergence plots per branch (paper Fig. 5, left).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if not isinstance(model, ESR):
        raise TypeError(f"model must be an ESR, got {type(model).__name__}")
    if not len(subsets):
        raise ValueError("subsets is empty: give one index array per branch")
    epochs = config.epochs if epochs is None else epochs
    stage_epochs = [int(epochs)] * len(subsets) if np.ndim(epochs) == 0 else list(epochs)
    if len(stage_epochs) != len(subsets):
        raise ValueError(f"epochs gives {len(stage_epochs)} values for {len(subsets)} branches; "
                         f"give one number or one per branch")
    lr = config.lr
    if strategy == "interleaved":
        if len(model.branches) > len(subsets):
            raise ValueError(f"the model has {len(model.branches)} branches but only "
                             f"{len(subsets)} subsets were given")
        while len(model.branches) < len(subsets):
            model.add_branch(init)
        union = np.unique(np.concatenate([np.asarray(s) for s in subsets]))
        history = fit(_Interleaved(model), _subset(train, union), val,
                      config.replace(epochs=sum(stage_epochs)),
                      checkpoint=_stage_dir(checkpoint, "all"), on_epoch_end=on_epoch_end)
        return model, [history]
    if len(model.branches) != 1:
        raise ValueError(f"Algorithm 1 starts from one branch; the model has "
                         f"{len(model.branches)} (build it with n_branches=1)")

    histories = []
    for b, (indices, n_epochs) in enumerate(zip(subsets, stage_epochs), start=1):
        if b > 1:
            model.add_branch(init)
        new, trained = model.branches[-1], list(model.branches[:-1])
        if strategy == "frozen" and b > 1:
            freeze(model.base)
            for branch in trained:
                freeze(branch)
        lr_tb = lr_trained if strategy == "varied" else lr
        groups = [{"params": model.base, "lr": lr}, {"params": new, "lr": lr},
                  {"params": [p for t in trained for p in t.parameters()], "lr": lr_tb}]
        histories.append(fit(model, _subset(train, indices), val,
                             config.replace(epochs=n_epochs), groups=groups,
                             checkpoint=_stage_dir(checkpoint, f"branch_{b}"),
                             on_epoch_end=on_epoch_end))
    if strategy == "frozen":
        _unfreeze(model)
    return model, histories


class _AffectView(nn.Module):
    """The first ``n`` branches' valence/arousal outputs (B, n, 2) of an ESR."""

    def __init__(self, esr: ESR, n: int) -> None:
        super().__init__()
        self.esr, self.n = esr, n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.esr.forward_affect(x, self.n)


def finetune_affect(model: ESR, train: FaceDataset | Dataset, subsets: Sequence[np.ndarray],
                    val: Data | None, config: FitConfig, *, lr_trained: float = 0.001,
                    checkpoint: str | Path | None = None) -> tuple[ESR, list[History]]:
    """Fine-tune only ESR-9's valence/arousal heads, branch by branch (paper, "Continuous
    affect perception"; Table 4).

    Everything else is frozen, and stays frozen afterwards. Stage ``b`` trains head ``b`` at
    the optimizer's ``lr`` and heads ``1..b-1`` at ``lr_trained`` on ``subsets[b-1]`` (e.g. up
    to 5000 samples per valence/arousal quadrant, see :func:`quadrants`), minimising the
    summed RMSE of the first ``b`` branches (``config.task`` is set to regression). Targets
    are (B, 2) valence and arousal, e.g. a FaceDataset with ``target="valence_arousal"``.
    """
    if not isinstance(model, ESR) or model.arch != "wild":
        raise TypeError("finetune_affect needs an ESR with arch='wild' (it has affect heads)")
    if len(subsets) != len(model.branches):
        raise ValueError(f"give one subset per branch: {len(model.branches)} branches, "
                         f"{len(subsets)} subsets")
    freeze(model)
    config = config.replace(task="regression", loss=None)
    histories = []
    for b, indices in enumerate(subsets, start=1):
        heads = [branch.affect for branch in model.branches[:b]]
        for head in heads:
            head.requires_grad_(True)
        groups = [{"params": heads[-1], "lr": config.lr},
                  {"params": [p for h in heads[:-1] for p in h.parameters()], "lr": lr_trained}]
        histories.append(fit(_AffectView(model, b), _subset(train, indices), val, config,
                             groups=groups, checkpoint=_stage_dir(checkpoint, f"branch_{b}")))
    return model, histories


class _Member(nn.Module):
    """One independent network of a level-0 ESR, as a model with members = 1."""

    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x).unsqueeze(1)  # (B, 1, C)


def train_bagging(model: ESR, train: FaceDataset | Dataset, subsets: Sequence[np.ndarray],
                  val: Data | None, config: FitConfig, *, checkpoint: str | Path | None = None,
                  on_epoch_end: EpochHook | None = None) -> tuple[ESR, list[History]]:
    """Traditional ensemble by bagging: network ``k`` of a level-0 ESR (see
    :func:`fernb.models.esr.traditional_ensemble`) is trained alone on ``subsets[k]``
    (ESR on CK+: four networks, each on three of the four training folds)."""
    if not isinstance(model, ESR) or model.level != 0:
        raise TypeError("train_bagging needs an ESR with level=0 (independent networks)")
    if len(subsets) != len(model.branches):
        raise ValueError(f"give one subset per network: {len(model.branches)} networks, "
                         f"{len(subsets)} subsets")
    histories = [fit(_Member(branch), _subset(train, indices), val, config,
                     checkpoint=_stage_dir(checkpoint, f"network_{k}"),
                     on_epoch_end=on_epoch_end)
                 for k, (branch, indices) in enumerate(zip(model.branches, subsets), start=1)]
    return model, histories


def balanced_subset(labels: np.ndarray | Sequence[int], n_per_class: int, seed: int = 0
                    ) -> np.ndarray:
    """Sorted indices of a class-balanced random subset: up to ``n_per_class`` samples of
    every class, without replacement (ESR-9: up to 5000 per emotion or affect quadrant)."""
    labels = np.asarray(labels)
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class}")
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), min(n_per_class, int((labels == c).sum())),
                         replace=False) for c in np.unique(labels)]
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, dtype=np.int64)


def quadrants(valence_arousal: np.ndarray) -> np.ndarray:
    """Circumplex quadrant (N,) of (N, 2) valence/arousal: 0 = (+v, +a), 1 = (-v, +a),
    2 = (-v, -a), 3 = (+v, -a); zero counts as positive."""
    va = np.asarray(valence_arousal, dtype=np.float64)
    if va.ndim != 2 or va.shape[1] != 2:
        raise ValueError(f"expected (N, 2) valence and arousal, got shape {va.shape}")
    pos_v, pos_a = va[:, 0] >= 0, va[:, 1] >= 0
    return np.select([pos_v & pos_a, ~pos_v & pos_a, ~pos_v & ~pos_a], [0, 1, 2], 3)
