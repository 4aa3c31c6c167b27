"""Declared value constraints of a chapter's parameters, checked before anything runs.

Each chapter declares one :class:`Rules` object (``PARAMETERS`` in its module of
:mod:`fernb.studies`): a constraint per parameter (ranges, choices, list elements, a device
that exists on this machine, a known dataset) and relations between parameters (milestones
within the epochs, trials below the number of folds...). The runner checks them before the
kernel starts; the notebook's first cell checks them again for readers who press *Run All* in
JupyterLab. Every message names the parameter, the value given and what is valid, and all
problems are reported at once.
"""
from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class ParameterError(ValueError):
    """A parameter name or value that the notebook does not accept."""


class Constraint:
    """One parameter's valid values; ``problem`` returns what is wrong, or None."""

    def problem(self, value: Any) -> str | None:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class Range(Constraint):
    """A number in ``[low, high]`` (either bound optional); ``integer`` requires an int and
    ``open_low`` excludes ``low`` itself (e.g. a learning rate > 0)."""

    low: float | None = None
    high: float | None = None
    integer: bool = False
    open_low: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None and not self.open_low:
            return f"{kind} in {self.low:g}..{self.high:g}"
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.open_low else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"<= {self.high:g}")
        return f"{kind} {' and '.join(parts)}" if parts else kind

    def problem(self, value: Any) -> str | None:
        ok = _is_int(value) if self.integer else _is_real(value)
        if not ok or not math.isfinite(value):
            return self.describe()
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            return self.describe()
        if self.high is not None and value > self.high:
            return self.describe()
        return None


@dataclass(frozen=True)
class Choice(Constraint):
    """One of a fixed set of values."""

    options: tuple[Any, ...]

    def __init__(self, *options: Any) -> None:
        object.__setattr__(self, "options", tuple(options))

    def describe(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)

    def problem(self, value: Any) -> str | None:
        return None if value in self.options else self.describe()


@dataclass(frozen=True)
class ListOf(Constraint):
    """A list whose elements each satisfy ``element``, with ``min_len``..``max_len`` items
    and, with ``unique``, no repeats."""

    element: Constraint
    min_len: int = 1
    max_len: int | None = None
    unique: bool = False

    def describe(self) -> str:
        size = (f"at least {self.min_len}" if self.max_len is None
                else f"{self.min_len} to {self.max_len}")
        return (f"a list of {size} {'distinct ' if self.unique else ''}item(s), each "
                f"{self.element.describe()}")

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, (list, tuple)):
            return self.describe()
        if len(value) < self.min_len or (self.max_len is not None and len(value) > self.max_len):
            return self.describe()
        if self.unique and len(set(map(repr, value))) != len(value):
            return self.describe()
        bad = [v for v in value if self.element.problem(v) is not None]
        return f"{self.describe()} ({bad[0]!r} is not)" if bad else None


