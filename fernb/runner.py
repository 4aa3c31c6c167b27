"""Profiles, parameter validation, papermill execution and the book build.

Data flow: a profile (``book/profiles/<name>.yaml``, notebook -> parameters) plus the user's
``-p NAME VALUE`` overrides are validated against the notebook's ``parameters`` cell, then
papermill executes ``notebooks/<name>.ipynb`` (cwd ``notebooks/``, kernel ``python3``). The
executed copy goes to ``book/_generated/`` (parameter cells tagged ``remove-input``) and the
notebook writes its tables, figures and ``metrics.json`` to ``results/<profile>/<name>/``.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import papermill
import yaml

from fernb.io import atomic_write_json, atomic_write_text, read_json

PROFILES = ("smoke", "cpu", "paper")
RESERVED = ("results_dir",)
REMOVE_INPUT_TAGS = ("parameters", "injected-parameters")


class ParameterError(ValueError):
    """A parameter name or value that the notebook does not accept."""


class NotebookError(RuntimeError):
    """A notebook cell raised; the message shows the cell and its error."""


def project_root() -> Path:
    """The repository root: the nearest folder above the cwd holding ``_config.yml`` and
    ``notebooks/``; else the folder above the installed package."""
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / "_config.yml").exists() and (folder / "notebooks").is_dir():
            return folder
    return Path(__file__).resolve().parent.parent


def notebook_names(root: Path | None = None) -> list[str]:
    """Chapter notebooks in book order (their ``NN_`` prefix)."""
    root = root or project_root()
    return sorted(p.stem for p in (root / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def resolve_notebook(name: str, root: Path | None = None) -> Path:
    """``00_data``, ``00_data.ipynb`` or a path -> the notebook's path, with a helpful error."""
    root = root or project_root()
    candidates = [Path(name), root / "notebooks" / name, root / "notebooks" / f"{name}.ipynb"]
    for path in candidates:
        if path.suffix == ".ipynb" and path.is_file():
            return path.resolve()
    raise FileNotFoundError(f"no notebook {name!r}; available: {notebook_names(root)}")


def load_profile(profile: str, root: Path | None = None) -> dict[str, dict[str, Any]]:
    """The profile's mapping notebook -> parameters."""
    root = root or project_root()
    path = root / "book" / "profiles" / f"{profile}.yaml"
    if not path.is_file():
        found = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise FileNotFoundError(f"no profile {profile!r} at {path}; available: {found}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path} must map notebook names to parameter mappings")
    return data


@dataclass(frozen=True)
class Parameter:
    name: str
    default: Any
    type_name: str
    help: str


def notebook_parameters(path: Path) -> dict[str, Parameter]:
    """The notebook's ``parameters`` cell as name -> Parameter (via papermill's inspector)."""
    found = papermill.inspect_notebook(str(path))
    if not found:
        raise ValueError(f"{path.name} has no cell tagged 'parameters'")
    params = {}
    for name, info in found.items():
        try:
            default = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            default = info["default"]
        params[name] = Parameter(name, default, type(default).__name__, info.get("help", ""))
    return params


def _coerce(param: Parameter, value: Any) -> Any:
    """Check ``value`` against the default's type; CLI strings are parsed as YAML scalars."""
    if isinstance(value, str) and not isinstance(param.default, str):
        value = yaml.safe_load(value)
    default = param.default
    if default is None or value is None:
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(default, bool) and isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float))
        value = float(value) if ok else value
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ParameterError(f"parameter {param.name!r} expects {param.type_name} "
                             f"(default {default!r}); got {value!r} ({type(value).__name__})")
    return value


