"""Each chapter's parameters, declared once, and the rules their values must meet.

A chapter declares one :class:`ChapterSettings` subclass (``Settings`` in its study): a frozen
dataclass whose fields are its parameters, each made by :func:`param` with its default (the
``cpu`` profile's value), its constraint (ranges, choices, list elements, a device that exists
on this machine, a known dataset; :class:`Constraint`) and a one-line help; class variables
hold the relations between parameters (milestones within the epochs, trials below the number
of folds...) and the ones a setting makes unused. Everything else comes from that one
declaration: the notebook's ``parameters`` cell (checked by a test against it), its first-cell
check, ``fernb params``, the check of every profile and of ``-p NAME VALUE`` before the kernel
starts, and the study's configuration (the settings object itself). Every message names the
parameter, the value given and what is valid, and all problems are reported at once.

Why dataclass fields with metadata: the declaration is plain Python with type hints that
editors and readers know, the instance is the immutable configuration a study passes around
and a stored run's key describes (:mod:`fernb.specs`), and no dependency is needed for rules
as small as these; the constraint objects keep their messages.
"""
from __future__ import annotations

import copy
import json
import math
import numbers
import re
import types
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

import yaml


class ParameterError(ValueError):
    """A parameter name or value that the notebook does not accept. In a notebook it shows
    as its message alone, without a traceback."""

    def _render_traceback_(self) -> list[str]:
        return [f"ParameterError: {self}"]


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
    says what is wrong and names the parameters involved. ``folders`` marks a condition on a
    real dataset's folder, which only the reader's command line can meet (a profile cannot
    know where the reader keeps CK+)."""

    names: tuple[str, ...]
    holds: Callable[[Mapping[str, Any]], bool]
    message: Callable[[Mapping[str, Any]], str]
    folders: bool = False


@dataclass(frozen=True)
class Unused:
    """Parameters that do nothing when ``applies(values)`` is true (e.g. ``n_subjects`` with
    a real dataset); setting them then is an error, because the run would silently ignore
    them. ``reason(values)`` says why."""

    names: tuple[str, ...]
    applies: Callable[[Mapping[str, Any]], bool]
    reason: Callable[[Mapping[str, Any]], str]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


_NO_DEFAULT = _Missing()


def param(default: Any, check: Constraint | None = None, help: str = "") -> Any:
    """Declare one chapter parameter as a field of its :class:`ChapterSettings`: its default
    (the ``cpu`` profile's value), the constraint its values must meet and a one-line help,
    which becomes the comment of the notebook's ``parameters`` cell and of ``fernb params``."""
    metadata = {"check": check, "help": help}
    if isinstance(default, (list, dict, set)):
        frozen = copy.deepcopy(default)
        return field(default_factory=lambda: copy.deepcopy(frozen), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Declared:
    """One declared parameter, as :meth:`ChapterSettings.declared` lists them."""

    name: str
    default: Any
    annotation: Any
    check: Constraint | None
    help: str

    @property
    def type_name(self) -> str:
        return _type_name(self.annotation)


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _matches(value: Any, annotation: Any) -> bool:
    """Whether ``value`` has the declared type (``int``, ``float``, ``str``, ``bool``,
    ``list[X]``, ``dict[K, V]``, ``X | Y``)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if annotation is Any:
        return True
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return _is_int(value)
    if annotation is float:
        return _is_real(value)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and (
            not args or all(_matches(v, args[0]) for v in value))
    if origin is dict:
        return isinstance(value, Mapping) and (
            not args or all(_matches(k, args[0]) and _matches(v, args[1])
                            for k, v in value.items()))
    return isinstance(value, annotation) if isinstance(annotation, type) else True


def _coerce(value: Any, annotation: Any) -> Any:
    """A command-line string read as YAML unless the parameter is plain text; an integer
    given for a float becomes a float."""
    if isinstance(value, str) and annotation is not str:
        value = yaml.safe_load(value)
    if annotation is float and _is_int(value):
        value = float(value)
    return value


def python_literal(value: Any) -> str:
    """Python source of a parameter value, strings in double quotes as the notebooks write
    them."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(python_literal(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{python_literal(k)}: {python_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


RESERVED = {"results_dir": "where tables, figures and metrics.json go",
            "store_dir": "trained models; \"\" is the project's results/store"}


@dataclass(frozen=True)
class ChapterSettings:
    """A chapter's parameters, each declared once (:func:`param`): name, type, default,
    constraint and help. Every chapter subclasses this, adding its own fields and, in the
    class variables ``RELATIONS`` and ``UNUSED``, the conditions between parameters.

    From this one declaration come the notebook's first-cell check
    (:meth:`from_notebook`), the text of its ``parameters`` cell (:meth:`parameters_cell`),
    ``fernb params``, the check of every profile and of ``-p NAME VALUE`` before a kernel
    starts (:meth:`given`), and the study's configuration (the instance itself). The fields
    declared here, every chapter's, come last in the parameters cell.
    """

    seed: int = param(0, Range(0, 2**31 - 1, integer=True), "seeds data, splits and training")
    precision: str = param("auto", Choice("auto", "fp32", "bf16"),
                           "\"auto\": bf16 on a CPU with native bf16, mixed on CUDA, else fp32")
    device: str = param("auto", Device(), "\"auto\": CUDA when available, else CPU")

    RELATIONS: ClassVar[Sequence[Relation]] = ()
    UNUSED: ClassVar[Sequence[Unused]] = ()

    @classmethod
    def declared(cls) -> dict[str, Declared]:
        """Every parameter in the order of the notebook's cell: the chapter's own, then
        the ones every chapter has."""
        hints = get_type_hints(cls)
        common = {f.name for f in fields(ChapterSettings)}
        ordered = [f for f in fields(cls) if f.name not in common] + \
                  [f for f in fields(cls) if f.name in common]
        return {f.name: Declared(f.name, f.default_factory() if f.default is MISSING
                                 else f.default, hints[f.name], f.metadata.get("check"),
                                 f.metadata.get("help", "")) for f in ordered}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {name: d.default for name, d in cls.declared().items()}

    @classmethod
    def problems(cls, values: Mapping[str, Any], given: Collection[str] | None = None, *,
                 folders: bool = True) -> list[str]:
        """Everything wrong with ``values`` (types, constraints, relations); ``given`` names
        the parameters the user set explicitly, so that setting an unused one is caught;
        ``folders=False`` skips the conditions on real datasets' folders."""
        declared = cls.declared()
        found, bad = [], set()
        for name, d in declared.items():
            if name not in values:
                continue
            value = values[name]
            problem = None if _matches(value, d.annotation) else f"of type {d.type_name}"
            if problem is None and d.check is not None:
                problem = d.check.problem(value)
            if problem is not None:
                found.append(f"{name} = {value!r}: must be {problem}")
                bad.add(name)
        for rule in cls.RELATIONS:
            if any(n in bad or n not in values for n in rule.names) or \
                    (rule.folders and not folders):
                continue
            if not rule.holds(values):
                found.append(rule.message(values))
        for rule in cls.UNUSED:
            names = [n for n in rule.names if n in (given or ())]
            if names and not any(n in bad for n in rule.names) and rule.applies(values):
                found.append(f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} not "
                             f"used: {rule.reason(values)}; remove "
                             f"{' '.join(f'-p {n} ...' for n in names)}")
        return found

    @classmethod
    def check(cls, values: Mapping[str, Any], given: Collection[str] | None = None,
              chapter: str = "", *, folders: bool = True) -> None:
        """Raise :class:`ParameterError` listing every problem, or return quietly."""
        found = cls.problems(values, given, folders=folders)
        if found:
            where = f" for {chapter}" if chapter else ""
            raise ParameterError(f"invalid parameter value(s){where}:\n  - "
                                 + "\n  - ".join(found))

    @classmethod
    def given(cls, values: Mapping[str, Any], *, source: str = "") -> dict[str, Any]:
        """Names and types of parameters set on the command line or in a profile
        (``source`` names it), strings read as YAML where the parameter is not text;
        returns them coerced. Unknown names fail with the list of valid ones."""
        declared = cls.declared()
        unknown = [k for k in values if k not in declared]
        if unknown:
            where = f" in {source}" if source else ""
            listing = "\n".join(f"  {d.name} = {python_literal(d.default)}"
                                 + (f"  # {d.help}" if d.help else "")
                                 for d in declared.values())
            raise ParameterError(f"unknown parameter(s) {unknown}{where}. Valid parameters "
                                 f"and their defaults:\n{listing}")
        return {k: _coerce(v, declared[k].annotation) for k, v in values.items()}

    @classmethod
    def from_values(cls, values: Mapping[str, Any], given: Collection[str] | None = None,
                    chapter: str = "") -> ChapterSettings:
        """The settings of ``values`` (defaults for the rest), checked."""
        merged = {**cls.defaults(), **values}
        cls.check(merged, given, chapter)
        return cls(**merged)

    @classmethod
    def from_notebook(cls, namespace: Mapping[str, Any]) -> ChapterSettings:
        """The notebook's first-cell check of the parameters as the kernel holds them
        (``globals()``): the same rules as the command line, for a reader who edits the
        ``parameters`` cell and presses Run All."""
        missing = [n for n in cls.declared() if n not in namespace]
        if missing:
            raise ParameterError(f"the parameters cell does not define {missing}: run "
                                 f"`fernb params NOTEBOOK --write-cell` to rewrite it")
        return cls.from_values({n: namespace[n] for n in cls.declared()})

    @classmethod
    def parameters_cell(cls, results_dir: str) -> str:
        """The source of the notebook's ``parameters`` cell: every parameter with its
        default and its help as a comment, then the runner's own ``results_dir`` and
        ``store_dir``."""
        rows = [(f"{d.name} = {python_literal(d.default)}", d.help) for d in cls.declared().values()]
        rows += [(f"results_dir = {python_literal(results_dir)}", RESERVED["results_dir"]),
                 ('store_dir = ""', RESERVED["store_dir"])]
        width = max(len(code) for code, _ in rows if len(code) <= 30) + 2
        lines = []
        for code, note in rows:
            line = f"{code.ljust(max(width, len(code) + 2))}# {note}" if note else code
            lines += [f"# {note}", code] if len(line) > 100 else [line]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """The values by name, in the declared order."""
        return {name: getattr(self, name) for name in self.declared()}

    def changed(self) -> dict[str, Any]:
        """The values that differ from the declared defaults."""
        defaults = self.defaults()
        return {k: v for k, v in self.as_dict().items() if defaults[k] != v}


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
        Relation((dataset, root), needs_root,
                 lambda v: f"{dataset} = {v[dataset]!r} needs its folder: add -p {root} "
                           f"/path/to/it (see the book page 'Running on the real datasets')",
                 folders=True),
        relation((dataset, root), root_unused,
                 lambda v: f"{root} = {v[root]!r} is not used by {dataset} = {v[dataset]!r}, "
                           f"which generates its faces; to train on images in a folder use "
                           f"-p {dataset} folder -p {root} {v[root]}"),
    ]
    unused = [Unused(tuple(synthetic_only), lambda v: v[dataset] not in SYNTHETIC,
                     lambda v: f"{dataset} = {v[dataset]!r} is read from disk, not generated")]
    return relations, unused
