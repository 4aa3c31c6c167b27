"""Zhou, Xie & Tian's training procedure: two learning-rate phases and FGA.

Zhou, Xie and Tian, "Multi Loss-based Feature Fusion and Top Two Voting Ensemble Decision
Strategy for Facial Expression Recognition in the Wild" (arXiv 2311.03478).

- Sec. 3.1: Adam at 3e-4 with cosine annealing ("Lr_1"), switched to 1e-5 with a step decay
  ("Lr_2") once the training loss is stable (:func:`train_two_phase`, :class:`TwoPhase`).
- Sec. 3.2, Algorithm 1, eq. (6)-(9): feature fusion among networks based on a genetic
  algorithm, FGA (:func:`fga`). Each generation draws parents by their training loss, averages
  their convolution kernels (eq. 9, :func:`fuse_kernels`), adds freshly initialised networks,
  retrains all of them and hands them to the next generation.
- Sec. 4.1: the paper's settings (:data:`PAPER`).

Eq. (9) replaces the average of the networks' feature maps by a convolution with averaged
kernels, assuming the networks' inputs to that layer agree, D_i^(l1) ~ D_i^(l2). That holds
only when channel i means the same thing in every network: the paper's networks all start
from the same pre-trained ResNet-18 and differ by "random loss, initial weights of FC,
data-flipping" (Sec. 3.3). :func:`shared_start` builds networks that way; averaging kernels
of networks from independent random initialisations mixes unrelated channels.

Choices where the paper is vague, each a parameter:

- "Stable" (Sec. 3.2: "fluctuation ranges of accuracy and loss in training datasets within a
  given number of successive epochs are less than threshold"; "the trigger for the learning
  rate decrease ... is analogous"): over the last ``window`` = 3 epochs the range
  (max - min) of the training loss is below ``loss_tol`` = 0.05 and that of the training
  accuracy below ``acc_tol`` = 0.01. Window and thresholds are not given. Phase 1 ends there
  or after ``max_epochs1``; phase 2 runs ``epochs2`` epochs. The cosine period is
  ``max_epochs1``, StepLR's step and factor (5 epochs, 0.1) are not given either.
- Selection probabilities (Algorithm 1, line 3: "according to the loss in the training
  process"; the paper gives no formula, eq. 6-9 are the fusion): fitness-proportionate
  (roulette-wheel) selection with fitness 1 / L_l, P_l = (1 / L_l) / sum_k (1 / L_k)
  (``selection="inverse"``); ``"softmax"`` uses P_l proportional to exp(-L_l / T). L_l is the
  mean training loss of network l over its last ``window`` epochs.
- Which kernels survive: line 4 draws ``n_parents`` = 2 distinct networks (a crossover of
  two) with those probabilities; the kernels of the networks not drawn are the ones
  "eliminated". Every convolution's weight (and bias) of the child is the plain mean of its
  parents' (eq. 9, "in each channel"); every other tensor (BatchNorm, attention, classifier)
  comes from the parent with the lowest training loss, the "main network" into which the
  fused kernels are written (Sec. 3.2). ``fuse="all"`` averages every floating tensor.
- Population: each generation makes ``n_fused`` fused and ``n_new`` new networks (default
  half and half of the input population, so its size stays the same) and the next
  generation's input is exactly these, retrained; the parents are dropped (line 10). The
  number of generations is not given (default 1). Fused networks are retrained like new
  ones, through both phases (line 9 treats them alike).
"""
from __future__ import annotations

import copy
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from fernb.ensemble import fuse_state_dicts
from fernb.seeding import derive_seed, seeded
from fernb.train import Data, FitConfig, History, Schedule, fit

SELECTIONS = ("inverse", "softmax")
FUSIONS = ("conv", "all")


