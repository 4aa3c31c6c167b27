"""One small training loop for every chapter.

Models return logits of shape (batch, members, classes); the default loss is ESR's combined
loss, eq. (1) of Siqueira, Magg and Wermter (AAAI 2020): the sum over members of each
member's cross-entropy. ``fit(model, train, val, config)`` trains with the configuration's
optimizer and schedule (:mod:`fernb.train.optim`) on per-group learning rates, in the
configured precision (:mod:`fernb.device`), writes a checkpoint after every epoch (rerunning
with the same checkpoint folder resumes exactly), keeps the weights of the epoch whose
selection metric is best (the lowest validation loss by default) and returns a
:class:`History`.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from fernb.data.datasets import FaceDataset
from fernb.device import (Precision, channels_last, resolve_device, resolve_precision,
                          to_memory_format)
from fernb.ensemble import plurality_vote
from fernb.io import atomic_torch_save
from fernb.losses import member_cross_entropy, member_rmse
from fernb.specs import describe
from fernb.train.optim import Optimizer, Schedule, sgd

Data = FaceDataset | Dataset | DataLoader
TASKS = ("classification", "regression")


def freeze(module: nn.Module) -> nn.Module:
    """Freeze ``module``: no gradients, and its BatchNorm statistics stay fixed.

    ``fit`` keeps every BatchNorm whose parameters are all frozen in eval mode, so running
    means and variances do not drift (the authors' code "froze" with lr=0, which still
    updated them).
    """
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


@dataclass
class History:
    """Per-epoch rows of metrics, ``to_frame()`` gives them as a DataFrame.

    Each row has ``epoch``, ``lr`` (first param group), ``seconds``, ``train_loss`` (the
    objective) and, per member ``m`` (1-based) and for the ensemble, ``train_acc_m`` and
    ``train_acc_ens`` (classification; plurality vote) or ``train_rmse_m`` and
    ``train_rmse_ens`` (regression; mean of the members); the same with ``val_`` when there
    is validation data. Classification adds ``train_ce`` (and ``val_ce``): the members'
    summed cross-entropy (:func:`member_cross_entropy`) whatever the training loss, so that
    models trained with different objectives can be selected alike (``select="val_ce"``). Training metrics come from the training passes themselves
    (augmented, train mode). ``best_epoch`` is the epoch whose weights were kept.
    """

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.epochs).set_index("epoch") if self.epochs else pd.DataFrame()

    def __len__(self) -> int:
        return len(self.epochs)


IN_MEMORY_BYTES = 2 * 1024**3


Targets = torch.Tensor | tuple[torch.Tensor, ...]


def _prepare(data: Data, device: torch.device) -> Data:
    """Put small un-augmented datasets on ``device`` as one TensorDataset (batching by
    slicing is much faster than a DataLoader); other data are returned unchanged."""
    if isinstance(data, FaceDataset) and data.transform is None:
        h, w = data.image_size
        if len(data) * data.channels * h * w * 4 > IN_MEMORY_BYTES:
            return data
        x, y = data.tensors()
        if data.target != "label":
            values = getattr(data, data.target)
            y = torch.from_numpy(np.asarray(values, dtype=np.float32))
        return torch.utils.data.TensorDataset(x.to(device), y.to(device))
    if isinstance(data, torch.utils.data.TensorDataset) and len(data.tensors) >= 2:
        return torch.utils.data.TensorDataset(*(t.to(device) for t in data.tensors))
    return data


def _targets(parts: Sequence[torch.Tensor], device: torch.device) -> Targets:
    """One target tensor, or a tuple when a sample carries several (e.g. label and map)."""
    moved = tuple(t.to(device, non_blocking=True) for t in parts)
    return moved[0] if len(moved) == 1 else moved


def _batches(data: Data, batch_size: int, device: torch.device, shuffle: bool,
             generator: torch.Generator) -> Iterator[tuple[torch.Tensor, Targets]]:
    """Yield (x, y) batches on ``device``: slices of in-memory tensors where possible,
    otherwise a single-process DataLoader (faster than worker processes on small CPUs).
    ``y`` is a tuple when samples are (x, y1, y2, ...)."""
    if isinstance(data, torch.utils.data.TensorDataset) and len(data.tensors) >= 2:
        x, *ys = data.tensors
        order = torch.randperm(len(x), generator=generator) if shuffle else torch.arange(len(x))
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size].to(x.device)
            yield x[idx].to(device), _targets([y[idx] for y in ys], device)
        return
    if not isinstance(data, DataLoader):
        data = DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator)
    for x, *ys in data:
        yield x.to(device, non_blocking=True), _targets(ys, device)


def _fp32(out: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """A model output with its floating-point tensors in fp32, so that losses and metrics
    are computed in full precision whatever the forward pass used."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    return tuple(_fp32(o) for o in out)


