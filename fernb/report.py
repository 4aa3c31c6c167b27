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
from collections.abc import Mapping
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
    """numpy/torch values -> plain Python, recursively, so metrics.json stays readable."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def environment() -> dict[str, Any]:
    """Versions and hardware of this run (Python, torch, torchvision, CUDA, numpy, fernb)."""
    cuda = torch.cuda.is_available()
    return {
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
                  "params": _jsonable(self.params), "environment": environment()}
        atomic_write_json(self.metrics_path, merged)
        return merged

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


def _format(value: Any) -> Any:
    if isinstance(value, list):
        return "[" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) + "]"
    return value


def paper_vs_book(chapter: str, measured: Mapping[str, Any]) -> pd.DataFrame:
    """One row per quantity the paper reports, with the book's value where measured.

    ``measured`` maps keys of the chapter in ``paper_results.yaml`` to values in the paper's
    units (accuracies in %). Columns: quantity, paper (``mean ± std`` where the paper gives
    one), source, dataset, book, difference (book - paper, numbers only) and note; what was
    not measured shows "-".
    """
    entries = paper_results(chapter)
    unknown = sorted(set(measured) - set(entries))
    if unknown:
        raise ValueError(f"unknown quantities {unknown} for chapter {chapter!r}; "
                         f"known: {sorted(entries)}")
    rows = []
    for key, e in entries.items():
        value, book = e["value"], measured.get(key, MISSING)
        paper = f"{value} ± {e['std']}" if "std" in e else _format(value)
        numeric = all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                      and math.isfinite(v) for v in (value, book))
        rows.append({"key": key, "quantity": e["quantity"], "paper": paper,
                     "source": e["source"], "dataset": e["dataset"], "book": _format(book),
                     "difference": round(float(book) - float(value), 6) if numeric else MISSING,
                     "note": e.get("note", "")})
    return pd.DataFrame(rows).set_index("key")
