"""Profiles, parameter validation, papermill execution and the book build.

Data flow: a profile (``book/profiles/<name>.yaml``, notebook -> parameters) plus the user's
``-p NAME VALUE`` overrides are checked against the notebook's ``parameters`` cell (names and
types) and the chapter's declared value constraints (:mod:`fernb.params`), and a real
dataset's folder against its layout, all before the kernel starts. Then, holding a lock on the
results folder, papermill executes ``notebooks/<name>.ipynb`` (cwd ``notebooks/``, kernel
``python3``); the notebook writes its tables, figures and ``metrics.json`` to
``results/<profile>/<name>/``, and the executed copy, with a provenance line under its title
and the parameter cells tagged ``remove-input``, goes next to them. Only ``fernb book``
(:func:`run_book`) publishes executed copies to ``book/_generated/`` for the HTML book.
``run.json`` records the parameters and ends as ``finished``, ``failed`` or ``interrupted``.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import filelock
import nbformat
import papermill
import yaml

import fernb
from fernb.io import atomic_write_json, atomic_write_text, read_json
from fernb.chapters import (notebook_names, prepare, project_root, resolve_notebook,
                            settings_of, validate_profile)
from fernb.course.release import publish_book_pages
from fernb.errors import NotebookError, ParameterError, ResultsBusy, RunInterrupted

REMOVE_INPUT_TAGS = ("parameters", "injected-parameters")
ALLOW_STDERR_TAG = "allow-stderr"
# The kernel's own log: errors only (ipykernel 7 warns about its local TCP sockets each run).
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]
PROVENANCE_TAG = "provenance"

__all__ = ["NotebookError", "ParameterError", "ResultsBusy", "RunInterrupted", "run_book",
           "run_notebook"]


def _digest(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _jsonable(params: dict[str, Any]) -> Any:
    return json.loads(json.dumps(params, default=str))


OUTPUTS = ("metrics.json", "tables", "figures", "failed.ipynb")


def _clear_outputs(results_dir: Path, stem: str) -> None:
    """Remove a previous run's tables, figures, metrics and notebooks (and nothing else the
    folder holds): the folder then shows exactly this run. Trained models are not here but in
    the run store, so rebuilding the outputs of earlier settings takes one rerun."""
    for name in (*OUTPUTS, f"{stem}.ipynb"):
        target = results_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def _prepare_results_dir(results_dir: Path, params: dict[str, Any], profile: str,
                         stem: str) -> dict[str, Any]:
    """Clear the previous run's outputs (saying so when its parameters differed) and return
    the new ``run.json`` record."""
    stored = read_json(results_dir / "run.json")
    if stored is not None and stored.get("parameters") != _jsonable(params):
        print(f"[fernb] parameters changed: {results_dir} now shows this run; models trained "
              f"before stay in the run store and are reused where their settings match",
              file=sys.stderr)
    _clear_outputs(results_dir, stem)
    results_dir.mkdir(parents=True, exist_ok=True)
    record = {"notebook": stem, "profile": profile, "parameters": _jsonable(params),
              "digest": _digest(params), "status": "running", "pid": os.getpid(),
              "host": socket.gethostname(), "started": _now()}
    atomic_write_json(results_dir / "run.json", record)
    return record


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@contextmanager
def hold(folder: Path, what: str) -> Iterator[None]:
    """Hold the lock of ``folder`` (a results folder, or the book) for this process; a second
    run stops at once with a message naming the holder."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(folder.parent / f".{folder.name}.lock", blocking=False)
    holder = folder.parent / f".{folder.name}.lock.json"
    try:
        lock.acquire()
    except filelock.Timeout:
        info = read_json(holder, default={}) or {}
        who = (f"process {info.get('pid', '?')} on {info.get('host', '?')} "
               f"(`{info.get('command', '?')}`, started {info.get('started', '?')})")
        raise ResultsBusy(f"{what} {folder} is in use by {who}; wait for that run to finish, "
                          f"or choose another folder with --output-dir") from None
    try:
        atomic_write_json(holder, {"pid": os.getpid(), "host": socket.gethostname(),
                                   "command": " ".join(["fernb", *sys.argv[1:]])
                                   if Path(sys.argv[0]).name == "fernb" else sys.argv[0],
                                   "started": _now()})
        yield
    finally:
        holder.unlink(missing_ok=True)
        lock.release()


