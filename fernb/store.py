"""The run store: every trained model, and what was computed from it, kept under a key
derived from the settings it depends on.

A study describes its work as :class:`Job` objects: what to train (``kind`` and ``spec``,
plain data holding everything the result depends on: the data, the split, the model, the
training configuration), from what (``needs``, other jobs whose stored results it reads) and
the module-level function that does it. A job's key is a digest of its kind, its spec, its
version and the keys of the jobs it needs (:mod:`fernb.specs`), so

- a rerun with changed parameters trains only the jobs whose spec changed and reuses the
  rest (a chapter's level grid does not enter the key of its ESR-9, so changing the grid
  never retrains ESR-9);
- an interrupted job resumes from its checkpoint folder (:meth:`Entry.checkpoint`), and a
  job made with other settings has another key, so it is never half-loaded;
- an entry is complete only once ``entry.json`` is written, last; two processes that need
  the same job take turns on its lock, and the second loads what the first stored.

Jobs depend on each other only through the store, so :meth:`Store.pending` hands a
scheduler (Dask, Ray, a batch queue) independent units to spread over machines that share the
store folder; :meth:`Store.run` runs them in order here. Entries are kept until
:meth:`Store.clean` (``fernb clean``) removes those unused for a while.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock
import numpy as np
import pandas as pd
import torch

import fernb
from fernb.io import atomic_savez, atomic_torch_save, atomic_write_json, atomic_write_text, \
    read_json
from fernb.specs import describe, digest

STORE_ENV = "FERNB_STORE"
RECORD = "entry.json"


def default_root() -> Path:
    """``$FERNB_STORE`` if set, else ``results/store`` in the project."""
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV])
    from fernb.chapters import project_root
    return project_root() / "results" / "store"


@dataclass(frozen=True)
class Job:
    """One unit of stored work.

    Attributes:
        kind: the family of work, e.g. ``"esr.trial"``; the entry's folder.
        spec: everything the result depends on, as plain data or dataclasses
            (:func:`fernb.specs.describe` must describe it).
        run: a module-level function ``run(job, entry, store)`` that does the work and
            writes its results into ``entry``, reading what it ``needs`` from ``store``;
            what it returns (a mapping or None) is kept as the record's ``summary``.
        needs: jobs whose stored results this one reads.
        label: what a reader calls it, for progress lines (not part of the key).
        version: raise it when the work itself changes, so older entries are not reused.
        runtime: where and how it runs without changing what it computes (e.g. the
            ``device``); not part of the key.
    """

    kind: str
    spec: Mapping[str, Any]
    run: Callable[[Job, Entry, Store], Mapping[str, Any] | None] = field(compare=False)
    needs: tuple[Job, ...] = ()
    label: str = ""
    version: int = 1
    runtime: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        """``<kind>/<digest>``: the entry's place in the store."""
        return f"{self.kind}/{digest(self.identity())}"

    def identity(self) -> dict[str, Any]:
        """What the key is the digest of."""
        return {"kind": self.kind, "version": self.version, "spec": describe(self.spec),
                "needs": [n.key for n in self.needs], "fernb": fernb.__version__}

    @property
    def name(self) -> str:
        return self.label or self.kind


class Entry:
    """A job's folder in the store: its artifacts, its checkpoints and its record.

    Artifacts are written atomically by name (arrays, JSON, tables, state dicts);
    :meth:`commit` writes ``entry.json`` last, which makes the entry complete.
    """

    def __init__(self, root: Path, job: Job) -> None:
        self.job = job
        self.path = Path(root) / job.key

    @property
    def complete(self) -> bool:
        return (self.path / RECORD).exists()

    @property
    def record(self) -> dict[str, Any]:
        """The ``entry.json`` of a complete entry: key, kind, label, spec, when it was made,
        how long it took, the fernb version and the job's summary values."""
        record = read_json(self.path / RECORD)
        if record is None:
            raise FileNotFoundError(f"{self.path} holds no finished result of "
                                    f"{self.job.name}: run the study first")
        return record

    @property
    def checkpoint(self) -> Path:
        """A folder for the job's training checkpoints (resumed by a rerun)."""
        folder = self.path / "checkpoint"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def file(self, name: str) -> Path:
        path = self.path / name
        if not path.exists():
            raise FileNotFoundError(f"{self.job.name} has no stored {name!r} at {path}; the "
                                    f"entry is incomplete or corrupt: delete {self.path} and "
                                    f"rerun")
        return path

    def save_arrays(self, name: str, **arrays: Any) -> None:
        atomic_savez(self.path / f"{name}.npz", **arrays)

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        path = self.file(f"{name}.npz")
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError) as err:
            raise ValueError(f"{path} is corrupt ({err}); delete {self.path} and rerun") \
                from None

    def save_json(self, name: str, value: Any) -> None:
        atomic_write_json(self.path / f"{name}.json", value)

    def json(self, name: str) -> Any:
        path = self.file(f"{name}.json")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is corrupt ({err}); delete {self.path} and rerun") \
                from None

    def save_frame(self, name: str, frame: pd.DataFrame) -> None:
        atomic_write_text(self.path / f"{name}.csv", frame.to_csv(index=False))

    def frame(self, name: str) -> pd.DataFrame:
        return pd.read_csv(self.file(f"{name}.csv"))

    def save_state(self, name: str, state: Mapping[str, torch.Tensor]) -> None:
        atomic_torch_save({k: v.detach().cpu() for k, v in state.items()},
                          self.path / f"{name}.pt")

    def state(self, name: str) -> dict[str, torch.Tensor]:
        path = self.file(f"{name}.pt")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for a damaged file
            raise ValueError(f"{path} is corrupt ({type(err).__name__}); delete {self.path} "
                             f"and rerun") from None

    def commit(self, seconds: float, **summary: Any) -> dict[str, Any]:
        """Write ``entry.json``: the entry is complete."""
        record = {"key": self.job.key, "kind": self.job.kind, "label": self.job.label,
                  **self.job.identity(), "created": _now(), "seconds": round(seconds, 2),
                  "summary": summary}
        atomic_write_json(self.path / RECORD, record)
        return record

    def used(self) -> None:
        """Mark the entry as used now (``fernb clean`` keeps recently used entries)."""
        os.utime(self.path / RECORD)

    def __repr__(self) -> str:
        return f"Entry({self.job.key!r}, complete={self.complete})"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Outcome:
    """What :meth:`Store.run` did: the labels of the jobs it reused and of those it ran."""

    reused: list[str] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [f"reused {len(self.reused)} stored result(s)",
                 f"trained {len(self.trained)}"]
        text = ", ".join(parts)
        if self.trained:
            text += ": " + ", ".join(self.trained)
        return text


