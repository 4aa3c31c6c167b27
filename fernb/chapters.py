"""The book's chapters as the command line sees them: where the notebooks are, the parameters
each declares, the profiles, and every check that needs no kernel.

A chapter notebook names its declaration in its metadata, ``{"fernb": {"settings":
"fernb.studies.esr:Settings"}}`` (a :class:`fernb.params.ChapterSettings` subclass), so the
parameters, their types, defaults, constraints and help come from the package without
running or even parsing the notebook's code; its ``parameters`` cell is written from the same
declaration (:func:`write_parameters_cell`) and a test keeps the two equal. A profile
(``book/profiles/<name>.yaml``) maps notebooks to the values that differ from the defaults,
which are the ``cpu`` profile. Nothing here imports the notebook stack (papermill, nbformat).
"""
from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from fernb.errors import ParameterError
from fernb.params import RESERVED, ChapterSettings, python_literal

PROFILES = ("smoke", "cpu", "gpu", "paper")
# Real datasets' (name parameter, folder parameter) pairs, checked before the kernel starts.
DATA_PARAMETERS = (("dataset", "data_root"), ("wild_dataset", "wild_root"))


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


def settings_of(path: Path) -> type[ChapterSettings]:
    """The :class:`ChapterSettings` a notebook names in its metadata."""
    try:
        reference = json.loads(path.read_text())["metadata"]["fernb"]["settings"]
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path.name} does not name its parameters' declaration: its "
                         f"metadata needs {{'fernb': {{'settings': 'module:Class'}}}} "
                         f"({type(err).__name__}: {err})") from None
    module, _, name = reference.partition(":")
    settings = getattr(importlib.import_module(module), name, None)
    if not (isinstance(settings, type) and issubclass(settings, ChapterSettings)):
        raise ValueError(f"{path.name}'s metadata names {reference!r}, which is not a "
                         f"ChapterSettings subclass")
    return settings


def load_profile(profile: str, root: Path | None = None) -> dict[str, dict[str, Any]]:
    """The profile's mapping notebook -> parameters (``cpu`` may be absent: it is the
    declared defaults)."""
    root = root or project_root()
    path = root / "book" / "profiles" / f"{profile}.yaml"
    if not path.is_file():
        if profile == "cpu":
            return {}
        found = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise FileNotFoundError(f"no profile {profile!r} at {path}; available: {found}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path} must map notebook names to parameter mappings")
    return data


def profile_values(profile: str, path: Path, root: Path | None = None) -> dict[str, Any]:
    """The notebook's values in the profile, names and types checked."""
    values = load_profile(profile, root).get(path.stem, {})
    return settings_of(path).given(values, source=f"book/profiles/{profile}.yaml ({path.stem})")


def validate_profile(profile: str, root: Path | None = None) -> None:
    """Every notebook and parameter the profile names exists, and every chapter's values
    (the defaults with the profile's on top) meet the declared rules, but for real datasets'
    folders, which the reader gives on the command line."""
    root = root or project_root()
    data = load_profile(profile, root)
    unknown = [name for name in data if name not in notebook_names(root)]
    if unknown:
        raise ParameterError(f"book/profiles/{profile}.yaml names no notebook {unknown}; "
                             f"notebooks: {notebook_names(root)}")
    for name in data:
        path = resolve_notebook(name, root)
        settings = settings_of(path)
        values = profile_values(profile, path, root)
        settings.check(settings.defaults() | values, chapter=f"{name} in profile {profile}",
                       folders=False)


def at_smoke_scale(path: Path, values: Mapping[str, Any],
                   root: Path | None = None) -> dict[str, Any]:
    """``values`` (e.g. another profile's, or an exercise's ``-p`` settings) reduced to the
    smoke profile's size: a number larger than the smoke profile's value for it, or a list
    longer than the smoke profile's, takes the smoke profile's value; every other value is
    kept. Runs the same code paths at the size of a test."""
    smoke = profile_values("smoke", path, root)
    scaled = {}
    for key, value in settings_of(path).given(values).items():
        small = smoke.get(key)
        if (isinstance(value, int | float) and not isinstance(value, bool)
                and isinstance(small, int | float) and not isinstance(small, bool)
                and value > small):
            value = small
        elif isinstance(value, list) and isinstance(small, list) and len(value) > len(small):
            value = small
        scaled[key] = value
    return scaled


def _check_data(params: Mapping[str, Any]) -> None:
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
        report = check_dataset(name, root, decode=False)  # the reader decodes every image
        if not report.ok:
            raise ParameterError(f"the {name} folder {root} does not match the expected "
                                 f"layout (see the book page 'Running on the real "
                                 f"datasets'):\n{report.format()}")


def prepare(name: str, *, profile: str = "cpu", overrides: Mapping[str, Any] | None = None,
            root: Path | None = None) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Every check that needs no kernel: the notebook, the profile, parameter names, types
    and values, and a real dataset's layout. Returns the notebook path, the values given
    (profile and user, coerced) and the effective parameters (defaults overridden by them).
    """
    root = root or project_root()
    path = resolve_notebook(name, root)
    overrides = dict(overrides or {})
    reserved = [k for k in overrides if k in RESERVED]
    if reserved:
        raise ParameterError(f"{reserved} is set by the runner; use --output-dir (results) or "
                             f"--store (trained models) instead")
    settings = settings_of(path)
    given = {**profile_values(profile, path, root), **settings.given(overrides)}
    effective = settings.defaults() | given
    # A parameter the chosen dataset ignores is an error when the user set it; a profile's
    # value for another dataset (e.g. the smoke profile's n_subjects) is not the user's.
    settings.check(effective, set(overrides), chapter=path.stem)
    _check_data(effective)
    return path, given, effective


def _shown(value: Any, width: int = 32) -> str:
    text = python_literal(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def parameters_table(name: str, root: Path | None = None) -> str:
    """Text table of a notebook's parameters: type, default (the ``cpu`` profile), each other
    profile's value and the help."""
    root = root or project_root()
    path = resolve_notebook(name, root)
    declared = settings_of(path).declared()
    profiles = {}
    for p in PROFILES:
        if p == "cpu":
            continue
        try:
            profiles[p] = load_profile(p, root).get(path.stem, {})
        except FileNotFoundError:
            continue
    rows = [["parameter", "type", "default (cpu)", *profiles, "help"]]
    for d in declared.values():
        rows.append([d.name, d.type_name, _shown(d.default),
                     *(_shown(v[d.name]) if d.name in v else "." for v in profiles.values()),
                     d.help])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1]
                     for r in rows).rstrip()


def parameters_cell(path: Path) -> str:
    """The source the notebook's ``parameters`` cell must have (see
    :meth:`ChapterSettings.parameters_cell`)."""
    return settings_of(path).parameters_cell(f"../results/interactive/{path.stem}")


def write_parameters_cell(path: Path) -> bool:
    """Rewrite the notebook's ``parameters`` cell from its declaration; True if it changed."""
    import nbformat
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path.name} has {len(cells)} cells tagged 'parameters'; it needs one")
    source = parameters_cell(path)
    if cells[0].source == source:
        return False
    cells[0].source = source
    nbformat.write(nb, path)
    return True