def _failure_message(nb: nbformat.NotebookNode, name: str) -> str:
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return (f"notebook {name} failed in cell {index}:\n"
                        f"----- cell source -----\n{cell.source}\n"
                        f"----- error -----\n{out.ename}: {out.evalue}")
    return f"notebook {name} failed"


def _tag_parameter_cells(nb: nbformat.NotebookNode) -> None:
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if any(t in tags for t in REMOVE_INPUT_TAGS) and "remove-input" not in tags:
            tags.append("remove-input")


def stderr_outputs(nb: nbformat.NotebookNode) -> list[str]:
    """What executed cells wrote to stderr (warnings), one entry per cell, except in cells
    tagged ``allow-stderr``."""
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or ALLOW_STDERR_TAG in cell.metadata.get("tags", []):
            continue
        text = "".join(o.get("text", "") for o in cell.get("outputs", [])
                       if o.get("output_type") == "stream" and o.get("name") == "stderr")
        if text.strip():
            first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
            found.append(f"cell {index} ({first[:60]!r}...) wrote to stderr:\n{text.strip()}")
    return found


def _device_name(device: str) -> str:
    import torch
    if device in ("auto", "cuda") or device.startswith("cuda"):
        if torch.cuda.is_available():
            index = int(device.split(":")[1]) if ":" in device else 0
            return f"CUDA ({torch.cuda.get_device_name(index)})"
    if device == "mps":
        return "MPS"
    return f"CPU ({platform.machine() or 'unknown'}, {os.cpu_count()} cores)"


def provenance(profile: str, changed: dict[str, Any], device: str,
               precision: str = "auto") -> str:
    """The line under a rendered chapter's title: profile, parameters that differ from the
    notebook's defaults, device, precision, versions and date."""
    import torch
    from fernb.device import resolve_device, resolve_precision
    settings = (", ".join(f"`{k}={v!r}`" for k, v in changed.items()) if changed
                else "none (the notebook's defaults)")
    computed = resolve_precision(precision, resolve_device(device)).name
    return (f"*This page was generated with the **{profile}** profile on "
            f"{_dt.date.today().isoformat()}: device {_device_name(device)}, precision "
            f"{computed}; fernb {fernb.__version__}, torch {torch.__version__}. Parameters "
            f"changed from the notebook's defaults: {settings}.*")


def _insert_provenance(nb: nbformat.NotebookNode, line: str) -> None:
    """Put the provenance line right under the chapter's title: the first Markdown cell is
    split after its ``# Title`` line."""
    cell = nbformat.v4.new_markdown_cell(line)
    cell.metadata["tags"] = [PROVENANCE_TAG]
    first = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"), None)
    if first is None:
        nb.cells.insert(0, cell)
        return
    title, _, rest = nb.cells[first].source.partition("\n")
    nb.cells[first].source = title
    nb.cells.insert(first + 1, cell)
    if rest.strip():
        nb.cells.insert(first + 2, nbformat.v4.new_markdown_cell(rest.strip("\n")))


@dataclass(frozen=True)
class RunResult:
    notebook: str
    output: Path
    results_dir: Path
    parameters: dict[str, Any]
    seconds: float
    warnings: tuple[str, ...] = ()