@dataclass(frozen=True)
class TwoPhase:
    """The two learning-rate phases of Sec. 3.1. Only ``lr1`` and ``lr2`` (and the schedulers'
    kinds) are the paper's; the other values are this book's (module docstring)."""

    lr1: float = 3e-4  # Lr_1, with cosine annealing over max_epochs1
    lr2: float = 1e-5  # Lr_2, with StepLR
    max_epochs1: int = 40
    epochs2: int = 10
    step_size: int = 5
    gamma: float = 0.1
    window: int = 3  # successive epochs whose fluctuation decides "stable"
    loss_tol: float = 0.05
    acc_tol: float = 0.01

    def __post_init__(self) -> None:
        if not (self.lr1 > 0 and self.lr2 > 0):
            raise ValueError(f"lr1 and lr2 must be positive, got {self.lr1}, {self.lr2}")
        if min(self.max_epochs1, self.epochs2, self.step_size, self.window) < 1:
            raise ValueError("max_epochs1, epochs2, step_size and window must be >= 1; got "
                             f"{self.max_epochs1}, {self.epochs2}, {self.step_size}, "
                             f"{self.window}")
        if not (0 < self.gamma <= 1 and self.loss_tol >= 0 and self.acc_tol >= 0):
            raise ValueError(f"need 0 < gamma <= 1 and tolerances >= 0; got gamma={self.gamma}, "
                             f"loss_tol={self.loss_tol}, acc_tol={self.acc_tol}")


@dataclass(frozen=True)
class ZhouSettings:
    """One dataset's settings from Zhou et al. Sec. 4.1 (``None``: not given in the paper)."""

    batch_size: int
    p_lsr: float  # probability of the label-smoothing loss per batch (ML)
    class_weighted: bool  # cross-entropy weighted by class frequency (WCE)
    epsilon: float = 0.1  # eq. (4)
    optimizer: str = "adam"
    phases: TwoPhase = field(default_factory=TwoPhase)
    image_size: int = 224  # aligned and resized
    flip: float = 0.5  # horizontal flip probability per image
    alpha: float = 1.9  # T2V weight of a first place, eq. (10)
    beta: float = 1.0  # T2V weight of a second place
    n_networks: int = 6  # in the ensemble (Tables 2, 5); Table 4 varies 2-6, Table 5 also 8
    generations: int | None = None  # FGA generations: not given
    epochs: int | None = None  # not given


PAPER: dict[str, ZhouSettings] = {
    "raf-db": ZhouSettings(batch_size=128, p_lsr=0.8, class_weighted=False),
    "affectnet": ZhouSettings(batch_size=256, p_lsr=0.2, class_weighted=True),
}


def is_stable(history: History | pd.DataFrame, *, window: int, loss_tol: float,
              acc_tol: float, acc_column: str = "train_acc_ens") -> bool:
    """Whether the last ``window`` epochs' training loss and accuracy each fluctuate (max - min)
    by less than their tolerance (Zhou Sec. 3.2's "well-trained" criterion)."""
    frame = history.to_frame() if isinstance(history, History) else history
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if len(frame) < window:
        return False
    last = frame.iloc[-window:]
    spread = last[["train_loss", acc_column]].max() - last[["train_loss", acc_column]].min()
    return bool(spread["train_loss"] < loss_tol and spread[acc_column] < acc_tol)


@dataclass
class TwoPhaseResult:
    """The histories of both phases and the epoch at which phase 1 ended."""

    phase1: History
    phase2: History
    switch_epoch: int
    stable: bool  # phase 1 ended on the stability criterion (not on max_epochs1)
    window: int

    @property
    def training_loss(self) -> float:
        """Mean training loss over the last ``window`` epochs of phase 2 (FGA's fitness)."""
        return float(self.phase2.to_frame()["train_loss"].iloc[-self.window:].mean())

    def to_frame(self) -> pd.DataFrame:
        """Both phases in one frame, epochs numbered on, with a ``phase`` column."""
        one, two = self.phase1.to_frame(), self.phase2.to_frame()
        two.index = two.index + len(one)
        return pd.concat([one.assign(phase=1), two.assign(phase=2)])


