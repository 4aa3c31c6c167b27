"""Declared value constraints: every bad value is rejected, by name, before a kernel starts."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from fernb import chapters, cli, runner
from fernb.params import (POSITIVE_INT, ChapterSettings, Choice, DatasetName, Device, ListOf,
                          MappingOf, ParameterError, Range, Relation, param, relation)

ROOT = Path(__file__).resolve().parent.parent


def test_range_choice_list_mapping_messages():
    assert Range(48, 224, integer=True).problem(7) == "an integer in 48..224"
    assert Range(48, 224, integer=True).problem(64) is None
    assert Range(48, 224, integer=True).problem(64.0) is not None
    assert Range(1, integer=True).problem(0) == "an integer >= 1"
    assert Range(0, 10, open_low=True).problem(0.0) == "a number > 0 and <= 10"
    assert Range(0, 1).problem(float("nan")) is not None
    assert Range(0, 1).problem(True) is not None
    assert Choice("a", "b").problem("c") == "one of 'a', 'b'"
    trials = ListOf(Range(0, integer=True), unique=True)
    assert trials.problem([]) is not None and trials.problem([1, 1]) is not None
    assert trials.problem([0, 2]) is None and "'x' is not" in trials.problem([0, "x"])
    grid = MappingOf(Choice("varied", "frozen"), ListOf(Range(1, 5, integer=True)))
    assert grid.problem({"varied": [3]}) is None
    assert "key 'nope'" in grid.problem({"nope": [3]})
    assert "value of 'varied'" in grid.problem({"varied": [9]})


def test_device_must_exist_here():
    assert Device().problem("auto") is None and Device().problem("cpu") is None
    assert "'auto', 'cpu', 'cuda'" in Device().problem("tpu")
    if not torch.cuda.is_available():
        assert "no CUDA GPU" in Device().problem("cuda")
        assert "no CUDA GPU" in Device().problem("cuda:1")


def test_dataset_names_come_from_the_registry():
    assert DatasetName().problem("synth-lab") is None
    assert "ckplus" in DatasetName().problem("nosuch")
    assert DatasetName(("synth-lab",)).problem("ckplus") == "one of synth-lab"


@dataclass(frozen=True)
class Demo(ChapterSettings):
    epochs: int = param(3, POSITIVE_INT, "epochs")
    milestones: list[int] = param([1], ListOf(Range(1, integer=True)), "milestones")
    gamma: str | float = param("best", None, "a gamma or 'best'")

    RELATIONS = (relation(("milestones", "epochs"), lambda v: max(v["milestones"]) <= v["epochs"],
                          lambda v: f"milestones {v['milestones']} beyond epochs"),)


def test_settings_report_every_problem_at_once():
    with pytest.raises(ParameterError) as err:
        Demo.check({"epochs": 0, "milestones": [0]})
    text = str(err.value)
    assert "epochs = 0: must be an integer >= 1" in text
    assert "milestones = [0]" in text and "beyond" not in text  # relation skipped
    with pytest.raises(ParameterError, match="milestones \\[9\\] beyond epochs"):
        Demo.check({"epochs": 3, "milestones": [9]})
    assert Demo.problems({"epochs": 3.0, "gamma": [1]}) == [
        "epochs = 3.0: must be of type int", "gamma = [1]: must be of type str | float"]
    settings = Demo.from_notebook({"epochs": 3, "milestones": [3], "gamma": 1.5, "seed": 0,
                                   "precision": "fp32", "device": "cpu", "np": object()})
    assert settings.epochs == 3 and settings.changed() == {
        "milestones": [3], "gamma": 1.5, "precision": "fp32", "device": "cpu"}
    with pytest.raises(ParameterError, match="does not define \\['gamma', 'seed'"):
        Demo.from_notebook({"epochs": 3, "milestones": [3]})


def test_command_line_strings_are_read_by_the_declared_type():
    assert Demo.given({"epochs": "4", "milestones": "[1, 2]", "gamma": "1.4",
                       "device": "cpu"}) == {"epochs": 4, "milestones": [1, 2], "gamma": 1.4,
                                             "device": "cpu"}
    assert Demo.given({"gamma": "best"}) == {"gamma": "best"}
    with pytest.raises(ParameterError, match=r"(?s)unknown parameter\(s\) \['epoch'\] in x.yaml.*"
                                             r"epochs = 3  # epochs"):
        Demo.given({"epoch": 4}, source="x.yaml")


def test_a_parameter_declared_once_reaches_every_check(tmp_path):
    """A new parameter added to the declaration is in the notebook's cell, in the first-cell
    check, in `fernb params` and in what a profile may set."""
    import nbformat
    root = tmp_path
    (root / "notebooks").mkdir()
    (root / "book" / "profiles").mkdir(parents=True)
    (root / "_config.yml").write_text("title: demo\n")
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    nb.metadata["fernb"] = {"settings": "test_params:Demo"}
    path = root / "notebooks" / "00_demo.ipynb"
    nbformat.write(nb, path)
    assert chapters.write_parameters_cell(path)
    source = nbformat.read(path, as_version=4).cells[0].source
    assert 'gamma = "best"' in source and "results_dir" in source and "store_dir" in source
    namespace: dict = {}
    exec(source, namespace)
    assert Demo.from_notebook(namespace).gamma == "best"
    assert "gamma" in chapters.parameters_table("00_demo", root)
    (root / "book" / "profiles" / "smoke.yaml").write_text("00_demo: {gamma: 2.0}\n")
    chapters.validate_profile("smoke", root)
    assert chapters.prepare("00_demo", profile="smoke", root=root)[2]["gamma"] == 2.0
    (root / "book" / "profiles" / "smoke.yaml").write_text("00_demo: {gamm: 2.0}\n")
    with pytest.raises(ParameterError, match="gamm"):
        chapters.validate_profile("smoke", root)


@pytest.mark.parametrize("name, value, expected", [
    ("image_size", "7", r"image_size = 7: must be an integer in 48\.\.224"),
    ("epochs", "0", r"epochs = 0: must be an integer >= 1"),
    ("device", "tpu", r"device = 'tpu': must be 'auto', 'cpu', 'cuda'"),
    ("dataset", "nosuch", r"dataset = 'nosuch': must be one of ckplus"),
    ("trials", "[]", r"trials = \[\]: must be a list of at least 1"),
    ("trials", "[7]", r"trials = \[7\]: a trial is a test fold, so each must be in 0\.\.5"),
    ("milestones", "[1, 11]", r"milestones = \[1, 11\] .* 1\.\.epochs \(10\)"),
    ("n_train_folds", "5", r"n_train_folds = 5 leaves no test and validation fold"),
    ("saliency_run", "[frozen, 4]", r"saliency_run = \['frozen', 4\] must be"),
    ("data_root", "/tmp", r"data_root = '/tmp' is not used by dataset = 'synth-lab'"),
    ("grid", "{fixed: [0]}", r"grid = \{'fixed': \[0\]\}: must be a mapping"),
])
def test_esr_chapter_rejects_bad_values_before_the_kernel(name, value, expected, tmp_path,
                                                          monkeypatch):
    started = []
    monkeypatch.setattr(runner.papermill, "execute_notebook",
                        lambda *a, **k: started.append(1))
    with pytest.raises(ParameterError, match=expected):
        runner.run_notebook("01_esr", profile="cpu", overrides={name: value}, root=ROOT,
                            output_dir=tmp_path / "res")
    assert not started and not (tmp_path / "res").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_on_a_machine_without_a_gpu(tmp_path):
    with pytest.raises(ParameterError, match="device = 'cuda': must be a device this machine "
                                             "has: it has no CUDA GPU"):
        runner.prepare("01_esr", overrides={"device": "cuda"}, root=ROOT)


def test_a_parameter_the_dataset_does_not_use_is_an_error(tmp_path):
    from fixtures import write_ckplus
    root = write_ckplus(tmp_path / "CK+", n_subjects=4, n_sequences=2, n_frames=4)
    with pytest.raises(ParameterError, match="n_subjects is not used: dataset = 'ckplus' is "
                                             "read from disk"):
        runner.prepare("01_esr", overrides={"dataset": "ckplus", "data_root": str(root),
                                            "n_subjects": "20"}, root=ROOT)
    runner.prepare("01_esr", overrides={"dataset": "ckplus", "data_root": str(root)},
                   root=ROOT)


def test_a_real_dataset_needs_its_folder():
    with pytest.raises(ParameterError, match="dataset = 'ckplus' needs its folder: add -p "
                                             "data_root"):
        runner.prepare("01_esr", overrides={"dataset": "ckplus"}, root=ROOT)


def test_cli_names_the_parameter(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert cli.main(["run", "01_esr", "-p", "epochs", "0"]) == 2
    err = capsys.readouterr().err
    assert "epochs = 0" in err and "Traceback" not in err


@pytest.mark.parametrize("profile", [p for p in chapters.PROFILES
                                     if p == "cpu" or (ROOT / "book" / "profiles" /
                                                       f"{p}.yaml").exists()])
def test_every_profile_passes_the_value_checks(profile):
    chapters.validate_profile(profile, ROOT)


def test_the_folder_dataset_is_checked_before_the_kernel(tmp_path):
    from fernb.data.synthetic import export, generate
    out = export(generate("synth-lab", n_subjects=6, size=48), tmp_path / "mine")
    runner.prepare("01_esr", overrides={"dataset": "folder", "data_root": str(out)}, root=ROOT)
    (out / "labels.csv").unlink()
    with pytest.raises(ParameterError, match="missing labels.csv"):
        runner.prepare("01_esr", overrides={"dataset": "folder", "data_root": str(out)},
                       root=ROOT)