def run_notebook(name: str, *, profile: str = "cpu", overrides: dict[str, Any] | None = None,
                 output_dir: Path | None = None, notebook_dir: Path | None = None,
                 timeout: int = 3600, root: Path | None = None, progress: bool = True,
                 strict: bool = False, store: Path | None = None) -> RunResult:
    """Check, execute and post-process one notebook.

    Args:
        name: notebook name, e.g. ``"01_esr"``.
        profile: ``book/profiles/<profile>.yaml`` to take parameters from.
        overrides: user parameters that win over the profile's (``-p NAME VALUE``).
        output_dir: results folder; default ``results/<profile>/<name>``.
        notebook_dir: where the executed notebook goes; default the results folder
            (``fernb book`` passes ``book/_generated``).
        timeout: per-cell timeout in seconds.
        strict: fail when a cell writes to stderr (a warning), as the book build does;
            otherwise such output is returned in ``RunResult.warnings``.
        store: the run store's folder (:mod:`fernb.store`); default ``$FERNB_STORE`` or
            ``results/store``.

    Raises:
        ParameterError: a bad name, type or value, or a dataset folder with the wrong
            layout, before the kernel starts.
        ResultsBusy: another run holds the results folder.
        NotebookError: a cell failed (its source and error are in the message).
        RunInterrupted: Ctrl-C; finished work is stored and a rerun resumes.
    """
    root = root or project_root()
    path, params, effective = prepare(name, profile=profile, overrides=overrides, root=root)
    stem = path.stem
    results_dir = Path(output_dir or root / "results" / profile / stem).resolve()
    with hold(results_dir, "the results folder"):
        record = _prepare_results_dir(results_dir, effective, profile, stem)
        status, error = "failed", None
        try:
            reserved = {"results_dir": str(results_dir),
                        "store_dir": str(Path(store).resolve()) if store else ""}
            result = _execute(path, params, effective, reserved, profile, timeout, progress,
                              strict, notebook_dir)
            status = "finished"
            record["seconds"] = round(result.seconds, 1)
            return result
        except RunInterrupted:
            status = "interrupted"
            raise
        except BaseException as err:
            error = f"{type(err).__name__}: {err}"[:2000]
            raise
        finally:
            record.update(status=status, finished=_now())
            if error:
                record["error"] = error
            atomic_write_json(results_dir / "run.json", record)


def _execute(path: Path, params: dict[str, Any], effective: dict[str, Any],
             reserved: dict[str, str], profile: str, timeout: int, progress: bool,
             strict: bool, notebook_dir: Path | None) -> RunResult:
    stem = path.stem
    results_dir = Path(reserved["results_dir"])
    output = Path(notebook_dir or results_dir) / f"{stem}.ipynb"
    scratch = results_dir / f".{stem}.running.ipynb"
    failed = results_dir / "failed.ipynb"
    start = time.perf_counter()
    try:
        with kernel_environment():
            papermill.execute_notebook(
                str(path), str(scratch), parameters={**params, **reserved},
                kernel_name="python3", cwd=str(path.parent), execution_timeout=timeout,
                progress_bar=progress, request_save_on_cell_execute=False,
                extra_arguments=KERNEL_ARGUMENTS)
    except KeyboardInterrupt:
        _keep(scratch, failed)
        raise RunInterrupted(f"{stem} interrupted; rerun the same command to resume") from None
    except papermill.PapermillExecutionError as err:
        _keep(scratch, failed)
        if err.ename == "KeyboardInterrupt":
            raise RunInterrupted(f"{stem} interrupted; rerun the same command to "
                                 f"resume") from None
        nb = nbformat.read(failed, as_version=4)
        raise NotebookError(_failure_message(nb, stem) + f"\n(executed copy: {failed})") from None
    except Exception as err:  # a cell timeout or a dead kernel
        _keep(scratch, failed)
        raise NotebookError(f"notebook {stem} failed: {type(err).__name__}: {err}") from err
    seconds = time.perf_counter() - start
    nb = nbformat.read(scratch, as_version=4)
    warnings = tuple(stderr_outputs(nb))
    if strict and warnings:
        _keep(scratch, failed)
        raise NotebookError(f"notebook {stem} wrote warnings, which a reader would see "
                            f"(tag a cell '{ALLOW_STDERR_TAG}' if that is intended):\n"
                            + "\n".join(warnings) + f"\n(executed copy: {failed})")
    defaults = settings_of(path).defaults()
    changed = {k: v for k, v in effective.items() if defaults.get(k) != v}
    _insert_provenance(nb, provenance(profile, changed, str(effective.get("device", "cpu")),
                                      str(effective.get("precision", "auto"))))
    _tag_parameter_cells(nb)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, nbformat.writes(nb))
    scratch.unlink()
    failed.unlink(missing_ok=True)
    return RunResult(stem, output, results_dir, params, seconds, warnings)


@contextmanager
def kernel_environment() -> Iterator[None]:
    """While a kernel starts and runs: the ``python3`` kernel is this environment's, whatever
    the caller's PATH says, and MPLBACKEND is unset (Agg would make glued figures vanish)."""
    env_backup = os.environ.pop("MPLBACKEND", None)
    path_backup = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), path_backup])
    try:
        yield
    finally:
        os.environ["PATH"] = path_backup
        if env_backup is not None:
            os.environ["MPLBACKEND"] = env_backup