def train_two_phase(model: nn.Module, train: Data, val: Data | None, config: FitConfig, *,
                    phases: TwoPhase = TwoPhase(), checkpoint: str | Path | None = None
                    ) -> TwoPhaseResult:
    """Train with Lr_1 until the training loss is stable, then with Lr_2 (Zhou Sec. 3.1).

    Phase 1 (``lr1``, cosine annealing over ``max_epochs1`` epochs) runs one epoch per
    :func:`fernb.train.fit` call, resuming from ``checkpoint/phase1`` (a temporary
    directory when ``checkpoint`` is None), until :func:`is_stable` or ``max_epochs1``.
    Phase 2 (``lr2``, StepLR) runs ``epochs2`` epochs in ``checkpoint/phase2`` with a new
    optimizer. Rerunning with the same ``checkpoint`` resumes. Each phase ends with ``fit``'s
    best-validation weights when there is validation data.

    Args:
        config: every phase's training (the optimizer's class, e.g. Adam, with its learning
            rate replaced by the phase's; the loss, e.g. a :class:`fernb.losses.MultiLoss`;
            batch size, augmentation, device...); its epochs and schedule are the phases'.
    """
    cosine = Schedule("CosineAnnealingLR", T_max=phases.max_epochs1)
    step = Schedule("StepLR", step_size=phases.step_size, gamma=phases.gamma)
    one = config.replace(optimizer=config.optimizer.replace(lr=phases.lr1), schedule=cosine)
    two = config.replace(optimizer=config.optimizer.replace(lr=phases.lr2), schedule=step,
                         epochs=phases.epochs2)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(checkpoint) if checkpoint is not None else Path(scratch)
        stable = False
        for epochs in range(1, phases.max_epochs1 + 1):
            phase1 = fit(model, train, val, one.replace(epochs=epochs),
                         checkpoint=root / "phase1")
            stable = is_stable(phase1, window=phases.window, loss_tol=phases.loss_tol,
                               acc_tol=phases.acc_tol)
            if stable:
                break
        phase2 = fit(model, train, val, two, checkpoint=root / "phase2")
    return TwoPhaseResult(phase1, phase2, len(phase1), stable, phases.window)


def selection_probabilities(losses: Sequence[float], *, selection: str = "inverse",
                            temperature: float = 1.0) -> np.ndarray:
    """Probability of each network to be drawn as a parent (Algorithm 1, line 3).

    ``"inverse"``: P_l = (1 / L_l) / sum_k (1 / L_k); ``"softmax"``: P_l proportional to
    exp(-L_l / temperature). Lower training loss, higher probability.
    """
    loss = np.asarray(losses, dtype=np.float64)
    if loss.ndim != 1 or len(loss) < 1 or not np.isfinite(loss).all():
        raise ValueError(f"losses must be a non-empty sequence of finite numbers, got {losses}")
    if selection == "inverse":
        if (loss <= 0).any():
            raise ValueError(f"selection='inverse' needs positive losses, got {loss.tolist()}")
        fitness = 1 / loss
    elif selection == "softmax":
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        fitness = np.exp(-(loss - loss.min()) / temperature)
    else:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    return fitness / fitness.sum()


@dataclass(frozen=True)
class Draw:
    """One fused child's parents (indices into the population, ascending) and ``main``, the
    index *within* ``parents`` of the parent with the lowest training loss, whose other
    tensors the child keeps (:func:`fuse_kernels`)."""

    parents: tuple[int, ...]
    main: int

    @property
    def main_parent(self) -> int:
        """The main parent as an index into the population."""
        return self.parents[self.main]


def draw_parents(losses: Sequence[float], n_children: int, *, n_parents: int = 2,
                 selection: str = "inverse", temperature: float = 1.0,
                 seed: int = 0) -> list[Draw]:
    """The parents of each of ``n_children`` fused children (Algorithm 1, lines 3-4): for
    each child ``n_parents`` distinct networks drawn with :func:`selection_probabilities`
    of their training ``losses``, by a generator seeded with ``seed``, child after child.
    Child i's draw depends only on the losses, ``seed`` and i, so a stored child (or its
    control, the same main parent trained on without fusion) can be made in any process."""
    if not 2 <= n_parents <= len(losses):
        raise ValueError(f"n_parents must lie in [2, {len(losses)}] (the population), got "
                         f"{n_parents}")
    if n_children < 1:
        raise ValueError(f"n_children must be >= 1, got {n_children}")
    p = selection_probabilities(losses, selection=selection, temperature=temperature)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_children):
        parents = tuple(sorted(int(j) for j in rng.choice(len(losses), size=n_parents,
                                                          replace=False, p=p)))
        main = min(range(n_parents), key=lambda j: losses[parents[j]])
        draws.append(Draw(parents, main))
    return draws


