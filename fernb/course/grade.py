"""Grading a submitted exercise notebook as ``nbgrader autograde`` does.

The graded notebook is the submission with every test and read-only cell put back from the
exercise's source notebook (the instructor's copy, hidden tests included), matched by
``grade_id``; a cell the student deleted goes back after the cell that preceded it in the
source. The notebook runs top to bottom, continuing past errors; a test cell earns its
points when it ran without an error and wrote nothing to stderr, nbgrader's rule. Written
answers are listed with their points, for the instructor to mark with the syllabus's rubric.

Grading runs the student's code: do it in a container or an account that holds nothing else
(the same advice as for nbgrader).
"""
from __future__ import annotations

import contextlib
import copy
import io
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fernb.course import markers


@dataclass(frozen=True)
class CellGrade:
    grade_id: str
    points: float
    score: float | None  # None: a written answer, marked by hand
    error: str = ""


@dataclass
class Grade:
    """The grades of one submission."""

    submission: Path
    exercise: str
    cells: list[CellGrade] = field(default_factory=list)
    notebook: Any = None

    @property
    def score(self) -> float:
        return sum(c.score or 0 for c in self.cells)

    @property
    def autograded_points(self) -> float:
        return sum(c.points for c in self.cells if c.score is not None)

    @property
    def written_points(self) -> float:
        return sum(c.points for c in self.cells if c.score is None)

    def rows(self) -> list[dict[str, Any]]:
        return [{"submission": str(self.submission), "exercise": self.exercise,
                 "cell": c.grade_id, "points": c.points,
                 "score": "by hand" if c.score is None else c.score, "error": c.error}
                for c in self.cells]

    def summary(self) -> str:
        failed = [c.grade_id for c in self.cells if c.score == 0 and c.points]
        text = (f"{self.submission}: {self.exercise} {self.score:g} / "
                f"{self.autograded_points:g} autograded")
        if self.written_points:
            text += f", {self.written_points:g} written points to mark by hand"
        return text + (f"; failed: {', '.join(failed)}" if failed else "")


def exercise_of(nb: Any, path: Path) -> str:
    """The exercise a notebook belongs to: its metadata's name, else its file name."""
    return (nb.get("metadata", {}).get("fernb", {}).get("exercise", {}).get("name")
            or Path(path).stem)


def find_source(name: str, sources: Path) -> Path:
    """The source notebook ``name.ipynb`` in ``sources`` or any folder below it (an
    instructor release keeps nbgrader's ``source/<name>/<name>.ipynb``)."""
    found = sorted(p for p in Path(sources).rglob(f"{name}.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)
    if not found:
        raise FileNotFoundError(f"no source notebook {name}.ipynb under {sources}; give the "
                                f"exercises' folder with --source")
    return found[0]


def assemble(submission: Any, source: Any) -> Any:
    """The notebook to run: the submission with the source's test and read-only cells (hidden
    tests included) in place of the student's copies, and any the student deleted put back."""
    nb = copy.deepcopy(submission)
    locked = {markers.grade_id(c): c for c in source["cells"] if markers.is_locked(c)}
    for cell in nb["cells"]:
        gid = markers.grade_id(cell)
        if gid in locked and markers.is_locked(cell):
            original = copy.deepcopy(locked[gid])
            cell["cell_type"], cell["source"] = original["cell_type"], original["source"]
            cell["metadata"]["nbgrader"] = original["metadata"]["nbgrader"]
    present = {markers.grade_id(c) for c in nb["cells"]}
    order = [markers.grade_id(c) for c in source["cells"]]
    for index, cell in enumerate(source["cells"]):
        gid = markers.grade_id(cell)
        if gid is None or gid in present or not (markers.is_locked(cell) or
                                                 markers.is_grade(cell)):
            continue
        before = next((g for g in reversed(order[:index]) if g in present), None)
        at = 0 if before is None else next(
            i for i, c in enumerate(nb["cells"]) if markers.grade_id(c) == before) + 1
        nb["cells"].insert(at, copy.deepcopy(cell))
        present.add(gid)
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return nb


def run_in_kernel(nb: Any, cwd: Path, timeout: int = 600) -> Any:
    """Execute every code cell in a fresh ``python3`` kernel of this environment (nbclient),
    continuing past errors."""
    import nbformat
    from nbclient import NotebookClient

    from fernb.runner import KERNEL_ARGUMENTS, kernel_environment
    node = nbformat.from_dict(nb)
    client = NotebookClient(node, timeout=timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(cwd)}},
                            extra_arguments=KERNEL_ARGUMENTS)
    with kernel_environment():
        client.execute()
    return node