def _ordered(jobs: Sequence[Job]) -> list[Job]:
    """Every job and what it needs, each once, needs first."""
    seen: dict[str, Job] = {}

    def visit(job: Job) -> None:
        if job.key in seen:
            return
        for need in job.needs:
            visit(need)
        seen[job.key] = job

    for job in jobs:
        visit(job)
    return list(seen.values())


class Store:
    """The stored jobs under ``root`` (default :func:`default_root`)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root else default_root()

    def entry(self, job: Job) -> Entry:
        return Entry(self.root, job)

    def get(self, job: Job) -> Entry:
        """The complete entry of ``job`` (an error says to run it first)."""
        entry = self.entry(job)
        entry.record  # noqa: B018 - raises when the job never finished
        return entry

    def pending(self, jobs: Sequence[Job]) -> list[Job]:
        """The jobs (and their needs) not yet stored, needs first: independent units for a
        scheduler, each run by :func:`execute` with this store's root."""
        return [job for job in _ordered(jobs) if not self.entry(job).complete]

    def run(self, jobs: Sequence[Job], *, progress: bool = False) -> Outcome:
        """Run every job not yet stored, in order (needs first), and print one line of what
        was reused and what was trained (``progress``: a line per job as well)."""
        log = print if progress else None
        outcome = Outcome()
        for job in _ordered(jobs):
            entry = self.entry(job)
            if entry.complete:
                entry.used()
                outcome.reused.append(job.name)
                continue
            if execute(job, self.root, log=log):
                outcome.trained.append(job.name)
            else:
                outcome.reused.append(job.name)
        print(f"Stored runs: {outcome}.")
        return outcome

    def entries(self) -> list[Path]:
        """The folders of complete entries."""
        return sorted(p.parent for p in self.root.glob(f"*/*/{RECORD}"))

    def size(self) -> tuple[int, int]:
        """(number of entries, bytes on disk) of the store."""
        entries = self.entries()
        return len(entries), sum(_bytes(p) for p in entries)

    def clean(self, *, older_than_days: float | None = 30.0, dry_run: bool = False
              ) -> tuple[list[Path], int]:
        """Remove entries (and unfinished ones) not used for ``older_than_days`` days (None:
        all). Returns the removed folders and the bytes they held."""
        cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
        removed, freed = [], 0
        for folder in sorted(p for p in self.root.glob("*/*") if p.is_dir()):
            record = folder / RECORD
            last = record.stat().st_mtime if record.exists() else _newest(folder)
            if cutoff is not None and last >= cutoff:
                continue
            lock = filelock.FileLock(_lock_path(folder), blocking=False)
            try:
                lock.acquire()
            except filelock.Timeout:
                continue  # in use by a running job
            try:
                freed += _bytes(folder)
                removed.append(folder)
                if not dry_run:
                    shutil.rmtree(folder)
            finally:
                lock.release()
                if not dry_run:
                    Path(lock.lock_file).unlink(missing_ok=True)
        return removed, freed


def _lock_path(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.lock"


def execute(job: Job, root: str | Path, *, log: Callable[[str], None] | None = None) -> bool:
    """Run one job into the store at ``root`` under its lock; False if another process
    stored it meanwhile. The unit a scheduler hands to a worker; ``log`` gets a line when it
    starts (and when it waits for another process)."""
    log = log or (lambda line: None)
    entry = Entry(Path(root), job)
    entry.path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(_lock_path(entry.path))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        print(f"Waiting: another process is running {job.name} ({entry.path}).")
        lock.acquire()
    try:
        if entry.complete:
            return False
        entry.path.mkdir(parents=True, exist_ok=True)
        log(f"Training {job.name}.")
        start = time.perf_counter()
        summary = job.run(job, entry, Store(root)) or {}
        entry.commit(time.perf_counter() - start, **summary)
        return True
    finally:
        lock.release()


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _newest(folder: Path) -> float:
    times = [p.stat().st_mtime for p in folder.rglob("*")]
    return max(times, default=folder.stat().st_mtime)