@dataclass(frozen=True)
class MappingOf(Constraint):
    """A non-empty mapping with keys from ``keys`` and values satisfying ``values``."""

    keys: Choice
    values: Constraint

    def describe(self) -> str:
        return (f"a mapping from {self.keys.describe()} to {self.values.describe()}")

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, Mapping) or not value:
            return self.describe()
        bad_keys = [k for k in value if self.keys.problem(k) is not None]
        if bad_keys:
            return f"{self.describe()} (key {bad_keys[0]!r} is not valid)"
        for k, v in value.items():
            if self.values.problem(v) is not None:
                return f"{self.describe()} (the value of {k!r} is not valid)"
        return None


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class Device(Constraint):
    """``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or
    ``"mps"``, and present on this machine."""

    def describe(self) -> str:
        return "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', available on this machine"

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, str) or not _DEVICE.match(value):
            return self.describe()
        import torch
        if value.startswith("cuda"):
            if not torch.cuda.is_available():
                return ("a device this machine has: it has no CUDA GPU "
                        "(torch.cuda.is_available() is False); use 'auto' or 'cpu'")
            index = int(value.split(":")[1]) if ":" in value else 0
            if index >= torch.cuda.device_count():
                return (f"a CUDA device this machine has: it has {torch.cuda.device_count()} "
                        f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
        if value == "mps" and not torch.backends.mps.is_available():
            return "a device this machine has: MPS is not available; use 'auto' or 'cpu'"
        return None


@dataclass(frozen=True)
class DatasetName(Constraint):
    """A dataset name known to :func:`fernb.data.load_dataset` (optionally limited to
    ``allowed``)."""

    allowed: tuple[str, ...] | None = None

    def names(self) -> list[str]:
        from fernb.data import available_datasets
        known = available_datasets()
        return [n for n in known if self.allowed is None or n in self.allowed]

    def describe(self) -> str:
        return "one of " + ", ".join(self.names())

    def problem(self, value: Any) -> str | None:
        return None if value in self.names() else self.describe()


@dataclass(frozen=True)
class Relation:
    """A condition between parameters: ``holds(values)`` must be true; ``message(values)``
    says what is wrong and names the parameters involved."""

    names: tuple[str, ...]
    holds: Callable[[Mapping[str, Any]], bool]
    message: Callable[[Mapping[str, Any]], str]


@dataclass(frozen=True)
class Unused:
    """Parameters that do nothing when ``applies(values)`` is true (e.g. ``n_subjects`` with
    a real dataset); setting them then is an error, because the run would silently ignore
    them. ``reason(values)`` says why."""

    names: tuple[str, ...]
    applies: Callable[[Mapping[str, Any]], bool]
    reason: Callable[[Mapping[str, Any]], str]


@dataclass(frozen=True)
class Rules:
    """A chapter's declared constraints: per parameter, relations, and unused parameters."""

    values: Mapping[str, Constraint]
    relations: Sequence[Relation] = ()
    unused: Sequence[Unused] = ()

    def problems(self, values: Mapping[str, Any], given: Collection[str] | None = None
                 ) -> list[str]:
        """Everything wrong with ``values``; ``given`` names the parameters the user (or the
        profile) set explicitly, so that setting an unused one is caught."""
        found = []
        for name, constraint in self.values.items():
            if name not in values:
                continue
            problem = constraint.problem(values[name])
            if problem is not None:
                found.append(f"{name} = {values[name]!r}: must be {problem}")
        bad = {f.split(" = ")[0] for f in found}
        for relation in self.relations:
            if any(n in bad or n not in values for n in relation.names):
                continue
            if not relation.holds(values):
                found.append(relation.message(values))
        for rule in self.unused:
            names = [n for n in rule.names if n in (given or ())]
            if names and not any(n in bad for n in rule.names) and rule.applies(values):
                found.append(f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} not "
                             f"used: {rule.reason(values)}; remove "
                             f"{' '.join(f'-p {n} ...' for n in names)}")
        return found

    def check(self, values: Mapping[str, Any], given: Collection[str] | None = None,
              chapter: str = "") -> None:
        """Raise :class:`ParameterError` listing every problem, or return quietly."""
        found = self.problems(values, given)
        if found:
            where = f" for {chapter}" if chapter else ""
            raise ParameterError(f"invalid parameter value(s){where}:\n  - "
                                 + "\n  - ".join(found))

    def check_notebook(self, namespace: Mapping[str, Any]) -> dict[str, Any]:
        """The notebook's first-cell check of the parameters as the kernel holds them
        (``globals()``); returns them, e.g. for :class:`fernb.report.Report`."""
        missing = [n for n in self.values if n not in namespace]
        if missing:
            raise ParameterError(f"the parameters cell does not define {missing}")
        values = {n: namespace[n] for n in self.values}
        self.check(values)
        return values


def relation(names: Iterable[str], holds: Callable[[Mapping[str, Any]], bool],
             message: Callable[[Mapping[str, Any]], str]) -> Relation:
    """Shorthand for :class:`Relation`."""
    return Relation(tuple(names), holds, message)


SEED = Range(0, 2**31 - 1, integer=True)
POSITIVE_INT = Range(1, integer=True)
LEARNING_RATE = Range(0, 10, open_low=True)
FRACTION = Range(0, 1, open_low=True)


def dataset_rules(dataset: str = "dataset", root: str = "data_root",
                  synthetic_only: Sequence[str] = ("n_subjects",)
                  ) -> tuple[list[Relation], list[Unused]]:
    """Relations between a dataset parameter and its folder: a real dataset needs
    ``root``; a synthetic preset generates its faces, so a ``root`` would be ignored (the
    ``folder`` dataset reads images from one); ``synthetic_only`` parameters (e.g. the number
    of generated subjects) do nothing with a real dataset."""
    from fernb.data.datasets import SYNTHETIC

    def needs_root(v: Mapping[str, Any]) -> bool:
        return v[dataset] in SYNTHETIC or bool(v[root])

    def root_unused(v: Mapping[str, Any]) -> bool:
        return v[dataset] not in SYNTHETIC or not v[root]

    relations = [
        relation((dataset, root), needs_root,
                 lambda v: f"{dataset} = {v[dataset]!r} needs its folder: add -p {root} "
                           f"/path/to/it (see the book page 'Running on the real datasets')"),
        relation((dataset, root), root_unused,
                 lambda v: f"{root} = {v[root]!r} is not used by {dataset} = {v[dataset]!r}, "
                           f"which generates its faces; to train on images in a folder use "
                           f"-p {dataset} folder -p {root} {v[root]}"),
    ]
    unused = [Unused(tuple(synthetic_only), lambda v: v[dataset] not in SYNTHETIC,
                     lambda v: f"{dataset} = {v[dataset]!r} is read from disk, not generated")]
    return relations, unused
