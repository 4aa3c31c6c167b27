"""The course edition: the method exercises grade the reference solution full marks and a
wrong one less, the student release holds no solution, the install cell installs only where
fernb is missing, and the syllabus's tables come from one declaration."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from fernb import chapters, cli
from fernb.course import grade, launch, markers, release, schedule

ROOT = Path(__file__).resolve().parent.parent
EXERCISES = schedule.exercise_names(ROOT)


def _exercise(name: str) -> nbformat.NotebookNode:
    return nbformat.read(ROOT / schedule.EXERCISES_DIR / f"{name}.ipynb", as_version=4)


def _with_answer(nb: nbformat.NotebookNode, answers: dict[str, str]) -> nbformat.NotebookNode:
    """A submission: the student's copy with every answer cell written, the given ones'
    solution regions with the given code and every other one with the reference."""
    submission = markers.student_notebook(nb)
    source = {markers.grade_id(c): c for c in nb.cells}
    for cell in submission.cells:
        gid = markers.grade_id(cell)
        if markers.is_solution(cell) and cell.cell_type == "code":
            cell.source = (_fill(source[gid].source, answers[gid]) if gid in answers
                           else source[gid].source)
    return submission


def _fill(reference: str, body: str) -> str:
    """The reference cell with its (single) solution region's body replaced."""
    head, rest = reference.split("### BEGIN SOLUTION\n", 1)
    _, tail = rest.split("### END SOLUTION", 1)
    indent = head.rsplit("\n", 1)[-1]
    lines = [indent + line if line else line for line in body.strip("\n").split("\n")]
    return f"{head}### BEGIN SOLUTION\n" + "\n".join(lines) + f"\n{indent}### END SOLUTION{tail}"


def _grades(submission: nbformat.NotebookNode, name: str) -> dict[str, grade.CellGrade]:
    nb = grade.run_in_process(grade.assemble(submission, _exercise(name)))
    return {g.grade_id: g for g in grade.score(nb)}


# ------------------------------------------------------------------ the exercise notebooks

def test_every_paper_has_a_method_exercise() -> None:
    chapters_covered = {_exercise(n).metadata["fernb"]["exercise"]["chapter"] for n in EXERCISES}
    assert chapters_covered == set(chapters.notebook_names(ROOT)) - {"00_data"}


