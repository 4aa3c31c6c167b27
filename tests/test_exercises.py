"""Every command a chapter's exercise (or its solution) asks the reader to run ends
successfully at smoke scale: the exercise's own settings on top of the smoke profile, with
any size the exercise raises (epochs, trials, replicates) kept at the smoke profile's value.
Commands that name a licensed dataset's folder are checked for their values only
(tests/test_commands.py), since the folder is on the reader's machine."""
from __future__ import annotations

import re
import shlex
from pathlib import Path
import nbformat
import pytest

from fernb import chapters, cli, runner
from fernb.course import markers

ROOT = Path(__file__).resolve().parent.parent
COMMAND = re.compile(r"fernb run [^`\n]+")


def _commands() -> list[tuple[str, str]]:
    found = []
    for name in chapters.notebook_names(ROOT):
        nb = nbformat.read(chapters.resolve_notebook(name, ROOT), as_version=4)
        text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        for block in markers.directives(text, "exercise") + markers.directives(text, "solution"):
            found += [(name, m.group(0).strip()) for m in COMMAND.finditer(block)]
    return list(dict.fromkeys(found))


RUNNABLE = [(n, c) for n, c in _commands() if "data_root" not in c and "--profile" not in c]


def test_the_exercises_print_commands() -> None:
    assert len(RUNNABLE) >= 10
    assert {n for n, _ in RUNNABLE} >= {"01_esr", "02_relevance_maps", "03_fll_to_fer",
                                        "04_soft_labels", "05_faml_t2v"}


@pytest.mark.notebook
@pytest.mark.parametrize("name, command", RUNNABLE, ids=[c for _, c in RUNNABLE])
def test_an_exercise_command_runs_to_the_end_at_smoke_scale(name: str, command: str,
                                                            tmp_path: Path) -> None:
    args = cli.build_parser().parse_args(shlex.split(command)[1:])
    assert args.notebook == name, f"{command!r} is printed in {name}"
    overrides = chapters.at_smoke_scale(chapters.resolve_notebook(name, ROOT),
                                        dict(args.param or []), ROOT)
    result = runner.run_notebook(name, profile="smoke", overrides=overrides, root=ROOT,
                                 output_dir=tmp_path / "res", notebook_dir=tmp_path / "nb",
                                 progress=False, timeout=600)
    assert (result.results_dir / "metrics.json").exists()
