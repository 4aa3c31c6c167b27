"""A chapter's results directory, and "paper vs this book" tables.

A :class:`Report` owns ``results_dir`` (``results/<profile>/<chapter>/`` when run by the
runner): ``tables/<name>.csv|md``, ``figures/<name>.png``, ``metrics.json`` (always with the
run's parameters and software environment) and ``checkpoints/``. Every write is atomic.
"""
from __future__ import annotations

import datetime as _dt
import io
import math
import numbers
import platform
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torchvision
import yaml
from matplotlib.figure import Figure

import fernb
from fernb.io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MISSING = "–"  # how every table shows a value that does not exist


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"name must be a plain file stem such as 'accuracy_per_fold' (letters, "
                         f"digits, '_', '-', '.'), got {name!r}")
    return name


def _jsonable(value: Any) -> Any:
    """numpy/torch values -> plain Python, recursively, so metrics.json stays readable;
    NaN and infinities become null (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, Path):
        return str(value)
    return value


def environment(params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Versions and hardware of this run (Python, torch, torchvision, CUDA, numpy, fernb) and
    the precision its ``device`` and ``precision`` parameters resolve to here."""
    from fernb.device import resolve_device, resolve_precision
    params = params or {}
    cuda = torch.cuda.is_available()
    device = resolve_device(params.get("device", "auto"))
    return {
        "precision": resolve_precision(params.get("precision", "auto"), device).name,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "fernb": fernb.__version__,
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if cuda else (platform.processor() or "cpu"),
        "platform": platform.platform(),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


@dataclass
class Shown:
    """A figure and a table a notebook shows together (the figure once: it is closed
    after being shown, so the inline backend does not show it again)."""

    figure: Figure
    table: pd.DataFrame

    def _ipython_display_(self) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import display
        display(self.figure)
        plt.close(self.figure)
        display(self.table)


class Report:
    """Writes a chapter's tables, figures and metrics under ``results_dir``.

    Args:
        results_dir: folder for this run; ``tables/``, ``figures/`` and ``checkpoints/`` are
            created inside it.
        params: the notebook's parameters, stored in ``metrics.json``.
    """

    def __init__(self, results_dir: str | Path, params: Mapping[str, Any] | None = None) -> None:
        self.results_dir = Path(results_dir)
        self.params = dict(params or {})
        self.tables_dir = self.results_dir / "tables"
        self.figures_dir = self.results_dir / "figures"
        for folder in (self.tables_dir, self.figures_dir):
            folder.mkdir(parents=True, exist_ok=True)

    @property
    def checkpoint_dir(self) -> Path:
        folder = self.results_dir / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @property
    def metrics_path(self) -> Path:
        return self.results_dir / "metrics.json"

    def table(self, df: pd.DataFrame, name: str, caption: str | None = None, *,
              formats: Mapping[str, Format] | None = None) -> pd.DataFrame:
        """Write ``tables/<name>.csv`` (the numbers, full precision) and ``tables/<name>.md``
        (as a reader sees them); return the table formatted for display by
        :func:`format_table` (``formats``: per-column format specs or functions).

        The index is written only when it carries information (not a default 0..n-1 range).
        """
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"table() needs a pandas DataFrame, got {type(df).__name__}; "
                            "convert a Series with .to_frame()")
        _check_name(name)
        keep_index = not (isinstance(df.index, pd.RangeIndex) and df.index.start == 0
                          and df.index.step == 1 and df.index.name is None)
        atomic_write_text(self.tables_dir / f"{name}.csv", df.to_csv(index=keep_index))
        shown = format_table(df, formats)
        # The cells as formatted, not parsed back into numbers (0.500 stays 0.500).
        markdown = shown.to_markdown(index=keep_index, disable_numparse=True)
        if caption:
            markdown = f"**{caption}**\n\n{markdown}"
        atomic_write_text(self.tables_dir / f"{name}.md", markdown + "\n")
        return shown

    def figure(self, fig: Figure, name: str, dpi: int = 130) -> Figure:
        """Save ``figures/<name>.png`` (tight bounding box); return ``fig`` for display."""
        if not isinstance(fig, Figure):
            raise TypeError(f"figure() needs a matplotlib Figure, got {type(fig).__name__}; "
                            "use ax.figure for an Axes")
        _check_name(name)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
        atomic_write_bytes(self.figures_dir / f"{name}.png", buffer.getvalue())
        return fig

    def learning(self, histories: Mapping[str, Sequence[Any]], checks: Sequence[Any], *,
                 name: str = "learning", majority: float | None = None) -> Shown:
        """Did every model learn? The training curves of ``histories`` (model kind or stage ->
        its runs' histories; :func:`fernb.figures.curves_frame`) and the table of ``checks``
        (:func:`fernb.verdicts.learned` per compared model), saved as
        ``figures/<name>_curves.png`` and ``tables/<name>.csv`` and shown together."""
        from fernb.figures import curves_frame, training_curves
        from fernb.verdicts import learning_table
        fig = self.figure(training_curves(curves_frame(histories), majority=majority),
                          f"{name}_curves")
        table = self.table(learning_table(checks), name)
        return Shown(fig, table)

    def metrics(self, **values: Any) -> dict[str, Any]:
        """Merge ``values`` into ``metrics.json`` (with ``params`` and ``environment``) and
        return the whole file's content."""
        reserved = {"params", "environment"} & set(values)
        if reserved:
            raise ValueError(f"{sorted(reserved)} are written by Report itself; use other keys")
        merged = {**read_json(self.metrics_path, default={}), **_jsonable(values),
                  "params": _jsonable(self.params), "environment": environment(self.params)}
        atomic_write_json(self.metrics_path, merged)
        return merged

    def glue(self, name: str, value: Any, fmt: str | None = None) -> Any:
        """:func:`glue` ``value`` for the chapter's Markdown and record it in
        ``metrics.json`` (the unformatted value)."""
        self.metrics(**{name: value})
        return glue(name, value, fmt)

    def glue_all(self, values: Mapping[str, Any]) -> None:
        """Glue every value of a chapter's ``highlights`` (name -> text, or number shown by
        :func:`format_value`) and record them in ``metrics.json``: the notebook's prose cites
        them, and no notebook cell chooses a sentence."""
        self.metrics(**values)
        for name, value in values.items():
            _check_name(name)
            glue(name, value if isinstance(value, str) else format_value(value))

    def __repr__(self) -> str:
        return f"Report({str(self.results_dir)!r})"