def _logits(out: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """The (B, M, C) logits of a model output: the tensor, or a tuple's first element."""
    return out if isinstance(out, torch.Tensor) else out[0]


def _labels(y: Targets) -> torch.Tensor:
    """The class (or regression) targets of a batch: ``y``, or a tuple's first element."""
    return y if isinstance(y, torch.Tensor) else y[0]


def _check_data(data: Data, name: str) -> None:
    if not isinstance(data, (Dataset, DataLoader)):
        raise TypeError(f"{name} must be a FaceDataset, a torch Dataset of (x, y) or a "
                        f"DataLoader; got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{name} is empty; check the split indices or the dataset filter")


def _param_groups(model: nn.Module, groups: Sequence[dict[str, Any]] | None
                  ) -> list[dict[str, Any]]:
    """Trainable parameters in optimizer groups; every one must be in exactly one group."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters (everything is frozen)")
    if groups is None:
        return [{"params": trainable}]
    out, seen = [], set()
    for group in groups:
        params = group["params"]
        params = params.parameters() if isinstance(params, nn.Module) else params
        params = [p for p in params if p.requires_grad]
        if any(id(p) in seen for p in params):
            raise ValueError("a parameter appears in more than one param group")
        seen.update(id(p) for p in params)
        if params:
            out.append({**group, "params": params})
    missing = sum(id(p) not in seen for p in trainable)
    if missing:
        raise ValueError(f"{missing} trainable parameter tensors are in no param group; add "
                         f"them to a group or freeze() them")
    return out


def _set_train_mode(model: nn.Module) -> None:
    """Train mode, except BatchNorm layers whose parameters are all frozen."""
    model.train()
    for m in model.modules():
        params = list(m.parameters(recurse=False))
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and params and \
                not any(p.requires_grad for p in params):
            m.eval()


class _Metrics:
    """Accumulates the loss and per-member / ensemble accuracy or RMSE over an epoch, and for
    classification the members' cross-entropy (``_ce``) whatever the training loss."""

    def __init__(self, task: str) -> None:
        self.task, self.n, self.loss, self.ce = task, 0, 0.0, 0.0
        self.member: torch.Tensor | float = 0.0
        self.ensemble: torch.Tensor | float = 0.0

    def update(self, loss: float, out: torch.Tensor, y: Targets) -> None:
        out, y = _logits(out).detach().float(), _labels(y)
        b = len(y)
        self.n += b
        self.loss += loss * b
        if self.task == "classification":
            self.ce += member_cross_entropy(out, y.float() if y.ndim == 2 else y).item() * b
            labels = y.argmax(-1) if y.ndim == 2 else y  # soft labels: their arg-max
            self.member = self.member + (out.argmax(-1) == labels[:, None]).sum(0).cpu()
            self.ensemble += (plurality_vote(out) == labels).sum().item()
        else:
            err = (out - y[:, None].float()).pow(2).mean(-1)  # (B, M)
            self.member = self.member + err.sum(0).cpu()
            self.ensemble += (out.mean(1) - y.float()).pow(2).mean(-1).sum().item()

    def summary(self, prefix: str) -> dict[str, float]:
        out = {f"{prefix}_loss": self.loss / self.n}
        if self.task == "classification":
            out[f"{prefix}_ce"] = self.ce / self.n
            member, ens, name = self.member / self.n, self.ensemble / self.n, "acc"
        else:
            member, ens, name = (self.member / self.n).sqrt(), math.sqrt(self.ensemble / self.n), "rmse"
        out.update({f"{prefix}_{name}_{m + 1}": float(v) for m, v in enumerate(member)})
        out[f"{prefix}_{name}_ens"] = float(ens)
        return out


@torch.no_grad()
def _evaluate(model: nn.Module, forward: Callable, data: Data, loss_fn: Callable, task: str,
              batch_size: int, device: torch.device, generator: torch.Generator,
              precision: Precision, layout: bool) -> dict[str, float]:
    model.eval()
    metrics = _Metrics(task)
    for x, y in _batches(data, batch_size, device, False, generator):
        with precision.autocast():
            out = forward(to_memory_format(x, layout))  # (B, M, C) or ((B, M, C), extras...)
        out = _fp32(out)
        metrics.update(loss_fn(out, y).item(), out, y)
    return metrics.summary("val")


def _check_targets(out: torch.Tensor, y: Targets, task: str) -> None:
    """Fail on the first batch, with a fix, when targets cannot match the model's outputs."""
    out, y = _logits(out), _labels(y)
    if out.ndim != 3:
        raise ValueError(f"the model must return logits (batch, members, outputs), got shape "
                         f"{tuple(out.shape)}; wrap a single network in "
                         f"fernb.models.members.Members")
    n = out.shape[-1]
    if task == "classification" and y.ndim == 1 and (y.min() < 0 or y.max() >= n):
        raise ValueError(f"class targets must lie in [0, {n - 1}] for a model with {n} outputs, "
                         f"got {int(y.min())}..{int(y.max())}: build the model with "
                         f"n_classes equal to the dataset's number of classes")
    if y.ndim == 2 and y.shape[1] != n:
        raise ValueError(f"targets have {y.shape[1]} columns but the model has {n} outputs")


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass(frozen=True)
class FitConfig:
    """How :func:`fit` trains: everything but the model, the data and where it checkpoints.

    Attributes:
        epochs: total number of epochs (a resumed run continues up to this number).
        optimizer: an :class:`~fernb.train.optim.Optimizer`; its ``lr`` applies to parameter
            groups that set none.
        schedule: a :class:`~fernb.train.optim.Schedule` stepped once per epoch, e.g.
            ``Schedule("StepLR", step_size=250, gamma=0.5)`` (ESR on CK+), or None.
        loss: ``loss(outputs, targets)`` in fp32; None takes :func:`member_cross_entropy`
            (classification) or :func:`member_rmse` (regression).
        task: ``"classification"`` (accuracy metrics) or ``"regression"`` (RMSE metrics).
        batch_size: training and validation batch size.
        augment: ``augment(x, y) -> (x, y)`` on every training batch on the device, so a
            geometric augmentation can move targets (landmarks, maps) with the image.
        forward: name of the model method the training and validation passes call, e.g.
            ``"forward_with_map"``; it returns (B, M, C) logits, or a tuple whose first
            element they are (the loss receives the whole output).
        select: the history column whose best value picks the epoch whose weights are kept
            (and that early stopping watches), e.g. ``"val_loss"``, ``"val_ce"`` (the
            classification objective alone, whatever the loss) or ``"val_acc_ens"``;
            without validation data the last epoch is kept.
        maximize: whether a larger ``select`` is better (accuracies) or a smaller (losses).
        early_stopping: stop after this many epochs without a better ``select``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (see :mod:`fernb.device`): the
            forward pass's autocast; losses, metrics and updates stay in fp32. Convolutional
            models train with channels-last tensors.
        seed: seeds shuffling, augmentation and dropout (not initial weights: build models
            under :func:`fernb.seeding.seeded`).
        progress: show a tqdm bar over epochs.
    """

    epochs: int
    optimizer: Optimizer = field(default_factory=lambda: sgd(0.01))
    schedule: Schedule | None = None
    loss: Callable[[Any, Any], torch.Tensor] | None = None
    task: str = "classification"
    batch_size: int = 32
    augment: Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]] | None = None
    forward: str = "forward"
    select: str = "val_loss"
    maximize: bool = False
    early_stopping: int | None = None
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    progress: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if not isinstance(self.optimizer, Optimizer):
            raise TypeError(f"optimizer must be a fernb.train.optim.Optimizer, e.g. "
                            f"sgd(0.1) or adam(1e-3); got {self.optimizer!r}")
        if self.schedule is not None and not isinstance(self.schedule, Schedule):
            raise TypeError(f"schedule must be a fernb.train.optim.Schedule or None, got "
                            f"{self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1; got epochs={self.epochs}, "
                             f"batch_size={self.batch_size}")
        if self.early_stopping is not None and self.early_stopping < 1:
            raise ValueError(f"early_stopping must be None or >= 1, got {self.early_stopping}")

    def replace(self, **changes: Any) -> FitConfig:
        """A copy with some settings changed, e.g. ``config.replace(epochs=20)``."""
        return dataclasses.replace(self, **changes)

    @property
    def lr(self) -> float:
        return self.optimizer.lr


