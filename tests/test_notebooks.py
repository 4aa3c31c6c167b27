"""Every chapter notebook runs end to end with the smoke profile, through the same runner
that users call (``fernb run NAME --profile smoke``)."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from fernb import runner

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = runner.notebook_names(ROOT)


def test_committed_notebooks_are_clean() -> None:
    assert NOTEBOOKS, "no chapter notebooks found"
    for name in NOTEBOOKS:
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        assert nb.metadata["kernelspec"]["name"] == "python3", name
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), name
        tags = [c.metadata.get("tags", []) for c in nb.cells]
        assert sum("parameters" in t for t in tags) == 1, f"{name}: one parameters cell"


def test_every_profile_names_only_real_parameters() -> None:
    for profile in runner.PROFILES:
        for name, values in runner.load_profile(profile, ROOT).items():
            path = runner.resolve_notebook(name, ROOT)
            runner.validate_parameters(path, values)


@pytest.mark.notebook
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_with_smoke_profile(name: str, tmp_path: Path) -> None:
    result = runner.run_notebook(name, profile="smoke", root=ROOT, output_dir=tmp_path / "res",
                                 notebook_dir=tmp_path / "nb", progress=False, timeout=600)
    metrics = json.loads((result.results_dir / "metrics.json").read_text())
    assert metrics["environment"]["device"]
    assert list((result.results_dir / "figures").glob("*.png")), "no figure written"
    assert list((result.results_dir / "tables").glob("*.csv")), "no table written"


def test_papermill_reads_every_assignment_of_the_parameters_cell() -> None:
    """papermill silently skips a line it cannot parse (e.g. '=' inside a comment)."""
    import ast
    for name in NOTEBOOKS:
        path = ROOT / "notebooks" / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        assigned = {t.id for node in ast.parse(cell.source).body
                    if isinstance(node, ast.Assign) for t in node.targets}
        assert assigned == set(runner.notebook_parameters(path)), name