def _keep(scratch: Path, failed: Path) -> None:
    if scratch.exists():
        scratch.replace(failed)


def build_book(root: Path | None = None, config: Path | None = None,
               output: Path | None = None) -> None:
    """``jupyter-book build`` with execution off; any warning or error fails the build."""
    root = root or project_root()
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(root),
           "--warningiserror", "--keep-going"]
    if config is not None:
        cmd += ["--config", str(config)]
    if output is not None:
        cmd += ["--path-output", str(output)]
    if not Path(cmd[0]).exists():
        cmd[0] = "jupyter-book"
    done = subprocess.run(cmd, cwd=root)
    if done.returncode != 0:
        raise RuntimeError(f"jupyter-book build failed (exit {done.returncode}); see above")


def student_config(config: dict[str, Any]) -> dict[str, Any]:
    """The book's ``_config.yml`` for students: exercises without solutions, and no other
    way to reach them (no copied page sources or .ipynb download button, no launch buttons
    that open the notebooks with their solutions)."""
    student = json.loads(json.dumps(config))
    sphinx = student.setdefault("sphinx", {}).setdefault("config", {})
    sphinx["hide_solutions"] = True
    sphinx["html_copy_source"] = False
    sphinx.setdefault("html_theme_options", {})["use_download_button"] = False
    student["launch_buttons"] = {"binderhub_url": "", "colab_url": "", "jupyterhub_url": "",
                                 "thebe": False}
    student.setdefault("html", {})["use_repository_button"] = False
    return student


def build_student_book(root: Path | None = None) -> Path:
    """Build the student book from the chapters ``fernb book`` published; returns the folder
    of its HTML (``_build/student/_build/html``)."""
    root = root or project_root()
    generated = root / "book" / "_generated"
    missing = [n for n in notebook_names(root) if not (generated / f"{n}.ipynb").exists()]
    if missing:
        raise NotebookError(f"cannot build the student book: chapters never run: {missing}; "
                            f"run `fernb book` (or `make book`) first")
    config = root / "_build" / "student_config.yml"
    config.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(config, yaml.safe_dump(
        student_config(yaml.safe_load((root / "_config.yml").read_text())), sort_keys=False))
    with hold(generated, "the book"):
        publish_book_pages(root)
        build_book(root, config=config, output=root / "_build" / "student")
    return root / "_build" / "student" / "_build" / "html"


def run_book(*, profile: str = "cpu", only: list[str] | None = None, build: bool = True,
             root: Path | None = None, timeout: int = 3600,
             store: Path | None = None) -> list[RunResult]:
    """Run every chapter (or ``only`` those) with the profile, publish the executed copies to
    ``book/_generated/`` and build the HTML book.

    Every requested notebook is checked before any runs, then each is attempted; if any
    fails (an exception, or a warning printed in a cell), the failures are reported together
    and the book is not built.
    """
    root = root or project_root()
    names = only or notebook_names(root)
    validate_profile(profile, root)
    for n in names:
        prepare(n, profile=profile, root=root)
    generated = root / "book" / "_generated"
    results, failures = [], []
    with hold(generated, "the book"):
        publish_book_pages(root)
        for n in names:
            print(f"[fernb] running {n} with profile {profile!r}", file=sys.stderr)
            try:
                results.append(run_notebook(n, profile=profile, root=root, timeout=timeout,
                                            store=store, notebook_dir=generated, strict=True))
                print(f"[fernb] {n} done in {results[-1].seconds:.0f} s", file=sys.stderr)
            except NotebookError as err:
                failures.append(str(err))
        if failures:
            raise NotebookError("\n\n".join(failures))
        if build:
            missing = [n for n in notebook_names(root) if not (generated / f"{n}.ipynb").exists()]
            if missing:
                raise NotebookError(f"cannot build the book: chapters never run: {missing}; "
                                    f"run `fernb book --profile {profile}` without --only")
            build_book(root)
            print(f"[fernb] book built: open {root / '_build' / 'html' / 'index.html'}",
                  file=sys.stderr)
    return results
