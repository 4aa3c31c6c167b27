"""Every chapter notebook runs end to end with the smoke profile, through the same runner
that users call (``fernb run NAME --profile smoke``)."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from fernb import chapters, runner
from fernb.verdicts import VERDICTS

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


@pytest.mark.notebook
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_with_smoke_profile(name: str, tmp_path: Path) -> None:
    result = runner.run_notebook(name, profile="smoke", root=ROOT, output_dir=tmp_path / "res",
                                 notebook_dir=tmp_path / "nb", progress=False, timeout=600)
    metrics = json.loads((result.results_dir / "metrics.json").read_text())
    assert metrics["environment"]["device"]
    assert list((result.results_dir / "figures").glob("*.png")), "no figure written"
    assert list((result.results_dir / "tables").glob("*.csv")), "no table written"
    claims = [pd.read_csv(p) for p in (result.results_dir / "tables").glob("claims*.csv")]
    assert claims or name == "00_data", "no claims table written"  # the data chapter tests none
    for table in claims:  # every claim judged by fernb.verdicts, each verdict with its reason
        assert set(table["verdict"]) <= set(VERDICTS) and table["why"].str.len().min() > 0


@pytest.mark.notebook
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_gpu_profile_runs_at_smoke_scale(name: str, tmp_path: Path) -> None:
    """The gpu profile's settings on the code paths they take, with its epochs, subjects,
    seeds and images cut to the smoke profile's sizes (a few subjects' faces at 96 px can
    leave a class out of a split, which the full profile's subjects never do)."""
    path = chapters.resolve_notebook(name, ROOT)
    gpu = chapters.load_profile("gpu", ROOT).get(name, {})
    overrides = chapters.at_smoke_scale(
        path, {k: v for k, v in gpu.items() if k not in ("image_size", "wild_size")}, ROOT)
    result = runner.run_notebook(name, profile="smoke", overrides=overrides, root=ROOT,
                                 output_dir=tmp_path / "res", notebook_dir=tmp_path / "nb",
                                 progress=False, timeout=600)
    ran = json.loads((result.results_dir / "metrics.json").read_text())["params"]
    assert {k: ran[k] for k in overrides} == json.loads(json.dumps(overrides))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_parameters_cell_is_written_from_the_declaration(name: str) -> None:
    """A parameter missing from the cell, or a default that differs from the declared one,
    fails here; ``fernb params NAME --write-cell`` rewrites the cell."""
    path = ROOT / "notebooks" / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert cell.source == chapters.parameters_cell(path), \
        f"{name}: run `fernb params {name} --write-cell`"


def test_papermill_reads_every_assignment_of_the_parameters_cell() -> None:
    """papermill silently skips a line it cannot parse (e.g. '=' inside a comment)."""
    import papermill
    for name in NOTEBOOKS:
        path = ROOT / "notebooks" / f"{name}.ipynb"
        declared = set(chapters.settings_of(path).declared())
        assert set(papermill.inspect_notebook(str(path))) == \
            declared | {"results_dir", "store_dir"}, name


@pytest.mark.notebook
def test_esr_chapter_runs_on_a_ckplus_fixture(tmp_path: Path) -> None:
    """A reader pointing the chapter at CK+ (here a fixture in the official layout)."""
    from fixtures import write_ckplus
    root = write_ckplus(tmp_path / "CK+", n_subjects=8, n_sequences=4, n_frames=5)
    result = runner.run_notebook("01_esr", profile="smoke", root=ROOT,
                                 overrides={"dataset": "ckplus", "data_root": str(root)},
                                 output_dir=tmp_path / "res", notebook_dir=tmp_path / "nb",
                                 progress=False, timeout=600)
    runs = (result.results_dir / "tables" / "runs.csv").read_text()
    assert "Traditional ensemble" in runs and result.parameters["dataset"] == "ckplus"


def test_a_wrong_data_root_fails_before_the_kernel_starts(tmp_path: Path) -> None:
    with pytest.raises(runner.ParameterError, match="ckplus") as err:
        runner.run_notebook("01_esr", profile="smoke", root=ROOT,
                            overrides={"dataset": "ckplus", "data_root": str(tmp_path)},
                            output_dir=tmp_path / "res", notebook_dir=tmp_path / "nb")
    assert "cohn-kanade-images" in str(err.value)
    assert not (tmp_path / "nb").exists()