def run_in_process(nb: Any, cwd: Path | None = None) -> Any:
    """Execute every code cell in this process, in a fresh namespace, continuing past errors
    (fast, for tests; a kernel isolates the student's code, this does not)."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        out, err = io.StringIO(), io.StringIO()
        outputs = []
        where = contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), where:
            try:
                exec(compile(cell["source"], f"<cell {index}>", "exec"), namespace)
            except Exception as exc:  # the cell failed: record it as a kernel would
                outputs.append({"output_type": "error", "ename": type(exc).__name__,
                                "evalue": str(exc),
                                "traceback": traceback.format_exception(exc)})
        for name, stream in (("stdout", out), ("stderr", err)):
            if stream.getvalue():
                outputs.insert(0, {"output_type": "stream", "name": name,
                                   "text": stream.getvalue()})
        cell["outputs"] = outputs
    return nb


def failure(cell: Any) -> str:
    """Why a test cell earns nothing (nbgrader: an error, or anything on stderr); ''."""
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return f"{output.get('ename')}: {output.get('evalue')}"[:500]
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream" and output.get("name") == "stderr":
            return f"wrote to stderr: {''.join(output.get('text', ''))}"[:500]
    return ""


def score(nb: Any) -> list[CellGrade]:
    """Points of every graded cell of an executed notebook."""
    grades = []
    for cell in nb["cells"]:
        if not markers.is_grade(cell):
            continue
        gid, points = markers.grade_id(cell), markers.points(cell)
        if markers.is_manual(cell):
            grades.append(CellGrade(gid, points, None))
        else:
            why = failure(cell)
            grades.append(CellGrade(gid, points, 0.0 if why else points, why))
    return grades


def grade(submission: Path, sources: Path, *, timeout: int = 600) -> Grade:
    """Grade one submitted notebook against its source in ``sources``, in a kernel."""
    import nbformat
    submission = Path(submission)
    submitted = nbformat.read(submission, as_version=4)
    name = exercise_of(submitted, submission)
    source = nbformat.read(find_source(name, sources), as_version=4)
    nb = run_in_kernel(assemble(submitted, source), submission.parent.resolve(), timeout)
    result = Grade(submission, name, score(nb), nb)
    nb["metadata"].setdefault("fernb", {})["grades"] = [c.__dict__ for c in result.cells]
    return result


def submissions(paths: list[Path]) -> list[tuple[Path, str]]:
    """(notebook, label) for every notebook named and every notebook below a folder named;
    the label is the path below that folder (``alice__01_esr_shared_base`` for
    ``submitted/alice/01_esr_shared_base.ipynb``), so students' copies do not collide."""
    found: list[tuple[Path, str]] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += [(p, "__".join(p.relative_to(path).with_suffix("").parts))
                      for p in sorted(path.rglob("*.ipynb"))
                      if ".ipynb_checkpoints" not in p.parts]
        elif path.suffix == ".ipynb" and path.is_file():
            found.append((path, path.stem))
        else:
            raise FileNotFoundError(f"{path} is neither a notebook nor a folder")
    return found


def grade_all(paths: list[Path], sources: Path, out: Path | None = None, *,
              timeout: int = 600) -> list[Grade]:
    """Grade every submission; with ``out``, write each graded notebook there
    (``<label>.graded.ipynb``, its scores in its metadata) and ``grades.csv``."""
    import nbformat
    import pandas as pd
    grades = []
    for path, label in submissions(paths):
        result = grade(path, sources, timeout=timeout)
        grades.append(result)
        print(result.summary())
        if out is not None:
            Path(out).mkdir(parents=True, exist_ok=True)
            nbformat.write(nbformat.from_dict(result.notebook),
                           Path(out) / f"{label}.graded.ipynb")
    if out is not None:
        rows = [row for g in grades for row in g.rows()]
        pd.DataFrame(rows, columns=["submission", "exercise", "cell", "points", "score",
                                    "error"]).to_csv(Path(out) / "grades.csv", index=False)
    return grades