def validate_parameters(path: Path, values: dict[str, Any]) -> dict[str, Any]:
    """Check every name and type before anything runs; return the coerced values."""
    params = notebook_parameters(path)
    unknown = [k for k in values if k not in params]
    if unknown:
        listing = "\n".join(f"  {p.name} = {p.default!r}" + (f"  # {p.help}" if p.help else "")
                            for p in params.values() if p.name not in RESERVED)
        raise ParameterError(f"unknown parameter(s) {unknown} for {path.stem}. "
                             f"Valid parameters and their defaults:\n{listing}")
    return {k: _coerce(params[k], v) for k, v in values.items()}


def parameters_table(name: str, root: Path | None = None) -> str:
    """Text table of a notebook's parameters, defaults and each profile's values."""
    root = root or project_root()
    path = resolve_notebook(name, root)
    params = notebook_parameters(path)
    profiles = {}
    for p in PROFILES:
        try:
            profiles[p] = load_profile(p, root).get(path.stem, {})
        except FileNotFoundError:
            continue
    rows = [["parameter", "default", *profiles]]
    for p in params.values():
        if p.name in RESERVED:
            continue
        rows.append([p.name, repr(p.default), *(repr(v[p.name]) if p.name in v else "."
                                                for v in profiles.values())])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


DATA_PARAMETERS = (("dataset", "data_root"), ("wild_dataset", "wild_root"))


def _check_data(params: dict[str, Any]) -> None:
    """Real datasets are checked before the kernel starts, so a wrong path fails in seconds."""
    from fernb.data.check import LAYOUTS, check_dataset
    for name_key, root_key in DATA_PARAMETERS:
        name = params.get(name_key)
        if name not in LAYOUTS:
            continue
        root = params.get(root_key)
        if not root:
            raise ParameterError(f"{name_key} {name!r} needs its folder: add -p {root_key} "
                                 f"/path/to/it")
        report = check_dataset(name, root)
        if not report.ok:
            raise ParameterError(f"the {name} folder {root} does not match the expected "
                                 f"layout (see the book page 'Running on the real "
                                 f"datasets'):\n{report.format()}")