def _setup(config: FitConfig, mixed: Precision, train: Data,
           opt: torch.optim.Optimizer) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: everything that shapes the training but
    the number of epochs, which a rerun may raise."""
    return {"config": {k: v for k, v in describe(config).items() if k != "epochs"},
            "precision": mixed.name,
            "n_train": len(train.dataset if isinstance(train, DataLoader) else train),
            "lrs": [g["lr"] for g in opt.param_groups]}


def fit(model: nn.Module, train: Data, val: Data | None, config: FitConfig, *,
        groups: Sequence[dict[str, Any]] | None = None,
        checkpoint: str | Path | None = None,
        on_epoch_end: Callable[[int, nn.Module], None] | None = None) -> History:
    """Train ``model`` (output (B, M, C)) by ``config`` and return its per-epoch
    :class:`History`.

    Args:
        model: returns (batch, members, outputs); frozen parts are kept frozen.
        train, val: a FaceDataset, a torch Dataset of (x, y) or a DataLoader; ``val`` may be
            None. Targets are class indices, (B, C) distributions, or (B, D) regression
            targets; samples (x, y1, y2, ...) give the loss a tuple (y1, y2, ...) (e.g. a
            label and a target map), whose first element the metrics use.
        config: how to train (:class:`FitConfig`).
        groups: torch-style parameter groups ``{"params": module_or_params, "lr": ...}`` for
            per-group learning rates; every trainable parameter must be in one.
        checkpoint: folder of ``last.pt``, written after every epoch; if it exists the run
            resumes after its last finished epoch (refused when it was written by another
            configuration).
        on_epoch_end: called as ``on_epoch_end(epoch, model)`` after each epoch (1-based),
            e.g. to draw saliency maps at training milestones (ESR Fig. 5, right).

    The weights of the epoch with the best ``config.select`` are restored at the end (the
    last epoch's when there is no validation data).
    """
    if config.early_stopping is not None and val is None:
        raise ValueError("early_stopping needs validation data")
    _check_data(train, "train")
    if val is not None:
        _check_data(val, "val")
    if not callable(getattr(model, config.forward, None)):
        raise ValueError(f"forward={config.forward!r}: the model has no such method")
    run = getattr(model, config.forward)
    task = config.task
    loss_fn = config.loss or (member_cross_entropy if task == "classification" else member_rmse)
    device = resolve_device(config.device)
    mixed = resolve_precision(config.precision, device)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)

    model.to(device)
    train = _prepare(train, device)
    val = _prepare(val, device) if val is not None else None
    opt = config.optimizer(_param_groups(model, groups))
    scheduler = config.schedule(opt) if config.schedule is not None else None
    scaler = torch.amp.GradScaler(device.type, enabled=mixed.scaled)
    history = History()
    sign = -1.0 if config.maximize else 1.0
    best, best_state, stale, start = math.inf, None, 0, 0

    ckpt_path = Path(checkpoint) / "last.pt" if checkpoint is not None else None
    setup = _setup(config, mixed, train, opt) if ckpt_path is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        if ckpt.get("setup") != setup:
            raise ValueError(f"{ckpt_path} was written by a run with other settings; resuming "
                             f"would mix them: use another checkpoint folder or delete it")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        if scheduler is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"], generator)
        history = History(ckpt["history"], ckpt["best_epoch"])
        best, best_state, stale, start = (ckpt["best"], ckpt["best_state"], ckpt["stale"],
                                          ckpt["epoch"])

    with channels_last(model) as layout:
        bar = tqdm(range(start, config.epochs), initial=start, total=config.epochs,
                   disable=not config.progress, desc="epoch")
        for epoch in bar:
            if config.early_stopping is not None and stale >= config.early_stopping:
                break
            t0 = time.perf_counter()
            _set_train_mode(model)
            metrics = _Metrics(task)
            for step, (x, y) in enumerate(_batches(train, config.batch_size, device, True,
                                                   generator)):
                if config.augment is not None:
                    x, y = config.augment(x, y)
                with mixed.autocast():
                    out = run(to_memory_format(x, layout))  # (B, M, C) or ((B, M, C), ...)
                out = _fp32(out)
                if epoch == start and step == 0:
                    _check_targets(out, y, task)
                loss = loss_fn(out, y)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"loss is {loss.item()} at epoch {epoch + 1}, batch {step + 1}; lower "
                        f"the learning rate (lr={config.lr}) or check the inputs and targets "
                        f"for NaN/inf")
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                metrics.update(loss.item(), out, y)
            if scheduler is not None:
                scheduler.step()

            row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"],
                   **metrics.summary("train")}
            if val is not None:
                row.update(_evaluate(model, run, val, loss_fn, task, config.batch_size,
                                     device, generator, mixed, layout))
            row["seconds"] = time.perf_counter() - t0
            history.epochs.append(row)
            if val is None:
                history.best_epoch = epoch + 1
            else:
                if config.select not in row:
                    raise ValueError(f"select={config.select!r} is not a history column; "
                                     f"choose one of {sorted(k for k in row if k != 'epoch')}")
                score = sign * row[config.select]
                if score < best:
                    best, stale, history.best_epoch = score, 0, epoch + 1
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    stale += 1
            bar.set_postfix({k: f"{v:.3f}" for k, v in row.items()
                             if k in ("train_loss", "val_loss")})
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, model)

            if ckpt_path is not None:
                atomic_torch_save({
                    "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scaler": scaler.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "epoch": epoch + 1, "history": history.epochs,
                    "best_epoch": history.best_epoch, "best": best, "best_state": best_state,
                    "stale": stale, "rng": _rng_state(generator), "setup": setup}, ckpt_path)
    if best_state is not None:
        model.load_state_dict(best_state)
    return history
