"""One small training loop for every chapter, plus ESR's Algorithm 1 and bagging.

Models return logits of shape (batch, members, classes); the default loss is ESR's combined
loss, eq. (1) of Siqueira, Magg and Wermter (AAAI 2020): the sum over members of each
member's cross-entropy. ``fit`` trains with SGD or Adam, per-group learning rates, AMP on
CUDA, a checkpoint after every epoch (rerunning with the same ``checkpoint_dir`` resumes
exactly), keeps the weights of the epoch with the lowest validation loss, and returns a
:class:`History`.

Built on ``fit``: :func:`train_esr` (Algorithm 1 and the paper's four training strategies),
:func:`finetune_affect` (ESR-9's valence/arousal heads, Table 4) and :func:`train_bagging`
(the traditional ensemble).
"""
from __future__ import annotations

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
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from fernb.data.datasets import FaceDataset
from fernb.device import (Precision, channels_last, resolve_device, resolve_precision,
                          to_memory_format)
from fernb.io import atomic_torch_save
from fernb.ensemble import plurality_vote
from fernb.losses import member_cross_entropy, member_rmse
from fernb.models.esr import ESR

Data = FaceDataset | Dataset | DataLoader
STRATEGIES = ("fixed", "varied", "frozen", "interleaved")


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
    is validation data. Training metrics come from the training passes themselves
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
    """Accumulates the loss and per-member / ensemble accuracy or RMSE over an epoch."""

    def __init__(self, task: str) -> None:
        self.task, self.n, self.loss = task, 0, 0.0
        self.member: torch.Tensor | float = 0.0
        self.ensemble: torch.Tensor | float = 0.0

    def update(self, loss: float, out: torch.Tensor, y: Targets) -> None:
        out, y = _logits(out).detach().float(), _labels(y)
        b = len(y)
        self.n += b
        self.loss += loss * b
        if self.task == "classification":
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