def _digest(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _prepare_results_dir(results_dir: Path, params: dict[str, Any]) -> None:
    """Never silently overwrite a run made with other parameters (the notebook's defaults
    included): move it aside, versioned."""
    stored = read_json(results_dir / "run.json")
    if stored is not None and stored.get("parameters") != json.loads(json.dumps(params,
                                                                            default=str)):
        old = results_dir.with_name(f"{results_dir.name}@{stored.get('digest', 'previous')}")
        if old.exists():
            shutil.rmtree(old)
        results_dir.rename(old)
        print(f"[fernb] parameters changed: the previous run of {results_dir.name} was kept "
              f"at {old}", file=sys.stderr)
    results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(results_dir / "run.json", {"parameters": params, "digest": _digest(params),
                                                 "status": "running"})


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


@dataclass(frozen=True)
class RunResult:
    notebook: str
    output: Path
    results_dir: Path
    parameters: dict[str, Any]
    seconds: float


def run_notebook(name: str, *, profile: str = "cpu", overrides: dict[str, Any] | None = None,
                 output_dir: Path | None = None, notebook_dir: Path | None = None,
                 timeout: int = 3600, root: Path | None = None,
                 progress: bool = True) -> RunResult:
    """Validate, execute and post-process one notebook; raise NotebookError on a failed cell.

    Args:
        name: notebook name, e.g. ``"01_esr"``.
        profile: ``book/profiles/<profile>.yaml`` to take parameters from.
        overrides: user parameters that win over the profile's (``-p NAME VALUE``).
        output_dir: results folder; default ``results/<profile>/<name>``.
        notebook_dir: where the executed notebook goes; default ``book/_generated``.
        timeout: per-cell timeout in seconds.
    """
    root = root or project_root()
    path = resolve_notebook(name, root)
    stem = path.stem
    given = {**load_profile(profile, root).get(stem, {}), **(overrides or {})}
    reserved = [k for k in given if k in RESERVED]
    if reserved:
        raise ParameterError(f"{reserved} is set by the runner; use --output-dir instead")
    params = validate_parameters(path, given)
    _check_data(params)
    results_dir = Path(output_dir or root / "results" / profile / stem).resolve()
    effective = {name: p.default for name, p in notebook_parameters(path).items()
                 if name not in RESERVED} | params
    _prepare_results_dir(results_dir, effective)
    generated = Path(notebook_dir or root / "book" / "_generated") / f"{stem}.ipynb"
    generated.parent.mkdir(parents=True, exist_ok=True)
    scratch = results_dir / f".{stem}.running.ipynb"
    env_backup = os.environ.pop("MPLBACKEND", None)  # Agg would make glued figures vanish
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent),
                                          os.environ.get("PATH", "")])
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(path), str(scratch), parameters={**params, "results_dir": str(results_dir)},
            kernel_name="python3", cwd=str(path.parent), execution_timeout=timeout,
            progress_bar=progress, request_save_on_cell_execute=False)
    except papermill.PapermillExecutionError:
        nb = nbformat.read(scratch, as_version=4)
        failed = results_dir / "failed.ipynb"
        scratch.replace(failed)
        raise NotebookError(_failure_message(nb, stem) + f"\n(executed copy: {failed})") from None
    except Exception as err:  # a cell timeout or a dead kernel
        if scratch.exists():
            scratch.replace(results_dir / "failed.ipynb")
        raise NotebookError(f"notebook {stem} failed: {type(err).__name__}: {err}") from err
    finally:
        if env_backup is not None:
            os.environ["MPLBACKEND"] = env_backup
    seconds = time.perf_counter() - start
    nb = nbformat.read(scratch, as_version=4)
    _tag_parameter_cells(nb)
    atomic_write_text(generated, nbformat.writes(nb))
    scratch.unlink()
    (results_dir / "failed.ipynb").unlink(missing_ok=True)
    atomic_write_json(results_dir / "run.json", {
        "notebook": stem, "profile": profile, "parameters": effective,
        "digest": _digest(effective),
        "status": "finished", "seconds": round(seconds, 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return RunResult(stem, generated, results_dir, params, seconds)


def build_book(root: Path | None = None) -> None:
    """``jupyter-book build`` with execution off; any warning or error fails the build."""
    root = root or project_root()
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(root),
           "--warningiserror", "--keep-going"]
    if not Path(cmd[0]).exists():
        cmd[0] = "jupyter-book"
    done = subprocess.run(cmd, cwd=root)
    if done.returncode != 0:
        raise RuntimeError(f"jupyter-book build failed (exit {done.returncode}); see above")


def run_book(*, profile: str = "cpu", only: list[str] | None = None, build: bool = True,
             root: Path | None = None, timeout: int = 3600) -> list[RunResult]:
    """Run every chapter (or ``only`` those) with the profile, then build the HTML book.

    Every requested notebook is attempted; if any fails, the failures are reported together
    and the book is not built.
    """
    root = root or project_root()
    names = only or notebook_names(root)
    for n in names:
        resolve_notebook(n, root)
    results, failures = [], []
    for n in names:
        print(f"[fernb] running {n} with profile {profile!r}", file=sys.stderr)
        try:
            results.append(run_notebook(n, profile=profile, root=root, timeout=timeout))
            print(f"[fernb] {n} done in {results[-1].seconds:.0f} s", file=sys.stderr)
        except NotebookError as err:
            failures.append(str(err))
    if failures:
        raise NotebookError("\n\n".join(failures))
    if build:
        missing = [n for n in notebook_names(root)
                   if not (root / "book" / "_generated" / f"{n}.ipynb").exists()]
        if missing:
            raise NotebookError(f"cannot build the book: chapters never run: {missing}; "
                                f"run `fernb book --profile {profile}` without --only")
        build_book(root)
        print(f"[fernb] book built: open {root / '_build' / 'html' / 'index.html'}",
              file=sys.stderr)
    return results
