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
from collections.abc import Mapping, Sequence
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
MISSING = "-"


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

    def table(self, df: pd.DataFrame, name: str, caption: str | None = None) -> pd.DataFrame:
        """Write ``tables/<name>.csv`` and ``tables/<name>.md``; return ``df`` for display.

        The index is written only when it carries information (not a default 0..n-1 range).
        """
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"table() needs a pandas DataFrame, got {type(df).__name__}; "
                            "convert a Series with .to_frame()")
        _check_name(name)
        keep_index = not (isinstance(df.index, pd.RangeIndex) and df.index.start == 0
                          and df.index.step == 1 and df.index.name is None)
        atomic_write_text(self.tables_dir / f"{name}.csv", df.to_csv(index=keep_index))
        markdown = df.to_markdown(index=keep_index)
        if caption:
            markdown = f"**{caption}**\n\n{markdown}"
        atomic_write_text(self.tables_dir / f"{name}.md", markdown + "\n")
        return df

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

    def __repr__(self) -> str:
        return f"Report({str(self.results_dir)!r})"


@cache
def _paper_results() -> dict[str, dict[str, dict[str, Any]]]:
    text = resources.files("fernb").joinpath("paper_results.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def paper_results(chapter: str) -> dict[str, dict[str, Any]]:
    """The numbers a chapter's paper reports, from ``fernb/paper_results.yaml``."""
    data = _paper_results()
    if chapter not in data:
        raise ValueError(f"unknown chapter {chapter!r}; paper_results.yaml has {sorted(data)}")
    return data[chapter]


COMPARISONS = ("exact", "direction", "significance", "value")
VERDICTS = ("exact", "same direction", "close", "differs", "needs real data", "not measured")


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

    * ``exact`` (architecture facts: parameter counts, worked examples): "exact" when equal
      within ``tolerance`` (default 0), else "differs".
    * ``significance`` (p-values): "same direction" when both are below ``alpha`` (0.05) or
      both are not, else "differs".
    * ``direction`` (a ratio or difference with a neutral ``threshold``): "same direction"
      when both lie on the same side of it, else "differs".
    * ``value`` (accuracies and errors on a real dataset): "needs real data" for a run on
      synthetic data; on the paper's dataset "close" within ``tolerance`` (default: the
      paper's std, else 2 points), else "differs".
    """
    if isinstance(book, str) and book == MISSING or book is None:
        return "not measured"
    kind = entry.get("compare", "value")
    if kind not in COMPARISONS:
        raise ValueError(f"compare must be one of {COMPARISONS}, got {kind!r}")
    if kind == "value" and not real_data:
        return "needs real data"
    pairs = _paired(entry["value"], book)
    if pairs is None:
        equal = _format(entry["value"]) == _format(book)
        return "exact" if kind == "exact" and equal else "differs"
    if kind == "exact":
        tol = entry.get("tolerance", 0)
        return "exact" if all(abs(p - b) <= tol for p, b in pairs) else "differs"
    if kind == "significance":
        alpha = entry.get("alpha", 0.05)
        return "same direction" if all((p < alpha) == (b < alpha) for p, b in pairs) \
            else "differs"
    if kind == "direction":
        t = entry["threshold"]
        return "same direction" if all((p > t) == (b > t) for p, b in pairs) else "differs"
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
        rows.append({"where": e["source"], "quantity": e["quantity"], "paper": paper,
                     "this run": MISSING if book is None else _format(book),
                     "verdict": verdict(e, MISSING if book is None else book,
                                        real_data=real_data),
                     "note": note})
    table = pd.DataFrame(rows)
    order = {w: i for i, w in enumerate(dict.fromkeys(table["where"]))}
    table = table.sort_values("where", key=lambda c: c.map(order), kind="stable")
    return table.set_index(["where", "quantity"])


@dataclass(frozen=True)
class Claim:
    """One claim of a paper checked on this run: ``holds`` is None when the run cannot test
    it (e.g. a strategy left out of the grid); ``evidence`` gives the numbers."""

    claim: str
    source: str
    holds: bool | None
    evidence: str = ""


def claims_table(claims: Sequence[Claim]) -> pd.DataFrame:
    """The claims of a paper, whether each holds in this run ("yes", "no" or "not tested")
    and the numbers that decide it."""
    answer = {True: "yes", False: "no", None: "not tested"}
    return pd.DataFrame([{"claim": c.claim, "where": c.source,
                          "holds in this run": answer[None if c.holds is None else bool(c.holds)],
                          "evidence": c.evidence} for c in claims]).set_index("claim")


def glue(name: str, value: Any, fmt: str | None = None) -> Any:
    """Make ``value`` citable in the chapter's Markdown as ``{glue:text}`name``` (myst-nb);
    ``fmt`` (e.g. ``".1f"``) formats a number into text first. Returns the glued value."""
    from myst_nb import glue as _glue
    shown = format(value, fmt) if fmt is not None else value
    _glue(name, shown, display=False)
    return shown