@pytest.mark.parametrize("name", EXERCISES)
def test_exercise_notebook_is_a_clean_nbgrader_source(name: str) -> None:
    nb = _exercise(name)
    markers.check_metadata(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert nb.metadata["fernb"]["exercise"]["name"] == name
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert launch.has_current_install_cell(nb, ROOT), f"run `fernb course install-cell --all`"
    answers = [c for c in nb.cells if markers.is_solution(c) and c.cell_type == "code"]
    tests = [c for c in nb.cells if markers.is_autograded_test(c)]
    assert answers and all(markers.BEGIN_SOLUTION in c.source for c in answers)
    hidden = [c for c in tests if markers.BEGIN_HIDDEN in c.source]
    assert hidden and len(hidden) < len(tests), "visible and hidden tests both"
    assert any(markers.is_manual(c) for c in nb.cells), "a written question"


@pytest.mark.parametrize("name", EXERCISES)
def test_the_reference_solution_earns_every_point_and_the_blank_none(name: str) -> None:
    nb = _exercise(name)
    reference = _grades(nb, name)
    assert {k: g.error for k, g in reference.items() if g.score == 0} == {}
    auto = [g for g in reference.values() if g.score is not None]
    assert sum(g.score for g in auto) == sum(g.points for g in auto) > 0
    blank = _grades(markers.student_notebook(nb), name)
    assert sum(g.score or 0 for g in blank.values()) == 0


# A plausible mistake per exercise and the test cells that must catch it. Some pass every
# visible test and fail only a hidden one.
WRONG = {
    "01_esr_shared_base": [
        ("esr-network", '''
chans = [in_chans] + [out for out, _, _, _ in LAYERS]
blocks = [conv_block(chans[i], out, k, p, pool) for i, (out, k, p, pool) in enumerate(LAYERS)]
self.base = nn.Sequential(*blocks[:level])
self.branches = [nn.Sequential(*[conv_block(chans[i], out, k, p, pool)
                                 for i, (out, k, p, pool) in enumerate(LAYERS)][level:],
                               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, n_classes))
                 for _ in range(n_branches)]  # a plain list, as the authors' code
''', {"esr-table-1", "esr-forward", "esr-against-fernb"}),
        ("esr-network", '''
chans = [1] + [out for out, _, _, _ in LAYERS]  # ignores in_chans and n_classes
blocks = lambda a, b: [conv_block(chans[i], out, k, p, pool)
                       for i, (out, k, p, pool) in enumerate(LAYERS[a:b], a)]
self.base = nn.Sequential(*blocks(0, level))
self.branches = nn.ModuleList(nn.Sequential(*blocks(level, 5), nn.AdaptiveAvgPool2d(1),
                                            nn.Flatten(), nn.Linear(64, 8))
                              for _ in range(n_branches))
''', {"esr-against-fernb"}),
    ],
    "02_relevance_losses": [
        ("sparsity", "return maps.flatten(1).mean(1)  # no absolute value",
         {"sparsity-by-hand", "sparsity-against-fernb"}),
        ("contiguity", '''
m, n = maps.shape[-2:]  # torch.roll wraps around the border
down = (torch.roll(maps, 1, dims=-2) - maps).abs().flatten(1).sum(1)
right = (torch.roll(maps, 1, dims=-1) - maps).abs().flatten(1).sum(1)
return (down + right) / (m * n)
''', {"contiguity-by-hand", "contiguity-against-fernb"}),
        ("target-map", '''
h, w = size  # sums the Gaussians instead of taking their maximum
rows, cols = np.mgrid[0:h, 0:w]
x, y = points[:, 0, None, None], points[:, 1, None, None]
return np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * sigma**2)).sum(axis=0)
''', {"target-map-by-hand", "target-map-against-fernb"}),
    ],
    "03_landmarks_and_flops": [
        ("part-targets", '''
h, w = size  # divides x by the height and y by the width
selected = np.asarray(points, dtype=np.float32)[:, list(LANDMARK_SETS[part])]
return (selected / np.array([h, w], dtype=np.float32)).reshape(len(selected), -1)
''', {"part-targets-by-hand", "part-targets-against-fernb"}),
        ("model-flops", '''
counts = []  # the model is left in eval mode
hook = lambda m, i, o: counts.append(
    2 * m.weight[0].numel() * o[0].numel() if isinstance(m, nn.Conv2d)
    else 2 * m.in_features * o[0].numel() if isinstance(m, nn.Linear) else o[0].numel())
handles = [m.register_forward_hook(hook) for m in model.modules()
           if isinstance(m, (nn.Conv2d, nn.Linear, nn.MaxPool2d))]
model.eval()
with torch.no_grad():
    model(torch.zeros(1, *input_shape))
for h in handles:
    h.remove()
return sum(counts)
''', {"model-flops-against-fernb"}),
    ],
    "04_soft_labels": [
        ("construct", '''
probs, labels = np.asarray(probs, dtype=float), np.asarray(labels)
means = np.stack([probs[labels == j].mean(axis=0) for j in range(n_classes)])
return means / means.sum(axis=0, keepdims=True)  # columns, not rows
''', {"construct-by-hand", "construct-against-fernb"}),
        ("perturb", "return np.asarray(d, dtype=float) ** gamma  # not renormalised",
         {"perturb-by-hand", "perturb-against-fernb"}),
    ],
    "05_top_two_voting": [
        ("decide", "return t2v_votes(logits, alpha, beta).sum(axis=1).argmax(axis=1)",
         {"decide-by-hand"}),
        ("eq11", '''
c = np.asarray(logits).shape[-1]
s = descending_ranks(logits)  # the descending ranks eq. (10) calls S
return (alpha - 2 * beta) * np.maximum(s + 2 - c, 0) + beta * np.maximum(s + 3 - c, 0)
''', {"eq11-by-hand", "eq11-against-fernb"}),
    ],
}


def test_every_exercise_has_wrong_solutions() -> None:
    assert set(WRONG) == set(EXERCISES)


@pytest.mark.parametrize("name, answer, code, failing", [
    (name, answer, code, failing) for name, cases in WRONG.items()
    for answer, code, failing in cases])
def test_a_wrong_solution_loses_the_points_of_the_tests_that_catch_it(
        name: str, answer: str, code: str, failing: set[str]) -> None:
    grades = _grades(_with_answer(_exercise(name), {answer: code}), name)
    failed = {k for k, g in grades.items() if g.score == 0 and g.points}
    assert failed == failing, {k: grades[k].error for k in failed ^ failing}
    assert sum(g.score or 0 for g in grades.values()) < sum(
        g.points for g in grades.values() if g.score is not None)


def test_grading_restores_tests_the_student_changed_or_deleted() -> None:
    source = _exercise("04_soft_labels")
    submission = _with_answer(source, {"perturb": "return np.asarray(d, dtype=float)"})
    for cell in submission.cells:
        if markers.grade_id(cell) == "perturb-by-hand":
            cell.source = "pass  # no test, no failure"
    submission.cells = [c for c in submission.cells
                        if markers.grade_id(c) != "perturb-against-fernb"]
    assembled = grade.assemble(submission, source)
    ids = [markers.grade_id(c) for c in assembled.cells]
    assert ids.index("perturb-against-fernb") == ids.index("perturb-by-hand") + 1
    grades = {g.grade_id: g for g in grade.score(grade.run_in_process(assembled))}
    assert grades["perturb-by-hand"].score == 0 and grades["perturb-against-fernb"].score == 0
    assert grades["construct-against-fernb"].score == 2  # hidden tests put back, and run


def test_a_test_cell_that_writes_to_stderr_earns_nothing() -> None:
    nb = nbformat.v4.new_notebook()
    ok, warns = (nbformat.v4.new_code_cell(s) for s in (
        "x = 1", "import sys\nprint('careful', file=sys.stderr)"))
    ok.metadata["nbgrader"] = markers.cell_metadata("tests", "ok", 1)
    warns.metadata["nbgrader"] = markers.cell_metadata("tests", "warns", 2)
    nb.cells = [ok, warns]
    grades = grade.score(grade.run_in_process(nb))
    assert [(g.grade_id, g.score) for g in grades] == [("ok", 1), ("warns", 0)]
    assert "stderr" in grades[1].error


@pytest.mark.notebook
def test_fernb_course_grade_runs_submissions_in_a_kernel(tmp_path: Path, capsys) -> None:
    """The command an instructor runs: one student right, one wrong on a part."""
    name = "02_relevance_losses"
    (tmp_path / "submitted" / "ann").mkdir(parents=True)
    (tmp_path / "submitted" / "bob").mkdir(parents=True)
    nbformat.write(_with_answer(_exercise(name), {}),
                   tmp_path / "submitted" / "ann" / f"{name}.ipynb")
    wrong = _with_answer(_exercise(name), {"sparsity": "return maps.flatten(1).mean(1)"})
    nbformat.write(wrong, tmp_path / "submitted" / "bob" / f"{name}.ipynb")
    out = tmp_path / "graded"
    assert cli.main(["course", "grade", str(tmp_path / "submitted"), "--out", str(out)]) == 0
    rows = (out / "grades.csv").read_text().splitlines()
    assert rows[0] == "submission,exercise,cell,points,score,error"
    scores = {}
    for student in ("ann", "bob"):
        graded = nbformat.read(out / f"{student}__{name}.graded.ipynb", as_version=4)
        scores[student] = {g["grade_id"]: g["score"] for g in graded.metadata["fernb"]["grades"]}
    assert sum(v for v in scores["ann"].values() if v is not None) == 10
    assert scores["bob"]["sparsity-by-hand"] == 0 and scores["bob"]["sparsity-against-fernb"] == 0
    assert scores["bob"]["contiguity-against-fernb"] == 2
    assert scores["ann"]["relevance-written"] is None  # marked by hand
    assert "7 / 10 autograded" in capsys.readouterr().out


# ------------------------------------------------------------------------------ markers

def _cell(source: str, kind: str = "answer", cell_type: str = "code") -> dict:
    cell = (nbformat.v4.new_code_cell if cell_type == "code" else
            nbformat.v4.new_markdown_cell)(source)
    cell.metadata["nbgrader"] = markers.cell_metadata(kind, "q1", 1 if kind in (
        "tests", "written") else None)
    return cell


def test_solution_regions_become_nbgraders_stub_indented_like_their_marker() -> None:
    cell = _cell("def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION\n"
                 "\n\ndef g():\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION")
    markers.clear_solution(cell)
    assert cell.source == ("def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"
                           "\n\ndef g():\n    # YOUR CODE HERE\n    raise NotImplementedError()")
    whole = _cell("answer = 42")
    markers.clear_solution(whole)
    assert whole.source == markers.CODE_STUB
    written = _cell("The answer is 42.", "written", "markdown")
    markers.clear_solution(written)
    assert written.source == "YOUR ANSWER HERE"
    plain = nbformat.v4.new_code_cell("x = 1")
    markers.clear_solution(plain)
    assert plain.source == "x = 1"


def test_checksums_and_locks_are_nbgraders() -> None:
    """Values from nbgrader 0.9.6's ``compute_checksum`` on the same cells, so nbgrader's
    validate and autograde accept the student release's notebooks as their own."""
    tests = _cell("assert f(2) == 4", "tests")
    tests.metadata["nbgrader"].update(grade_id="q1-tests", points=3)
    written = _cell("YOUR ANSWER HERE", "written", "markdown")
    written.metadata["nbgrader"].update(grade_id="q1-written", points=2)
    assert markers.checksum(tests) == "b05d92d6f0e3e1ec35aac9d8e449412d"
    assert markers.checksum(written) == "cc6c8ddb4b03754a64382c725dafc5b0"
    markers.lock(tests)
    markers.lock(written)
    assert (tests.metadata["deletable"], tests.metadata["editable"]) == (False, False)
    assert written.metadata["deletable"] is False and "editable" not in written.metadata
    assert tests.metadata["nbgrader"]["cell_type"] == "code"
    plain = nbformat.v4.new_code_cell("x = 1")
    markers.lock(plain)
    assert plain.metadata == {}


def test_hidden_tests_leave_the_students_copy() -> None:
    cell = _cell("assert f(1) == 2\n### BEGIN HIDDEN TESTS\nassert f(3) == 6\n"
                 "### END HIDDEN TESTS\nassert f(0) == 0", "tests")
    markers.clear_hidden_tests(cell)
    assert cell.source == "assert f(1) == 2\nassert f(0) == 0"


@pytest.mark.parametrize("source, message", [
    ("### BEGIN SOLUTION\nx = 1", "without"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "nested"),
    ("### END SOLUTION", "without"),
])
def test_unbalanced_markers_are_refused(source: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        markers.clear_solution(_cell(source))


def test_the_metadata_checks_nbgrader_makes() -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [_cell("x = 1"), _cell("y = 2")]
    with pytest.raises(ValueError, match="duplicate grade_id"):
        markers.check_metadata(nb)
    nb.cells = [nbformat.v4.new_code_cell("### BEGIN SOLUTION\nx\n### END SOLUTION")]
    with pytest.raises(ValueError, match="outside an answer cell"):
        markers.check_metadata(nb)
    nb.cells = [_cell("### BEGIN HIDDEN TESTS\nx\n### END HIDDEN TESTS")]
    with pytest.raises(ValueError, match="hidden tests outside a test cell"):
        markers.check_metadata(nb)
    tests = _cell("assert True", "tests")
    del tests.metadata["nbgrader"]["points"]
    nb.cells = [tests]
    with pytest.raises(ValueError, match="needs points"):
        markers.check_metadata(nb)
    with pytest.raises(ValueError, match="grade_id"):
        markers.cell_metadata("answer", "has space")


CHAPTER_MARKDOWN = """## Exercises

```{exercise}
:label: ex-a

Predict, then run.
```

```{solution} ex-a
:class: dropdown

The answer is a secret.

    fernb run 01_esr -p epochs 3
```

````{solution} ex-b
A fenced block inside:
```python
print("also secret")
```
````

:::{solution} ex-c
colon-fenced secret
:::

```{solution-start} ex-d
```
gated secret
```{solution-end}
```

`````{exercise}
:label: ex-e

A question.

````{solution} ex-e
nested secret
````
`````

After the exercises."""


def test_solution_directives_of_every_fence_leave_the_chapter() -> None:
    texts = markers.solution_directives(CHAPTER_MARKDOWN)
    assert len(texts) == 5 and "print(\"also secret\")" in texts[1]
    student = markers.remove_solution_directives(CHAPTER_MARKDOWN)
    assert "secret" not in student and "{solution" not in student
    assert "Predict, then run." in student and "A question." in student
    assert student.endswith("After the exercises.")
    assert markers.remove_solution_directives("no directive") == "no directive"
    with pytest.raises(ValueError, match="solution-end"):
        markers.remove_solution_directives("```{solution-start} x\n```\nsecret")


# ------------------------------------------------------------------------------ releases

@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both releases built from a clean checkout: the files git tracks, as they are in the
    working tree, and nothing a build left behind (results, _build)."""
    base = tmp_path_factory.mktemp("releases")
    checkout = base / "checkout"
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], check=True,
                             capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, checkout / name)
    release.build_student(base / "student", checkout)
    release.build_instructor(base / "instructor", checkout)
    return {"student": base / "student", "instructor": base / "instructor"}


def test_the_student_release_holds_no_solution(releases: dict[str, Path]) -> None:
    assert release.find_leaks(releases["student"], ROOT) == []


def test_the_check_finds_every_solution_in_the_instructor_release(
        releases: dict[str, Path]) -> None:
    """So the check above can fail: every solution, hidden test and chapter solution has
    text of its own, and the check finds each in the release that holds it."""
    secrets = release.secrets(ROOT)
    kinds = {s.kind for s in secrets}
    assert kinds == {"solution", "hidden tests", "written answer", "chapter solution"}
    visible = release.visible_text(ROOT)
    assert [s.where for s in secrets if not release.fingerprints(s, visible)] == []
    found = {(leak.secret.where, leak.secret.text) for leak in
             release.find_leaks(releases["instructor"], ROOT)}
    assert found == {(s.where, s.text) for s in secrets}


def test_the_student_release_holds_blanks_visible_tests_and_clean_chapters(
        releases: dict[str, Path]) -> None:
    student = releases["student"]
    assert json.loads((student / release.STAMP).read_text())["edition"] == "student"
    assert sorted(p.stem for p in (student / "exercises").glob("*.ipynb")) == EXERCISES
    for name in EXERCISES:
        nb = nbformat.read(student / "exercises" / f"{name}.ipynb", as_version=4)
        text = "\n".join(c.source for c in nb.cells)
        assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
        assert text.count("raise NotImplementedError()") >= 2
        assert launch.has_current_install_cell(nb, ROOT)
        for cell, source in zip(nb.cells, _exercise(name).cells):
            meta = dict(markers.nbgrader(cell))
            assert meta.pop("checksum", None) == (markers.checksum(cell) if meta else None)
            assert meta.pop("cell_type", cell.cell_type) == cell.cell_type
            assert meta == markers.nbgrader(source), "nbgrader metadata kept"
            if markers.is_locked(cell):
                assert cell.metadata["editable"] is False, "tests cannot be edited"
    for name in chapters.notebook_names(ROOT):
        text = (student / "notebooks" / f"{name}.ipynb").read_text()
        assert "{solution" not in text, name
    assert (student / "course.md").read_text() == (ROOT / "book" / "course.md").read_text()
    assert not (student / "html").exists()  # the book was not built here


def test_the_instructor_release_is_an_nbgrader_course_folder(releases: dict[str, Path]) -> None:
    instructor = releases["instructor"]
    for name in EXERCISES:
        assert (instructor / "source" / name / f"{name}.ipynb").read_text() == \
            (ROOT / schedule.EXERCISES_DIR / f"{name}.ipynb").read_text()
    assert "CourseDirectory" in (instructor / "nbgrader_config.py").read_text()
    readme = (instructor / "README.md").read_text()
    assert "fernb course grade submitted/ --source source/" in readme
    links = (instructor / "LAUNCH.md").read_text()
    for path in [*release.chapter_paths(ROOT), *release.exercise_paths(ROOT)]:
        assert launch.colab_url(str(path.relative_to(ROOT)), ROOT) in links
        assert launch.kaggle_url(str(path.relative_to(ROOT)), ROOT) in links


def _small_root(tmp_path: Path) -> Path:
    """A project with the real exercises and one chapter, for building releases with HTML."""
    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    shutil.copytree(ROOT / schedule.EXERCISES_DIR, root / schedule.EXERCISES_DIR)
    shutil.copy(ROOT / "notebooks" / "02_relevance_maps.ipynb", root / "notebooks")
    (root / "book").mkdir()
    shutil.copy(ROOT / "book" / "course.md", root / "book")
    shutil.copy(ROOT / "_config.yml", root)
    return root


def test_the_student_html_is_copied_and_checked(tmp_path: Path) -> None:
    root = _small_root(tmp_path)
    html = root / release.STUDENT_HTML
    html.mkdir(parents=True)
    (html / "index.html").write_text("<html><body><p>The book.</p></body></html>")
    built = release.build_student(tmp_path / "out", root)
    assert built.html == html and (tmp_path / "out" / "html" / "index.html").is_file()
    assert release.find_leaks(tmp_path / "out", root) == []
    # A solution in the HTML, split by markup and entities, is still found.
    secret = next(s for s in release.secrets(root) if s.kind == "chapter solution")
    words = secret.text.split("\n", 3)[-1].split()
    marked = " ".join(f"<span class=\"w\">{w.replace('&', '&amp;')}</span>" for w in words)
    (tmp_path / "out" / "html" / "page.html").write_text(f"<p>{marked}</p>")
    assert {leak.file.name for leak in release.find_leaks(tmp_path / "out", root)} == \
        {"page.html"}


def test_a_release_replaces_only_an_earlier_release(tmp_path: Path) -> None:
    root = _small_root(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        release.build_student(tmp_path / "mine", root)
    assert (tmp_path / "mine" / "notes.txt").exists()
    release.build_student(tmp_path / "again", root)
    release.build_instructor(tmp_path / "again", root)
    assert json.loads((tmp_path / "again" / release.STAMP).read_text())["edition"] == \
        "instructor"
    assert not (tmp_path / "again" / "exercises").exists()


def test_the_course_commands(tmp_path: Path, capsys, monkeypatch) -> None:
    root = _small_root(tmp_path)
    monkeypatch.chdir(root)
    assert cli.main(["course", "build", "--student", str(tmp_path / "s")]) == 0
    assert cli.main(["course", "check", str(tmp_path / "s")]) == 0
    assert cli.main(["course", "build", "--instructor", str(tmp_path / "i")]) == 0
    assert cli.main(["course", "check", str(tmp_path / "i")]) == 1
    assert cli.main(["course", "build", "--student", str(tmp_path / "s"), "--launch-from",
                     "https://github.com/a-school/fer-course"]) == 0
    links = (tmp_path / "s" / "LAUNCH.md").read_text()
    assert ("https://colab.research.google.com/github/a-school/fer-course/blob/main/"
            "exercises/01_esr_shared_base.ipynb") in links
    assert "solution(s) found" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["course", "build", "--student", "a", "--instructor", "b"])


def test_the_book_shows_each_exercise_as_students_get_it(tmp_path: Path) -> None:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    course = next(p for p in toc["parts"] if p["caption"] == "Course")
    files = [c["file"] for c in course["chapters"]]
    assert files == ["book/course", *(f"{release.BOOK_PAGES}/{n}" for n in EXERCISES)]
    root = _small_root(tmp_path)
    pages = release.publish_book_pages(root)
    assert [p.stem for p in pages] == EXERCISES
    for page in pages:
        nb = nbformat.read(page, as_version=4)
        assert nb.cells == release.student_exercise(
            root / schedule.EXERCISES_DIR / page.name).cells
        assert "remove-cell" in next(c for c in nb.cells if c.cell_type == "code"
                                     ).metadata["tags"]


# -------------------------------------------------------------------- install cell, links

def test_the_install_cell_does_nothing_where_fernb_is_installed(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    exec(launch.install_cell(ROOT).source, {})
    assert calls == []


def test_the_install_cell_installs_fernb_from_the_books_repository(monkeypatch) -> None:
    import importlib.util
    calls = []
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "fernb" else real(name, *a))
    monkeypatch.setattr(subprocess, "run", lambda args, **kw: calls.append((args, kw)))
    exec(launch.install_cell(ROOT).source, {})
    config = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    assert calls == [([sys.executable, "-m", "pip", "install", "--quiet",
                       f"fernb @ git+{config['url']}@{config['branch']}"], {"check": True})]


def _without_install_cell(name: str, tmp_path: Path) -> Path:
    """A copy of a chapter as it was before it had an install cell."""
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    nb.cells = [c for c in nb.cells if launch.INSTALL_TAG not in c.metadata.get("tags", [])]
    path = tmp_path / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def test_the_install_cell_goes_first_into_a_chapter_once(tmp_path: Path) -> None:
    import papermill
    path = _without_install_cell("01_esr", tmp_path)
    before = nbformat.read(path, as_version=4)
    assert launch.insert_install_cell(path, ROOT)
    after = nbformat.read(path, as_version=4)
    code = [c for c in after.cells if c.cell_type == "code"]
    assert launch.INSTALL_TAG in code[0].metadata["tags"] and len(after.cells) == \
        len(before.cells) + 1
    assert [c.source for c in after.cells if launch.INSTALL_TAG not in
            c.metadata.get("tags", [])] == [c.source for c in before.cells]
    assert papermill.inspect_notebook(str(path)) == papermill.inspect_notebook(
        str(ROOT / "notebooks" / "01_esr.ipynb"))
    assert not launch.insert_install_cell(path, ROOT)  # already current
    stale = nbformat.read(path, as_version=4)
    stale.cells[[c.cell_type for c in stale.cells].index("code")].source = "# an old one"
    nbformat.write(stale, path)
    assert launch.insert_install_cell(path, ROOT)
    again = nbformat.read(path, as_version=4)
    assert len(again.cells) == len(after.cells) and launch.has_current_install_cell(again, ROOT)


def test_the_install_cell_command(tmp_path: Path, capsys) -> None:
    path = _without_install_cell("00_data", tmp_path)
    assert cli.main(["course", "install-cell", "--check", str(path)]) == 1
    assert cli.main(["course", "install-cell", str(path)]) == 0
    assert cli.main(["course", "install-cell", "--check", str(path)]) == 0
    assert "install cell written" in capsys.readouterr().out


def test_colab_and_kaggle_links_come_from_the_repository_in_config() -> None:
    url, branch = launch.repository(ROOT)
    owner_name = url.removeprefix("https://github.com/")
    assert launch.colab_url("notebooks/01_esr.ipynb", ROOT) == (
        f"https://colab.research.google.com/github/{owner_name}/blob/{branch}/"
        f"notebooks/01_esr.ipynb")
    assert launch.kaggle_url("notebooks/01_esr.ipynb", ROOT) == (
        f"https://kaggle.com/kernels/welcome?src=https://github.com/{owner_name}/blob/"
        f"{branch}/notebooks/01_esr.ipynb")
    with pytest.raises(ValueError, match="GitHub"):
        launch.colab_url("x.ipynb", repo=("https://gitlab.com/a/b", "main"))


@pytest.mark.parametrize("name", chapters.notebook_names(ROOT))
def test_every_chapter_opens_with_the_install_cell(name: str) -> None:
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    assert launch.has_current_install_cell(nb, ROOT)


@pytest.mark.parametrize("name", chapters.notebook_names(ROOT))
def test_every_chapter_cites_its_time_estimate_from_the_schedule(name: str) -> None:
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    objectives = [c.source for c in nb.cells
                  if c.cell_type == "markdown" and "objectives" in c.source.lower()]
    assert objectives and all("{glue:text}`study_minutes`" in text for text in objectives)


# ------------------------------------------------------------------------------ syllabus

def test_the_course_page_tables_are_written_from_the_schedule() -> None:
    """`fernb course page --write` rewrites them."""
    text = (ROOT / "book" / "course.md").read_text()
    assert schedule.course_page(ROOT) == text
    assert all(f"% fernb:begin {name}" in text for name in schedule.BLOCKS)


def test_twelve_meetings_cover_every_chapter_and_exercise_as_declared() -> None:
    assert [m.number for m in schedule.MEETINGS] == list(range(1, 13))
    assert list(schedule.CHAPTER_TIMES) == chapters.notebook_names(ROOT)
    for chapter, time in schedule.CHAPTER_TIMES.items():
        assert sum(m.chapter == chapter for m in schedule.MEETINGS) == time.meetings, chapter
    graded = [g.exercise for m in schedule.MEETINGS for g in m.graded if g.exercise]
    assert sorted(graded) == EXERCISES
    assert all(m.graded for m in schedule.MEETINGS)
    assert schedule.highlights("01_esr") == {"study_minutes": 90, "course_meetings": 2,
                                             "course_minutes": 180}
    with pytest.raises(KeyError, match="99_none"):
        schedule.highlights("99_none")
