"""Solution and test markers, with nbgrader's conventions, handled without nbgrader.

An exercise notebook is an nbgrader *source* notebook (schema version 3), so an instructor can
also give it to ``nbgrader generate_assignment`` and ``nbgrader autograde`` directly:

- a cell's ``metadata["nbgrader"]`` says what it is: an *autograded answer* (``solution``), an
  *autograder test* (``grade`` with ``points``, ``locked``), a *manually graded answer* (a
  Markdown cell with ``solution`` and ``grade``) or a *read-only* cell (``locked``), each
  with a unique ``grade_id``;
- in an answer cell, the lines from ``### BEGIN SOLUTION`` to ``### END SOLUTION`` are the
  solution; the student's copy has the stub ``# YOUR CODE HERE`` / ``raise
  NotImplementedError()`` in their place, indented like the marker (an answer cell without
  markers is replaced whole; a Markdown answer by ``YOUR ANSWER HERE``);
- in a test cell, the lines from ``### BEGIN HIDDEN TESTS`` to ``### END HIDDEN TESTS`` are
  removed from the student's copy and put back when a submission is graded.

Chapter notebooks mark solutions with sphinx-exercise's MyST directives instead
(``{solution}`` blocks, or ``{solution-start}`` ... ``{solution-end}``); the student copy of a
chapter has none of them (:func:`remove_solution_directives`).

:func:`student_notebook` makes the student's copy of either kind; :func:`solution_texts`
lists what must never reach a student, for the check of a release
(:func:`fernb.course.release.find_leaks`).
"""
from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 3
BEGIN_SOLUTION, END_SOLUTION = "BEGIN SOLUTION", "END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
TEXT_STUB = "YOUR ANSWER HERE"
GRADE_ID = re.compile(r"^[a-zA-Z0-9_\-]+$")


def nbgrader(cell: Any) -> dict[str, Any]:
    """The cell's nbgrader metadata ({} for an ordinary cell)."""
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def is_solution(cell: Any) -> bool:
    return bool(nbgrader(cell).get("solution", False))


def is_grade(cell: Any) -> bool:
    return bool(nbgrader(cell).get("grade", False))


def is_locked(cell: Any) -> bool:
    """A cell whose source the grader restores from the source notebook (nbgrader's rule):
    tests and read-only cells, never an answer."""
    meta = nbgrader(cell)
    if not meta or meta.get("solution", False):
        return False
    return bool(meta.get("grade", False) or meta.get("locked", False))


def is_autograded_test(cell: Any) -> bool:
    return cell.get("cell_type") == "code" and is_grade(cell) and not is_solution(cell)


def is_manual(cell: Any) -> bool:
    """A manually graded answer: graded, and the student writes it."""
    return is_grade(cell) and is_solution(cell)


def grade_id(cell: Any) -> str | None:
    return nbgrader(cell).get("grade_id")


def points(cell: Any) -> float:
    return float(nbgrader(cell).get("points", 0) if is_grade(cell) else 0)


def cell_metadata(kind: str, grade_id: str, points: float | None = None) -> dict[str, Any]:
    """nbgrader metadata for a new cell: ``"answer"`` (autograded answer), ``"tests"``
    (autograder tests, ``points``), ``"written"`` (manually graded Markdown answer,
    ``points``) or ``"readonly"``."""
    flags = {"answer": (False, False, True), "tests": (True, True, False),
             "written": (True, False, True), "readonly": (False, True, False)}
    if kind not in flags:
        raise ValueError(f"kind must be one of {sorted(flags)}, got {kind!r}")
    if not GRADE_ID.match(grade_id):
        raise ValueError(f"grade_id {grade_id!r} must be letters, digits, '_' or '-'")
    grade, locked, solution = flags[kind]
    meta: dict[str, Any] = {"grade": grade, "grade_id": grade_id, "locked": locked,
                            "schema_version": SCHEMA_VERSION, "solution": solution,
                            "task": False}
    if grade:
        if points is None or points < 0:
            raise ValueError(f"a graded cell needs points >= 0, got {points}")
        meta["points"] = points
    return meta