def fit(model: nn.Module, train_data: Data, val_data: Data | None = None, *, epochs: int,
        lr: float, optimizer: str = "sgd", momentum: float = 0.9, weight_decay: float = 0.0,
        schedule: Callable[[torch.optim.Optimizer], Any] | None = None,
        param_groups: Sequence[dict[str, Any]] | None = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        task: str = "classification", batch_size: int = 32, device: str | torch.device = "auto",
        precision: str = "auto", seed: int = 0, checkpoint_dir: str | Path | None = None,
        early_stopping: int | None = None, progress: bool = True,
        augment: Callable[[torch.Tensor, Targets], tuple[torch.Tensor, Targets]] | None = None,
        forward: str = "forward",
        on_epoch_end: Callable[[int, nn.Module], None] | None = None) -> History:
    """Train ``model`` (output (B, M, C)) and return its per-epoch :class:`History`.

    Args:
        model: returns (batch, members, outputs); frozen parts are kept frozen.
        train_data, val_data: a FaceDataset, a torch Dataset of (x, y) or a DataLoader.
            Targets are class indices, (B, C) distributions, or (B, D) regression targets;
            samples (x, y1, y2, ...) give the loss a tuple (y1, y2, ...) (e.g. a label and a
            target map), whose first element the metrics use.
        epochs: total number of epochs (a resumed run continues up to this number).
        lr: learning rate of groups that set none.
        optimizer: ``"sgd"`` (with ``momentum``) or ``"adam"``.
        schedule: ``schedule(optimizer)`` -> an LR scheduler stepped once per epoch, e.g.
            ``functools.partial(StepLR, step_size=250, gamma=0.5)`` (ESR on CK+).
        param_groups: torch-style groups ``{"params": module_or_params, "lr": ...}`` for
            per-group learning rates; every trainable parameter must be in one.
        loss_fn: ``loss_fn(outputs, targets)``; default :func:`member_cross_entropy`
            (classification) or :func:`member_rmse` (regression).
        task: ``"classification"`` (accuracy metrics) or ``"regression"`` (RMSE metrics).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (see :mod:`fernb.device`): the
            forward pass's autocast; losses, metrics and updates stay in fp32. Convolutional
            models train with channels-last tensors.
        seed: seeds shuffling, augmentation and dropout (not initial weights: build models
            under :func:`fernb.seeding.seeded`).
        checkpoint_dir: where ``last.pt`` is written after every epoch; if it exists the
            run resumes after its last finished epoch.
        early_stopping: stop after this many epochs without a lower validation loss.
        progress: show a tqdm bar over epochs.
        augment: ``augment(x, y) -> (x, y)`` on every training batch on the device, so a
            geometric augmentation can move targets (landmarks, maps) with the image.
        forward: name of the model method the training and validation passes call, e.g.
            ``"forward_with_map"``; it returns (B, M, C) logits, or a tuple whose first
            element they are (the loss receives the whole output).
        on_epoch_end: called as ``on_epoch_end(epoch, model)`` after each epoch (1-based),
            e.g. to draw saliency maps at training milestones (ESR Fig. 5, right).

    The weights of the epoch with the lowest validation loss are restored at the end (the
    last epoch's when there is no validation data).
    """
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"epochs and batch_size must be >= 1 and lr > 0; got epochs={epochs}, "
                         f"batch_size={batch_size}, lr={lr}")
    if early_stopping is not None and val_data is None:
        raise ValueError("early_stopping needs val_data")
    _check_data(train_data, "train_data")
    if val_data is not None:
        _check_data(val_data, "val_data")
    if not callable(getattr(model, forward, None)):
        raise ValueError(f"forward={forward!r}: the model has no such method")
    run = getattr(model, forward)
    loss_fn = loss_fn or (member_cross_entropy if task == "classification" else member_rmse)
    device = resolve_device(device)
    mixed = resolve_precision(precision, device)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)

    model.to(device)
    train_data = _prepare(train_data, device)
    val_data = _prepare(val_data, device) if val_data is not None else None
    groups = _param_groups(model, param_groups)
    if optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        opt = torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    scheduler = schedule(opt) if schedule is not None else None
    scaler = torch.amp.GradScaler(device.type, enabled=mixed.scaled)
    history = History()
    best_loss, best_state, stale, start = math.inf, None, 0, 0

    ckpt_path = Path(checkpoint_dir) / "last.pt" if checkpoint_dir is not None else None
    setup = {"lr": lr, "optimizer": optimizer, "batch_size": batch_size, "seed": seed,
             "precision": mixed.name,
             "n_train": len(train_data.dataset if isinstance(train_data, DataLoader)
                            else train_data),
             "lrs": [g["lr"] for g in opt.param_groups]}
    if ckpt_path is not None and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        if ckpt.get("setup", setup) != setup:
            raise ValueError(f"{ckpt_path} was written by a run with other settings "
                             f"({ckpt['setup']}, now {setup}); resuming would mix them: use "
                             f"another checkpoint_dir or delete it")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        if scheduler is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"], generator)
        history = History(ckpt["history"], ckpt["best_epoch"])
        best_loss, best_state, stale, start = (ckpt["best_loss"], ckpt["best_state"],
                                               ckpt["stale"], ckpt["epoch"])

    with channels_last(model) as layout:
        bar = tqdm(range(start, epochs), initial=start, total=epochs, disable=not progress,
                   desc="epoch")
        for epoch in bar:
            if early_stopping is not None and stale >= early_stopping:
                break
            t0 = time.perf_counter()
            _set_train_mode(model)
            metrics = _Metrics(task)
            for step, (x, y) in enumerate(_batches(train_data, batch_size, device, True, generator)):
                if augment is not None:
                    x, y = augment(x, y)
                with mixed.autocast():
                    out = run(to_memory_format(x, layout))  # (B, M, C) or ((B, M, C), ...)
                out = _fp32(out)
                if epoch == start and step == 0:
                    _check_targets(out, y, task)
                loss = loss_fn(out, y)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"loss is {loss.item()} at epoch {epoch + 1}, batch {step + 1}; lower the "
                        f"learning rate (lr={lr}) or check the inputs and targets for NaN/inf")
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                metrics.update(loss.item(), out, y)
            if scheduler is not None:
                scheduler.step()

            row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], **metrics.summary("train")}
            if val_data is not None:
                row.update(_evaluate(model, run, val_data, loss_fn, task, batch_size, device,
                                     generator, mixed, layout))
            row["seconds"] = time.perf_counter() - t0
            history.epochs.append(row)
            if val_data is None:
                history.best_epoch = epoch + 1
            elif row["val_loss"] < best_loss:
                best_loss, stale, history.best_epoch = row["val_loss"], 0, epoch + 1
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
            bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k in ("train_loss", "val_loss")})
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, model)

            if ckpt_path is not None:
                atomic_torch_save({
                    "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scaler": scaler.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "epoch": epoch + 1, "history": history.epochs, "best_epoch": history.best_epoch,
                    "best_loss": best_loss, "best_state": best_state, "stale": stale,
                    "rng": _rng_state(generator), "setup": setup}, ckpt_path)
    if best_state is not None:
        model.load_state_dict(best_state)
    return history


def _subset(data: FaceDataset | Dataset, indices: np.ndarray) -> FaceDataset | Dataset:
    if len(indices) == 0:
        raise ValueError("a training subset is empty")
    if isinstance(data, FaceDataset):
        return data.subset(indices)
    return Subset(data, np.asarray(indices).tolist())


def _stage_dir(checkpoint_dir: str | Path | None, name: str) -> Path | None:
    return Path(checkpoint_dir) / name if checkpoint_dir is not None else None


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


