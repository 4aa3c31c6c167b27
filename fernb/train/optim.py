"""Optimizers and learning-rate schedules as small, comparable descriptions.

An :class:`Optimizer` or :class:`Schedule` names a class of ``torch.optim`` (or of
``torch.optim.lr_scheduler``) and its options; calling it builds the torch object. Being
plain data, two configurations compare equal when they would train alike, and they enter a
stored run's key (:mod:`fernb.specs`) as what they are.

    Optimizer("SGD", lr=0.1, momentum=0.9)(param_groups)
    Schedule("StepLR", step_size=250, gamma=0.5)(optimizer)
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class _Factory:
    name: str
    options: dict[str, Any] = field(default_factory=dict)

    MODULE = torch.optim

    def __init__(self, name: str, **options: Any) -> None:
        cls = getattr(self.MODULE, name, None)
        if not isinstance(cls, type):
            raise ValueError(f"{type(self).__name__}: {self.MODULE.__name__} has no class "
                             f"{name!r}")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "options", dict(options))

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, **self.options}

    def replace(self, **options: Any) -> Any:
        """The same class with some options changed."""
        return type(self)(self.name, **{**self.options, **options})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({self.name!r}{', ' if args else ''}{args})"


class Optimizer(_Factory):
    """A ``torch.optim`` optimizer by class name and options (``lr`` required)."""

    MODULE = torch.optim

    def __init__(self, name: str, **options: Any) -> None:
        super().__init__(name, **options)
        lr = options.get("lr")
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
            raise ValueError(f"Optimizer({name!r}) needs a learning rate lr > 0, got {lr!r}")

    @property
    def lr(self) -> float:
        return float(self.options["lr"])

    def __call__(self, groups: Iterable[dict[str, Any]]) -> torch.optim.Optimizer:
        return getattr(torch.optim, self.name)(list(groups), **self.options)


class Schedule(_Factory):
    """A ``torch.optim.lr_scheduler`` class by name and options, stepped once per epoch."""

    MODULE = torch.optim.lr_scheduler

    def __call__(self, optimizer: torch.optim.Optimizer) -> Any:
        return getattr(torch.optim.lr_scheduler, self.name)(optimizer, **self.options)


def sgd(lr: float, *, momentum: float = 0.9, weight_decay: float = 0.0) -> Optimizer:
    """SGD with momentum (ESR, FAML's phases, the soft-label members)."""
    return Optimizer("SGD", lr=lr, momentum=momentum, weight_decay=weight_decay)


def adam(lr: float, *, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
         eps: float = 1e-8) -> Optimizer:
    """Adam (relevance maps, FLL-to-FER transfer)."""
    return Optimizer("Adam", lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps)
