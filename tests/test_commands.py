"""Every `fernb run` command the book prints (chapters, exercises, pages, README) passes the
checks that run before a kernel starts, so a reader can type it as written."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import nbformat
import pytest

from fernb import chapters

ROOT = Path(__file__).resolve().parent.parent
COMMAND = re.compile(r"fernb run [^`\n]+")


def _sources() -> list[tuple[str, str]]:
    found = []
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        found += [(path.name, c.source) for c in nb.cells if c.cell_type == "markdown"]
    for path in [ROOT / "README.md", *sorted((ROOT / "book").glob("*.md"))]:
        found.append((path.name, path.read_text()))
    return found


def _commands() -> list[tuple[str, str]]:
    """Commands without placeholders (``fernb run NAME --profile P`` is a pattern)."""
    found = [(where, m.group(0).split("#")[0].strip()) for where, text in _sources()
             for m in COMMAND.finditer(text)]
    return [(w, c) for w, c in found if not re.search(r"\b(NAME|P|DIR)\b", c)]


def test_the_book_prints_commands() -> None:
    assert len(_commands()) >= 5


@pytest.mark.parametrize("where, command", _commands())
def test_printed_command_passes_the_checks(where: str, command: str, monkeypatch,
                                          tmp_path: Path) -> None:
    import torch
    if "cuda" in command:  # a GPU command is for a machine with a GPU
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    args = shlex.split(command.replace("\\\\", ""))[2:]
    name, profile, overrides = args[0], "cpu", {}
    rest = args[1:]
    while rest:
        flag = rest.pop(0)
        if flag in ("-p", "--param"):
            key, value = rest.pop(0), rest.pop(0)
            overrides[key] = value
        elif flag == "--profile":
            profile = rest.pop(0)
        elif flag in ("--output-dir", "--timeout"):
            rest.pop(0)
        else:
            pytest.fail(f"{where}: unknown option {flag!r} in {command!r}")
    # A weights file (e.g. /data/vgg_face_torchvision.pth) is on the reader's machine: stand in
    # an empty file of that name, since its existence is checked before the kernel starts.
    if overrides.get("weights"):
        overrides["weights"] = str(tmp_path / Path(overrides["weights"]).name)
        Path(overrides["weights"]).touch()
    path = chapters.resolve_notebook(name, ROOT)
    settings = chapters.settings_of(path)
    given = {**chapters.profile_values(profile, path, ROOT), **settings.given(overrides)}
    # Commands that name a real dataset's folder are checked for their values only: the
    # folder (e.g. /data/CK+) exists on the reader's machine, not here.
    settings.check(settings.defaults() | given, set(overrides), chapter=path.stem)