@cache
def _paper_results() -> dict[str, dict[str, dict[str, Any]]]:
    text = resources.files("fernb").joinpath("paper_results.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    problems = paper_results_problems(data)
    if problems:
        raise ValueError("fernb/paper_results.yaml:\n  - " + "\n  - ".join(problems))
    return data


def paper_results_problems(data: Any) -> list[str]:
    """What is wrong with a ``paper_results.yaml`` mapping (chapter -> key -> entry): an
    unknown or missing field, an unknown ``compare`` kind, a ``direction`` without its
    ``threshold``, a value that is no number (or list of numbers) where one is compared."""
    found = []
    if not isinstance(data, dict):
        return ["the file must map chapters to their entries"]
    for chapter, entries in data.items():
        if not isinstance(entries, dict):
            found.append(f"{chapter}: must map keys to entries")
            continue
        for key, entry in entries.items():
            where = f"{chapter}.{key}"
            if not isinstance(entry, dict):
                found.append(f"{where}: must be a mapping of fields")
                continue
            unknown = sorted(set(entry) - ENTRY_FIELDS)
            missing = sorted(REQUIRED_FIELDS - set(entry))
            if unknown:
                found.append(f"{where}: unknown field(s) {unknown}; fields: "
                             f"{sorted(ENTRY_FIELDS)}")
            if missing:
                found.append(f"{where}: missing field(s) {missing}")
            kind = entry.get("compare", "value")
            if kind not in COMPARISONS:
                found.append(f"{where}: compare {kind!r} is not one of {COMPARISONS}")
            if kind == "direction" and "threshold" not in entry:
                found.append(f"{where}: compare 'direction' needs a threshold")
            values = entry.get("value")
            values = values if isinstance(values, list) else [values]
            if kind != "exact" and not all(_number(v) for v in values):
                found.append(f"{where}: value {entry.get('value')!r} is not a number")
    return found


def paper_results(chapter: str) -> dict[str, dict[str, Any]]:
    """The numbers a chapter's paper reports, from ``fernb/paper_results.yaml``."""
    data = _paper_results()
    if chapter not in data:
        raise ValueError(f"unknown chapter {chapter!r}; paper_results.yaml has {sorted(data)}")
    return data[chapter]


COMPARISONS = ("exact", "direction", "significance", "value")
ENTRY_FIELDS = {"quantity", "value", "std", "source", "dataset", "note", "compare", "tolerance",
                "threshold", "alpha"}
REQUIRED_FIELDS = {"quantity", "value", "source", "dataset"}


Format = str | Callable[[Any], str]


def format_value(value: Any, fmt: Format | None = None, *, column: str = "") -> str:
    """One table cell as a reader reads it: a missing value (None, NaN) as :data:`MISSING`;
    ``fmt`` a format spec (``".1f"``) or a function; otherwise integers with thousands
    separators, p-values (a column named ``p`` or ``p ...``) as :func:`fernb.evaluate.format_p`
    does, other numbers with 3 decimals below 1, 2 below 10 and 1 above."""
    if value is None or isinstance(value, float) and not math.isfinite(value):
        return MISSING
    if isinstance(value, (np.generic,)):
        value = value.item()
    if fmt is not None:
        return fmt(value) if callable(fmt) else format(value, fmt)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{value:,}"
    if _P_COLUMN.match(column):
        from fernb.evaluate import format_p
        return format_p(value)
    size = abs(value)
    return f"{value:.3f}" if size < 1 else f"{value:.2f}" if size < 10 else f"{value:,.1f}"


_P_COLUMN = re.compile(r"^p(\b|$)")


def format_table(df: pd.DataFrame, formats: Mapping[str, Format] | None = None
                 ) -> pd.DataFrame:
    """A numeric table as text, cell by cell (:func:`format_value`), for display: the one
    place where numbers become strings and a missing value one symbol."""
    formats = dict(formats or {})
    unknown = [c for c in formats if c not in df.columns]
    if unknown:
        raise ValueError(f"formats names columns {unknown} the table lacks; it has "
                         f"{list(df.columns)}")
    shown = pd.DataFrame(index=df.index)
    for column in df.columns:
        name = str(column[-1] if isinstance(column, tuple) else column)
        shown[column] = [format_value(v, formats.get(column), column=name) for v in df[column]]
    shown.columns = df.columns
    return shown


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and \
        math.isfinite(value)


def _format(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_format(v) for v in value)
    if isinstance(value, bool) or value is None:
        return MISSING if value is None else str(value)
    if isinstance(value, numbers.Integral):
        return f"{value:,}"
    if isinstance(value, numbers.Real):
        return MISSING if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


def _paired(value: Any, book: Any) -> list[tuple[float, float]] | None:
    """(paper, book) number pairs of two scalars or two equal-length lists, else None."""
    pv = value if isinstance(value, (list, tuple)) else [value]
    bv = book if isinstance(book, (list, tuple)) else [book]
    if len(pv) != len(bv) or not all(_number(v) for v in [*pv, *bv]):
        return None
    return list(zip(pv, bv))


def verdict(entry: Mapping[str, Any], book: Any, *, real_data: bool = False) -> str:
    """How the book's value relates to the paper's, by the entry's ``compare`` kind.

    * ``exact`` (arithmetic the paper prints: parameter counts, FLOPs, worked examples):
      "exact" when equal within ``tolerance`` (default 0), else "differs".
    * ``direction`` and ``significance`` (a comparison the paper draws: a ratio above 1, a
      significant difference or none): the verdict of the claim this run judged on
      independent units (:class:`fernb.verdicts.Claim`: holds, does not hold, not
      testable); a bare number has no test behind it, so it is "not testable".
    * ``value`` (accuracies and errors on a real dataset): "needs real data" for a run on
      synthetic data; on the paper's dataset "close" within ``tolerance`` (default: the
      paper's std, else 2 points), else "differs".
    """
    from fernb.verdicts import UNTESTABLE, Claim
    if book is None or isinstance(book, str) and book == MISSING:
        return "not measured"
    kind = entry.get("compare", "value")
    if kind not in COMPARISONS:
        raise ValueError(f"compare must be one of {COMPARISONS}, got {kind!r}")
    if kind in ("direction", "significance"):
        return book.verdict if isinstance(book, Claim) else UNTESTABLE
    if isinstance(book, Claim):
        raise TypeError(f"{entry['quantity']!r} is compared as {kind!r}: give its value, not "
                        f"a judged claim")
    if kind == "value" and not real_data:
        return "needs real data"
    pairs = _paired(entry["value"], book)
    if pairs is None:
        equal = _format(entry["value"]) == _format(book)
        return "exact" if kind == "exact" and equal else "differs"
    if kind == "exact":
        tol = entry.get("tolerance", 0)
        return "exact" if all(abs(p - b) <= tol for p, b in pairs) else "differs"
    tol = entry.get("tolerance", entry.get("std", 2.0))
    return "close" if all(abs(p - b) <= tol for p, b in pairs) else "differs"


def paper_vs_book(chapter: str, measured: Mapping[str, Any], *,
                  real_data: bool = False) -> pd.DataFrame:
    """The reader's *paper vs this book* table: one row per number the paper reports,
    grouped by the paper's table or figure.

    Args:
        chapter: a chapter of ``paper_results.yaml`` (e.g. ``"esr"``).
        measured: this run's values by key, in the paper's units (accuracies in %).
        real_data: the run used the paper's dataset, so accuracies are comparable in value.

    Returns:
        A DataFrame indexed by (``where``, ``quantity``) with columns ``paper`` (``mean ±
        std`` where the paper gives one), ``this run``, ``verdict`` (see :func:`verdict`) and
        ``note`` (the paper's dataset, and where its own numbers disagree).
    """
    entries = paper_results(chapter)
    unknown = sorted(set(measured) - set(entries))
    if unknown:
        raise ValueError(f"unknown quantities {unknown} for chapter {chapter!r}; "
                         f"known: {sorted(entries)}")
    rows = []
    for key, e in entries.items():
        book = measured.get(key)
        paper = _format(e["value"]) + (f" ± {_format(e['std'])}" if "std" in e else "")
        note = e["dataset"] + (f"; {e['note']}" if e.get("note") else "")
        shown = MISSING if book is None else getattr(book, "reason", None) or _format(book)
        rows.append({"where": e["source"], "quantity": e["quantity"], "paper": paper,
                     "this run": shown,
                     "verdict": verdict(e, MISSING if book is None else book,
                                        real_data=real_data),
                     "note": note})
    table = pd.DataFrame(rows)
    order = {w: i for i, w in enumerate(dict.fromkeys(table["where"]))}
    table = table.sort_values("where", key=lambda c: c.map(order), kind="stable")
    return table.set_index(["where", "quantity"])


def glue(name: str, value: Any, fmt: str | None = None) -> Any:
    """Make ``value`` citable in the chapter's Markdown as ``{glue:text}`name``` (myst-nb);
    ``fmt`` (e.g. ``".1f"``) formats a number into text first. Returns the glued value."""
    from myst_nb import glue as _glue
    shown = format(value, fmt) if fmt is not None else value
    _glue(name, shown, display=False)
    return shown