def fuse_kernels(parents: Sequence[nn.Module], *, main: int = 0, fuse: str = "conv"
                 ) -> dict[str, torch.Tensor]:
    """State dict of a fused network (eq. 9): every convolution's weight and bias the mean of
    the parents'; everything else from ``parents[main]`` (``fuse="all"``: every floating
    tensor averaged, integer buffers from ``parents[main]``)."""
    if len(parents) < 1 or not 0 <= main < len(parents):
        raise ValueError(f"need at least one parent and 0 <= main < {len(parents)}, got "
                         f"main={main}")
    if fuse not in FUSIONS:
        raise ValueError(f"fuse must be one of {FUSIONS}, got {fuse!r}")
    order = [main] + [i for i in range(len(parents)) if i != main]
    states = [parents[i].state_dict() for i in order]
    if fuse == "all":
        return fuse_state_dicts(states)
    keys = [f"{name}.{p}" for name, module in parents[main].named_modules()
            if isinstance(module, nn.modules.conv._ConvNd)
            for p in ("weight", "bias") if getattr(module, p) is not None]
    fused = {k: v.clone() for k, v in states[0].items()}
    fused.update(fuse_state_dicts([{k: sd[k] for k in keys} for sd in states]))
    return fused


@dataclass
class FGAResult:
    """The last generation's retrained networks and training losses, and every child's
    lineage (``generation``, ``name``, ``kind`` fused/new, ``parents`` as indices into the
    previous generation, ``loss``); generation 0 is the input population."""

    networks: list[nn.Module]
    losses: list[float]
    lineage: pd.DataFrame
    probabilities: list[np.ndarray]  # selection probabilities of each generation's input


Trainer = Callable[[nn.Module, str], float]


def shared_start(builder: Callable[[], nn.Module], state: Mapping[str, torch.Tensor], *,
                 own: Sequence[str] = ("net.fc.weight", "net.fc.bias")
                 ) -> Callable[[], nn.Module]:
    """A builder whose networks start from ``state`` (e.g. pre-trained weights, or one common
    initialisation) except the tensors named in ``own`` (by default the classifier of
    :class:`~fernb.models.faml.FAML`), which keep the initialisation ``builder()`` drew, so
    that under :func:`fernb.seeding.seeded` networks differ only there (Zhou Sec. 3.3)."""
    state = dict(state)
    own = tuple(own)

    def build() -> nn.Module:
        net = builder()
        fresh = net.state_dict()
        unknown = sorted(set(own) - set(fresh))
        if unknown:
            raise ValueError(f"own names {unknown}, which the network does not have; its "
                             f"keys include {list(fresh)[-4:]}")
        net.load_state_dict({**state, **{k: fresh[k] for k in own}})
        return net

    return build