def check_metadata(nb: Any) -> None:
    """The checks nbgrader makes of a source notebook (schema 3): graded cells have points,
    every marked cell a valid grade_id, unique; a Markdown cell is graded and an answer or
    neither; solution and hidden-test markers only where they belong. Raises ValueError."""
    seen: set[str] = set()
    for index, cell in enumerate(nb["cells"]):
        meta = nbgrader(cell)
        where = f"cell {index}"
        if meta:
            if meta.get("schema_version") != SCHEMA_VERSION:
                raise ValueError(f"{where}: nbgrader schema_version must be {SCHEMA_VERSION}")
            if meta.get("grade") or meta.get("solution") or meta.get("locked"):
                gid = meta.get("grade_id", "")
                if not GRADE_ID.match(gid or ""):
                    raise ValueError(f"{where}: grade_id {gid!r} is missing or invalid")
                if gid in seen:
                    raise ValueError(f"{where}: duplicate grade_id {gid!r}")
                seen.add(gid)
            if meta.get("grade") and "points" not in meta:
                raise ValueError(f"{where} ({meta.get('grade_id')}): a graded cell needs points")
            if cell["cell_type"] == "markdown" and bool(meta.get("grade")) != bool(
                    meta.get("solution")):
                raise ValueError(f"{where}: a Markdown cell must be both graded and an answer "
                                 f"(a written answer) or neither")
        source = cell["source"]
        if _has_marker(source, BEGIN_SOLUTION) and not is_solution(cell):
            raise ValueError(f"{where}: a solution region outside an answer cell")
        if _has_marker(source, BEGIN_HIDDEN) and not is_grade(cell):
            raise ValueError(f"{where}: hidden tests outside a test cell")


def _has_marker(source: str, marker: str) -> bool:
    return any(marker in line for line in source.split("\n"))


@dataclass(frozen=True)
class Region:
    """Lines between two markers: ``text`` (without the markers) and its indentation."""

    text: str
    indent: str


def _split(source: str, begin: str, end: str) -> tuple[list[str], list[Region]]:
    """The lines outside the regions (a region's place marked by None) and the regions."""
    kept: list[str | None] = []
    regions: list[Region] = []
    inside: list[str] | None = None
    indent = ""
    for line in source.split("\n"):
        if begin in line:
            if inside is not None:
                raise ValueError(f"nested {begin!r} markers:\n{source}")
            inside, indent = [], re.match(r"\s*", line).group(0)
            kept.append(None)
        elif end in line:
            if inside is None:
                raise ValueError(f"{end!r} without {begin!r}:\n{source}")
            regions.append(Region("\n".join(inside), indent))
            inside = None
        elif inside is not None:
            inside.append(line)
        else:
            kept.append(line)
    if inside is not None:
        raise ValueError(f"{begin!r} without {end!r}:\n{source}")
    return kept, regions  # type: ignore[return-value]


def clear_solution(cell: Any) -> None:
    """nbgrader's ClearSolutions on one cell, in place: each solution region becomes the stub,
    indented like its marker; an answer cell without regions becomes the stub."""
    if not is_solution(cell):
        return
    kept, regions = _split(cell["source"], BEGIN_SOLUTION, END_SOLUTION)
    stub = CODE_STUB if cell["cell_type"] == "code" else TEXT_STUB
    if not regions:
        cell["source"] = stub
        return
    lines: list[str] = []
    iterator = iter(regions)
    for line in kept:
        if line is None:
            indent = next(iterator).indent
            lines += [indent + s for s in stub.split("\n")]
        else:
            lines.append(line)
    cell["source"] = "\n".join(lines)


def clear_hidden_tests(cell: Any) -> None:
    """nbgrader's ClearHiddenTests on one cell, in place."""
    kept, regions = _split(cell["source"], BEGIN_HIDDEN, END_HIDDEN)
    if regions:
        cell["source"] = "\n".join(line for line in kept if line is not None)


# MyST directives of sphinx-exercise: ```{solution} label ... ``` (any fence of three or more
# backticks or colons), and {solution-start} ... {solution-end} with content between them.
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|:{3,})\s*\{(?P<name>[\w-]+)\}")


