"""The runner: parameter validation, execution, failure reporting and results versioning."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
import yaml

from fernb import chapters, cli, runner
from fernb.params import ChapterSettings, param


@dataclass(frozen=True)
class DemoSettings(ChapterSettings):
    epochs: int = param(2, None, "epochs")
    lr: float = param(0.1, None, "learning rate")
    name: str = param("synth-lab", None, "a dataset")
    use_cuda: bool = param(False, None, "a flag")
    sizes: list[int] = param([48, 96], None, "image sizes")


def _notebook(path: Path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(DemoSettings.parameters_cell("results"))
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Demo"), params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["fernb"] = {"settings": "test_runner:DemoSettings"}
    nbformat.write(nb, path)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "_config.yml").write_text("title: demo\n")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "book" / "profiles").mkdir(parents=True)
    _notebook(tmp_path / "notebooks" / "00_demo.ipynb",
              "import json, pathlib\n"
              "pathlib.Path(results_dir).mkdir(parents=True, exist_ok=True)\n"
              "pathlib.Path(results_dir, 'metrics.json').write_text("
              "json.dumps({'epochs': epochs, 'lr': lr}))")
    _notebook(tmp_path / "notebooks" / "01_broken.ipynb", "x = 1\nraise ValueError('boom')")
    (tmp_path / "book" / "profiles" / "smoke.yaml").write_text(
        yaml.safe_dump({"00_demo": {"epochs": 1}}))
    return tmp_path


def test_parameters_come_from_the_declaration_the_notebook_names(project: Path) -> None:
    path = project / "notebooks" / "00_demo.ipynb"
    assert chapters.settings_of(path) is DemoSettings
    _, given, effective = chapters.prepare("00_demo", profile="smoke", root=project)
    assert given == {"epochs": 1}
    assert effective == {**DemoSettings.defaults(), "epochs": 1}


def test_unknown_parameter_lists_the_valid_ones(project: Path) -> None:
    with pytest.raises(runner.ParameterError) as err:
        runner.run_notebook("00_demo", profile="smoke", overrides={"bogus": 1}, root=project)
    message = str(err.value)
    assert "bogus" in message and "epochs = 2" in message and "lr = 0.1" in message
    assert not (project / "book" / "_generated").exists(), "nothing may run before validation"


@pytest.mark.parametrize("name, value", [("epochs", "ten"), ("use_cuda", "3"),
                                         ("sizes", "48"), ("epochs", "1.5")])
def test_wrong_type_is_rejected(project: Path, name: str, value: str) -> None:
    with pytest.raises(runner.ParameterError, match=name):
        chapters.prepare("00_demo", overrides={name: value}, root=project)


def test_cli_strings_are_coerced(project: Path) -> None:
    _, values, _ = chapters.prepare("00_demo", root=project, overrides={
        "epochs": "3", "lr": "1", "use_cuda": "true", "sizes": "[32, 64]",
        "name": "synth-wild"})
    assert values == {"epochs": 3, "lr": 1.0, "use_cuda": True, "sizes": [32, 64],
                      "name": "synth-wild"}


def test_results_dir_is_reserved(project: Path) -> None:
    with pytest.raises(runner.ParameterError, match="output-dir"):
        runner.run_notebook("00_demo", profile="smoke", overrides={"results_dir": "x"},
                            root=project)


def test_unknown_profile_and_notebook(project: Path) -> None:
    with pytest.raises(FileNotFoundError, match="smoke"):
        runner.run_notebook("00_demo", profile="nope", root=project)
    with pytest.raises(FileNotFoundError, match="00_demo"):
        runner.resolve_notebook("99_missing", root=project)


@pytest.mark.notebook
def test_run_writes_outputs_and_shows_only_the_latest_run(project: Path, capsys) -> None:
    result = runner.run_notebook("00_demo", profile="smoke", root=project, progress=False)
    out = project / "results" / "smoke" / "00_demo"
    assert json.loads((out / "metrics.json").read_text()) == {"epochs": 1, "lr": 0.1}
    run = json.loads((out / "run.json").read_text())
    assert run["parameters"] == {"epochs": 1, "lr": 0.1, "name": "synth-lab",
                                 "use_cuda": False, "sizes": [48, 96], "seed": 0,
                                 "precision": "auto", "device": "auto"}
    assert run["status"] == "finished" and run["seconds"] == round(result.seconds, 1)
    assert result.results_dir == out and result.output == out / "00_demo.ipynb"
    assert not (project / "book" / "_generated").exists(), "only `fernb book` publishes"
    nb = nbformat.read(result.output, as_version=4)
    tagged = [c.metadata.get("tags", []) for c in nb.cells if c.cell_type == "code"]
    assert ["parameters", "remove-input"] in tagged
    assert any("injected-parameters" in t and "remove-input" in t for t in tagged)
    line = nb.cells[1].source  # right under the title
    assert nb.cells[1].metadata["tags"] == ["provenance"]
    assert "**smoke** profile" in line and "`epochs=1`" in line and "torch" in line

    (out / "figures").mkdir(exist_ok=True)
    (out / "figures" / "stale.png").write_bytes(b"from an earlier run")
    (out / "notes.txt").write_text("the reader's own file")
    runner.run_notebook("00_demo", profile="smoke", overrides={"epochs": 5}, root=project,
                        progress=False)
    # The folder shows exactly the latest run: nothing of the previous one is left to be
    # mistaken for it, and files that are not a run's outputs are kept.
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 5
    assert not (out / "figures" / "stale.png").exists()
    assert (out / "notes.txt").read_text() == "the reader's own file"
    assert [p.name for p in out.parent.iterdir() if not p.name.startswith(".")] == ["00_demo"]
    assert "now shows this run" in capsys.readouterr().err
    runner.run_notebook("00_demo", profile="smoke", overrides={"epochs": 5}, root=project,
                        progress=False)
    assert "parameters changed" not in capsys.readouterr().err


@pytest.mark.notebook
def test_failing_notebook_shows_the_cell_and_error(project: Path) -> None:
    with pytest.raises(runner.NotebookError) as err:
        runner.run_notebook("01_broken", profile="smoke", root=project, progress=False)
    message = str(err.value)
    assert "raise ValueError('boom')" in message and "ValueError: boom" in message
    out = project / "results" / "smoke" / "01_broken"
    assert (out / "failed.ipynb").exists() and not (out / "01_broken.ipynb").exists()
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "failed" and "boom" in run["error"]


@pytest.mark.notebook
def test_book_exits_non_zero_on_a_failing_notebook(project: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(project)
    code = cli.main(["book", "--profile", "smoke", "--no-build"])
    assert code == 1
    assert "ValueError: boom" in capsys.readouterr().err
    assert (project / "book" / "_generated" / "00_demo.ipynb").exists()
    assert not (project / "book" / "_generated" / "01_broken.ipynb").exists()


def test_cli_bogus_parameter_fails_fast(project: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(project)
    assert cli.main(["run", "00_demo", "--profile", "smoke", "-p", "bogus", "1"]) == 2
    err = capsys.readouterr().err
    assert "bogus" in err and "epochs" in err


def test_params_table_shows_profile_values(project: Path) -> None:
    table = chapters.parameters_table("00_demo", root=project)
    header, *rows = table.splitlines()
    assert header.split() == ["parameter", "type", "default", "(cpu)", "smoke", "help"]
    assert any(r.split() == ["epochs", "int", "2", "1", "epochs"] for r in rows)
    assert not any(r.startswith("results_dir") for r in rows)


@pytest.mark.notebook
def test_a_cell_timeout_is_reported_not_raised_raw(project: Path) -> None:
    _notebook(project / "notebooks" / "02_slow.ipynb", "import time\ntime.sleep(30)")
    with pytest.raises(runner.NotebookError, match="02_slow failed: .*Timeout"):
        runner.run_notebook("02_slow", profile="smoke", root=project, progress=False, timeout=2)
    out = project / "results" / "smoke" / "02_slow"
    assert not (out / "02_slow.ipynb").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "failed"


@pytest.mark.notebook
def test_a_warning_fails_a_strict_run_and_is_reported_otherwise(project: Path) -> None:
    _notebook(project / "notebooks" / "03_warns.ipynb",
              "import warnings\nwarnings.warn('mean of empty slice')")
    with pytest.raises(runner.NotebookError, match="(?s)wrote to stderr.*empty slice"):
        runner.run_notebook("03_warns", profile="smoke", root=project, progress=False,
                            strict=True)
    result = runner.run_notebook("03_warns", profile="smoke", root=project, progress=False)
    assert len(result.warnings) == 1 and "empty slice" in result.warnings[0]


@pytest.mark.notebook
def test_a_cell_tagged_allow_stderr_may_warn(project: Path) -> None:
    path = project / "notebooks" / "03_warns.ipynb"
    _notebook(path, "import warnings\nwarnings.warn('expected')")
    nb = nbformat.read(path, as_version=4)
    nb.cells[2].metadata["tags"] = ["allow-stderr"]
    nbformat.write(nb, path)
    assert runner.run_notebook("03_warns", profile="smoke", root=project, progress=False,
                               strict=True).warnings == ()


def test_a_second_run_on_the_same_results_folder_stops_naming_the_holder(project: Path
                                                                        ) -> None:
    out = project / "results" / "smoke" / "00_demo"
    with runner.hold(out, "the results folder"):
        with pytest.raises(runner.ResultsBusy, match=r"in use by process \d+ on"):
            runner.run_notebook("00_demo", profile="smoke", root=project, progress=False)
    assert not (out / "run.json").exists(), "the second run must not touch the folder"
    with runner.hold(out, "the results folder"):
        pass  # released: a later run may take it


def test_the_lock_is_held_across_processes(project: Path) -> None:
    import subprocess
    import sys
    out = project / "results" / "smoke" / "00_demo"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
         "from fernb import runner\n"
         f"with runner.hold(Path({str(out)!r}), 'x'):\n"
         "    print('held', flush=True)\n    time.sleep(30)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(runner.ResultsBusy, match=f"process {holder.pid}"):
            runner.run_notebook("00_demo", profile="smoke", root=project, progress=False)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.notebook
def test_ctrl_c_marks_the_run_interrupted(project: Path, monkeypatch) -> None:
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner.papermill, "execute_notebook", interrupt)
    with pytest.raises(runner.RunInterrupted, match="rerun the same command to resume"):
        runner.run_notebook("00_demo", profile="smoke", root=project, progress=False)
    run = json.loads((project / "results" / "smoke" / "00_demo" / "run.json").read_text())
    assert run["status"] == "interrupted"


def test_cli_prints_one_line_on_ctrl_c(project: Path, monkeypatch, capsys) -> None:
    def interrupt(*args, **kwargs):
        raise runner.RunInterrupted("00_demo interrupted")

    monkeypatch.chdir(project)
    monkeypatch.setattr(runner, "run_notebook", interrupt)
    assert cli.main(["run", "00_demo", "--profile", "smoke"]) == 130
    assert capsys.readouterr().err == "fernb: interrupted; rerun the same command to resume\n"