def fga(networks: Sequence[nn.Module], losses: Sequence[float], *,
        builder: Callable[[], nn.Module], train: Trainer, generations: int = 1,
        n_fused: int | None = None, n_new: int | None = None, n_parents: int = 2,
        selection: str = "inverse", temperature: float = 1.0, fuse: str = "conv",
        seed: int = 0) -> FGAResult:
    """FGA, Zhou et al. Algorithm 1: feature fusion among networks by a genetic algorithm.

    For each generation g = 1..``generations``: compute the selection probabilities from the
    networks' training ``losses`` (line 3); for each of ``n_fused`` children draw
    ``n_parents`` distinct parents (line 4) and average their convolution kernels
    (lines 5-7, :func:`fuse_kernels`, the parent with the lowest loss as the main network);
    build ``n_new`` networks with ``builder()``, network k under ``seeded(seed, "fga", g,
    k)`` (line 8); train every child with ``train`` (line 9) and take them, with the losses
    ``train`` returns, as the next generation's input (line 10). Draws use a generator seeded
    by ``(seed, "fga", g)``.

    Args:
        networks, losses: the well-trained input population and each one's training loss.
        builder: builds one untrained network of the same architecture.
        train: ``train(model, name) -> training loss``, e.g. a :class:`TwoPhaseTrainer`;
            ``name`` is ``"g<g>_fused<i>"`` or ``"g<g>_new<k>"`` (1-based), unique per run.
        n_fused, n_new: children per generation (default half and half of the population).
        n_parents, selection, temperature, fuse: see the module docstring.

    The input networks are left unchanged; fused children are copies.
    """
    m = len(networks)
    n_fused = math.ceil(m / 2) if n_fused is None else n_fused
    n_new = m - n_fused if n_new is None else n_new
    if len(losses) != m:
        raise ValueError(f"{m} networks but {len(losses)} losses")
    if not 2 <= n_parents <= m:
        raise ValueError(f"n_parents must lie in [2, {m}] (the population), got {n_parents}")
    if n_fused < 1 or n_new < 0 or n_fused + n_new < n_parents:
        raise ValueError(f"need n_fused >= 1, n_new >= 0 and a next population of at least "
                         f"n_parents={n_parents}; got n_fused={n_fused}, n_new={n_new}")
    if generations < 1:
        raise ValueError(f"generations must be >= 1, got {generations}")
    population, fitness = list(networks), [float(v) for v in losses]
    rows = [{"generation": 0, "name": f"input{i + 1}", "kind": "input", "parents": (),
             "loss": v} for i, v in enumerate(fitness)]
    history = []
    for g in range(1, generations + 1):
        history.append(selection_probabilities(fitness, selection=selection,
                                               temperature=temperature))
        draws = draw_parents(fitness, n_fused, n_parents=n_parents, selection=selection,
                             temperature=temperature, seed=derive_seed(seed, "fga", g))
        children = []
        for i, draw in enumerate(draws, start=1):
            child = copy.deepcopy(population[draw.main_parent])
            child.load_state_dict(fuse_kernels([population[j] for j in draw.parents],
                                               main=draw.main, fuse=fuse))
            children.append((f"g{g}_fused{i}", "fused", draw.parents, child))
        for k in range(1, n_new + 1):
            with seeded(seed, "fga", g, k):
                children.append((f"g{g}_new{k}", "new", (), builder()))
        population, fitness = [], []
        for name, kind, parents, child in children:
            loss = float(train(child, name))
            population.append(child)
            fitness.append(loss)
            rows.append({"generation": g, "name": name, "kind": kind, "parents": parents,
                         "loss": loss})
    return FGAResult(population, fitness, pd.DataFrame(rows), history)


class TwoPhaseTrainer:
    """A ``train`` for :func:`fga`: :func:`train_two_phase` of each network in
    ``checkpoint/<name>``, returning :attr:`TwoPhaseResult.training_loss`; ``results`` maps
    each name to its :class:`TwoPhaseResult`.

    Each network's training randomness (batch order, augmentation, the multi-loss draws) is
    its own: ``fit``'s seed is :func:`fernb.seeding.derive_seed` of ``config.seed`` and the
    name, so two children fused from the same parents still train apart, as the paper's
    networks differ by "random loss ... data-flipping" (Sec. 3.3).

    Args:
        train, val, config, phases: as :func:`train_two_phase`.
        checkpoint: root of the networks' checkpoint directories (None: none kept).
    """

    def __init__(self, train: Data, val: Data | None, config: FitConfig, *,
                 phases: TwoPhase = TwoPhase(), checkpoint: str | Path | None = None) -> None:
        self.train, self.val, self.config, self.phases = train, val, config, phases
        self.checkpoint = checkpoint
        self.results: dict[str, TwoPhaseResult] = {}

    def __call__(self, model: nn.Module, name: str) -> float:
        directory = Path(self.checkpoint) / name if self.checkpoint is not None else None
        self.results[name] = train_two_phase(
            model, self.train, self.val, self.config.replace(
                seed=derive_seed(self.config.seed, name)),
            phases=self.phases, checkpoint=directory)
        return self.results[name].training_loss