def _solution_spans(markdown: str) -> list[tuple[int, int]]:
    """Line spans (first, after the last) of the solutions: each {solution} directive, and
    each {solution-start} through its {solution-end}, also inside other directives."""
    lines = markdown.split("\n")
    spans, start, i = [], None, 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m or not m["name"].startswith("solution"):
            i += 1  # other directives are read through: a solution may sit inside one
            continue
        fence = m["fence"]
        closing = re.compile(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        stop = next((j + 1 for j in range(i + 1, len(lines)) if closing.match(lines[j])),
                    len(lines))
        if m["name"] == "solution":
            spans.append((i, stop))
        elif m["name"] == "solution-start":
            start = i
        elif m["name"] == "solution-end" and start is not None:
            spans.append((start, stop))
            start = None
        i = stop
    if start is not None:
        raise ValueError("a {solution-start} directive without its {solution-end}")
    return spans


def directives(markdown: str, name: str) -> list[str]:
    """The text of every top-level ``{name}`` directive (e.g. ``exercise``) in Markdown,
    the directives nested inside it included."""
    lines = markdown.split("\n")
    found, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence = m["fence"]
        closing = re.compile(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        stop = next((j + 1 for j in range(i + 1, len(lines)) if closing.match(lines[j])),
                    len(lines))
        if m["name"] == name:
            found.append("\n".join(lines[i:stop]))
        i = stop
    return found


def solution_directives(markdown: str) -> list[str]:
    """The text of every solution directive in a chapter's Markdown."""
    lines = markdown.split("\n")
    return ["\n".join(lines[a:b]) for a, b in _solution_spans(markdown)]


def remove_solution_directives(markdown: str) -> str:
    """The Markdown without its solution directives (and the blank lines they leave)."""
    lines = markdown.split("\n")
    drop = {i for a, b in _solution_spans(markdown) for i in range(a, b)}
    kept = [line for i, line in enumerate(lines) if i not in drop]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip("\n")


def checksum(cell: Any) -> str:
    """nbgrader's checksum of a marked cell (``nbgrader.utils.compute_checksum``): what
    ``nbgrader validate`` and ``autograde`` compare to tell a changed cell."""
    m = hashlib.md5()
    for part in (cell["source"], cell["cell_type"], str(is_grade(cell)),
                 str(is_solution(cell)), str(is_locked(cell)), grade_id(cell)):
        m.update(part.encode("utf-8"))
    if is_grade(cell):
        m.update(str(float(nbgrader(cell)["points"])).encode("utf-8"))
    return m.hexdigest()


def lock(cell: Any) -> None:
    """nbgrader's LockCells and ComputeChecksums on a student's cell, in place: answers
    cannot be deleted, tests and read-only cells neither deleted nor edited, and every
    marked cell carries its checksum and type."""
    meta = nbgrader(cell)
    if not (meta.get("grade") or meta.get("solution") or meta.get("locked")):
        return
    cell["metadata"]["deletable"] = False
    if not is_solution(cell):
        cell["metadata"]["editable"] = False
    meta["checksum"], meta["cell_type"] = checksum(cell), cell["cell_type"]


def student_notebook(nb: Any) -> Any:
    """The student's copy of an exercise or chapter notebook, as ``nbgrader
    generate_assignment`` makes it: solutions replaced by stubs, hidden tests removed, cells
    locked and checksummed, outputs and execution counts cleared; and every solution
    directive removed."""
    out = copy.deepcopy(nb)
    for cell in out["cells"]:
        clear_solution(cell)
        clear_hidden_tests(cell)
        if cell["cell_type"] == "markdown":
            cell["source"] = remove_solution_directives(cell["source"])
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        lock(cell)
    return out


@dataclass(frozen=True)
class Secret:
    """Text a student must not see: where it is and what kind (``solution``,
    ``written answer``, ``hidden tests`` or ``chapter solution``)."""

    where: str
    kind: str
    text: str


def solution_texts(nb: Any, name: str) -> list[Secret]:
    """Every solution region, written answer, hidden-test region and solution directive of
    a notebook (the instructor's copy)."""
    found = []
    for index, cell in enumerate(nb["cells"]):
        where = f"{name}, cell {index}" + (f" ({grade_id(cell)})" if grade_id(cell) else "")
        source = cell["source"]
        if is_solution(cell):
            regions = _split(source, BEGIN_SOLUTION, END_SOLUTION)[1]
            kind = "written answer" if cell["cell_type"] == "markdown" else "solution"
            found += [Secret(where, kind, r.text) for r in regions] or [
                Secret(where, kind, source)]
        found += [Secret(where, "hidden tests", r.text)
                  for r in _split(source, BEGIN_HIDDEN, END_HIDDEN)[1]]
        if cell["cell_type"] == "markdown":
            found += [Secret(where, "chapter solution", text)
                      for text in solution_directives(source)]
    return found