def train_esr(model: ESR, train_data: FaceDataset | Dataset, subsets: Sequence[np.ndarray],
              val_data: Data | None = None, *, strategy: str = "varied",
              epochs: int | Sequence[int], lr: float = 0.1, lr_trained: float = 0.02,
              init: str = "fresh", checkpoint_dir: str | Path | None = None,
              **fit_kwargs: Any) -> tuple[ESR, list[History]]:
    """Grow an ESR one branch at a time (Algorithm 1) and train it with eq. (1).

    Branch ``b`` is trained together with branches ``1..b-1`` on ``subsets[b-1]`` (indices
    into ``train_data``; e.g. :func:`fernb.data.splits.leave_one_fold_out` on CK+ or
    :func:`balanced_subset` on AffectNet). Treatment of what is already trained when a branch
    is added (paper, "Training ESRs at different branching levels"):

    - ``"fixed"``: shared layers and trained branches keep ``lr`` (lr_sl = lr_tb = 0.1).
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

    Every stage keeps the weights of its epoch with the lowest validation loss (see
    :func:`fit`).

    Args:
        model: an ESR with exactly one branch (``"interleaved"``: any number; branches are
            added up to ``len(subsets)``).
        epochs: epochs per added branch, one number for all or one per branch (ESR-9 in the
            authors' code: 50 for the first branch, then 20).
        init: how added branches start, see :meth:`ESR.add_branch`.
        fit_kwargs: passed to :func:`fit` (``optimizer``, ``schedule``, ``batch_size``...).

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
    stage_epochs = [int(epochs)] * len(subsets) if np.ndim(epochs) == 0 else list(epochs)
    if len(stage_epochs) != len(subsets):
        raise ValueError(f"epochs gives {len(stage_epochs)} values for {len(subsets)} branches; "
                         f"give one number or one per branch")
    if strategy == "interleaved":
        if len(model.branches) > len(subsets):
            raise ValueError(f"the model has {len(model.branches)} branches but only "
                             f"{len(subsets)} subsets were given")
        while len(model.branches) < len(subsets):
            model.add_branch(init)
        union = np.unique(np.concatenate([np.asarray(s) for s in subsets]))
        history = fit(_Interleaved(model), _subset(train_data, union), val_data,
                      epochs=sum(stage_epochs), lr=lr,
                      checkpoint_dir=_stage_dir(checkpoint_dir, "all"), **fit_kwargs)
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
        histories.append(fit(model, _subset(train_data, indices), val_data, epochs=n_epochs,
                             lr=lr, param_groups=groups,
                             checkpoint_dir=_stage_dir(checkpoint_dir, f"branch_{b}"),
                             **fit_kwargs))
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


def finetune_affect(model: ESR, train_data: FaceDataset | Dataset, subsets: Sequence[np.ndarray],
                    val_data: Data | None = None, *, epochs: int, lr: float = 0.01,
                    lr_trained: float = 0.001, checkpoint_dir: str | Path | None = None,
                    **fit_kwargs: Any) -> tuple[ESR, list[History]]:
    """Fine-tune only ESR-9's valence/arousal heads, branch by branch (paper, "Continuous
    affect perception"; Table 4).

    Everything else is frozen, and stays frozen afterwards. Stage ``b`` trains head ``b`` at ``lr`` and heads ``1..b-1``
    at ``lr_trained`` on ``subsets[b-1]`` (e.g. up to 5000 samples per valence/arousal
    quadrant, see :func:`quadrants`), minimising the summed RMSE of the first ``b`` branches.
    Targets are (B, 2) valence and arousal, e.g. a FaceDataset with
    ``target="valence_arousal"``.
    """
    if not isinstance(model, ESR) or model.arch != "wild":
        raise TypeError("finetune_affect needs an ESR with arch='wild' (it has affect heads)")
    if len(subsets) != len(model.branches):
        raise ValueError(f"give one subset per branch: {len(model.branches)} branches, "
                         f"{len(subsets)} subsets")
    freeze(model)
    histories = []
    for b, indices in enumerate(subsets, start=1):
        heads = [branch.affect for branch in model.branches[:b]]
        for head in heads:
            head.requires_grad_(True)
        groups = [{"params": heads[-1], "lr": lr},
                  {"params": [p for h in heads[:-1] for p in h.parameters()], "lr": lr_trained}]
        histories.append(fit(_AffectView(model, b), _subset(train_data, indices), val_data,
                             epochs=epochs, lr=lr, param_groups=groups, task="regression",
                             checkpoint_dir=_stage_dir(checkpoint_dir, f"branch_{b}"),
                             **fit_kwargs))
    return model, histories


class _Member(nn.Module):
    """One independent network of a level-0 ESR, as a model with members = 1."""

    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x).unsqueeze(1)  # (B, 1, C)


def train_bagging(model: ESR, train_data: FaceDataset | Dataset, subsets: Sequence[np.ndarray],
                  val_data: Data | None = None, *, checkpoint_dir: str | Path | None = None,
                  **fit_kwargs: Any) -> tuple[ESR, list[History]]:
    """Traditional ensemble by bagging: network ``k`` of a level-0 ESR (see
    :func:`fernb.models.esr.traditional_ensemble`) is trained alone on ``subsets[k]``
    (ESR on CK+: four networks, each on three of the four training folds)."""
    if not isinstance(model, ESR) or model.level != 0:
        raise TypeError("train_bagging needs an ESR with level=0 (independent networks)")
    if len(subsets) != len(model.branches):
        raise ValueError(f"give one subset per network: {len(model.branches)} networks, "
                         f"{len(subsets)} subsets")
    histories = [fit(_Member(branch), _subset(train_data, indices), val_data,
                     checkpoint_dir=_stage_dir(checkpoint_dir, f"network_{k}"), **fit_kwargs)
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
