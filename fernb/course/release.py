"""The course's two releases, built from the same sources, and the check that the student's
holds no solution.

*Student release* (:func:`build_student`): the method exercises with blanks and visible
tests only, the chapter notebooks without any solution directive, the student book's HTML
when ``fernb student-book`` has built it, and the course page. *Instructor release*
(:func:`build_instructor`): the exercises as nbgrader source notebooks (solutions and hidden
tests; an nbgrader course folder), the chapter notebooks as they are, the full book's HTML
when built, the course page, Colab and Kaggle links for every notebook, and how to grade.

:func:`find_leaks` looks for every solution's text (:func:`fernb.course.markers.
solution_texts`) in every file of a folder, as word sequences, so neither line breaks,
Markdown or HTML markup, nor JSON escapes hide one.
"""
from __future__ import annotations

import html
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fernb
from fernb.chapters import notebook_names, project_root
from fernb.course import launch, markers
from fernb.course.schedule import EXERCISES_DIR, exercise_names

STAMP = "release.json"
STUDENT_HTML = Path("_build") / "student" / "_build" / "html"
BOOK_HTML = Path("_build") / "html"
BOOK_PAGES = Path("book") / "_generated" / "course"
# A solution is found in a file when this many consecutive words of it are (all of its
# words when it is shorter).
SHINGLE = 8
_WORD = re.compile(r"[A-Za-z0-9_]+")
_TEXT_SUFFIXES = {".ipynb", ".md", ".html", ".txt", ".py", ".js", ".json", ".yml", ".yaml",
                  ".csv", ".tex", ".rst", ".cfg", ".toml"}


def _read(path: Path) -> Any:
    import nbformat
    return nbformat.read(path, as_version=4)


def _write(nb: Any, path: Path) -> None:
    import nbformat
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def exercise_paths(root: Path) -> list[Path]:
    return [root / EXERCISES_DIR / f"{name}.ipynb" for name in exercise_names(root)]


def chapter_paths(root: Path) -> list[Path]:
    return [root / "notebooks" / f"{name}.ipynb" for name in notebook_names(root)]


def _prepare(out: Path, edition: str) -> None:
    """An empty folder for a release: a new one, or an earlier release of this tool, which is
    replaced; any other folder with files in it is refused."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not (out / STAMP).is_file():
            raise FileExistsError(f"{out} is not empty and holds no earlier release "
                                  f"({STAMP}); choose an empty or new folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / STAMP).write_text(json.dumps({"edition": edition,
                                         "fernb": fernb.__version__}, indent=1) + "\n")


def student_exercise(path: Path) -> Any:
    """A method exercise as students get it (checked like nbgrader checks a source)."""
    nb = _read(path)
    markers.check_metadata(nb)
    return markers.student_notebook(nb)


def publish_book_pages(root: Path | None = None) -> list[Path]:
    """The method exercises as the book shows them (``book/_generated/course/``), in the
    main book and the student book alike: the student's copy (whose install cell the page
    does not show, tagged ``remove-cell``)."""
    root = root or project_root()
    folder = root / BOOK_PAGES
    if folder.exists():
        shutil.rmtree(folder)
    written = []
    for path in exercise_paths(root):
        nb = student_exercise(path)
        _write(nb, folder / path.name)
        written.append(folder / path.name)
    return written


@dataclass(frozen=True)
class Release:
    folder: Path
    edition: str
    html: Path | None

    def __str__(self) -> str:
        book = f"; HTML from {self.html}" if self.html else "; no HTML (build the book first)"
        return f"{self.edition} release: {self.folder}{book}"


def _copy_html(source: Path, out: Path) -> Path | None:
    if not (source / "index.html").is_file():
        return None
    shutil.copytree(source, out / "html")
    return source


def build_student(out: Path, root: Path | None = None,
                  launch_from: tuple[str, str] | None = None) -> Release:
    """The student release in ``out`` (see the module's docstring).

    Args:
        launch_from: (GitHub URL, branch) of the repository the course will publish this
            release in: its ``LAUNCH.md`` then links every notebook there to Colab and
            Kaggle (the book's own repository holds the solutions).
    """
    root = root or project_root()
    _prepare(out, "student")
    for path in exercise_paths(root):
        _write(student_exercise(path), out / "exercises" / path.name)
    for path in chapter_paths(root):
        _write(markers.student_notebook(_read(path)), out / "notebooks" / path.name)
    shutil.copy(root / "book" / "course.md", out / "course.md")
    if launch_from is not None:
        paths = [f"{folder}/{p.name}" for folder, group in
                 (("notebooks", chapter_paths(root)), ("exercises", exercise_paths(root)))
                 for p in group]
        (out / "LAUNCH.md").write_text(
            f"# Open the notebooks in Colab or Kaggle\n\nFrom {launch_from[0]}, branch "
            f"{launch_from[1]}.\n\n" + launch.launch_table(paths, repo=launch_from) + "\n")
    found = _copy_html(root / STUDENT_HTML, out)
    (out / "README.md").write_text(_student_readme(root, found is not None))
    return Release(Path(out), "student", found)


def build_instructor(out: Path, root: Path | None = None) -> Release:
    """The instructor release in ``out`` (see the module's docstring)."""
    root = root or project_root()
    _prepare(out, "instructor")
    exercises = exercise_paths(root)
    for path in exercises:
        nb = _read(path)
        markers.check_metadata(nb)
        _write(nb, out / "source" / path.stem / path.name)
    (out / "notebooks").mkdir()
    for path in chapter_paths(root):
        shutil.copy(path, out / "notebooks" / path.name)
    shutil.copy(root / "book" / "course.md", out / "course.md")
    (out / "nbgrader_config.py").write_text(_NBGRADER_CONFIG)
    paths = [str(p.relative_to(root)) for p in [*chapter_paths(root), *exercises]]
    (out / "LAUNCH.md").write_text(
        "# Open the notebooks in Colab or Kaggle\n\nFrom the book's repository "
        f"({launch.repository(root)[0]}, branch {launch.repository(root)[1]}). The exercise "
        "notebooks there hold their solutions: give students the student release's "
        "notebooks instead.\n\n" + launch.launch_table(paths, root) + "\n")
    found = _copy_html(root / BOOK_HTML, out)
    (out / "README.md").write_text(_instructor_readme(root, [p.stem for p in exercises],
                                                      found is not None))
    return Release(Path(out), "instructor", found)


_NBGRADER_CONFIG = '''\
# nbgrader's configuration for this folder, an nbgrader course directory whose source/
# holds one assignment per method exercise (for the nbgrader route; fernb needs none of it).
c = get_config()  # noqa: F821
c.CourseDirectory.course_id = "fernb"
'''


def _student_readme(root: Path, has_html: bool) -> str:
    book = ("`html/index.html` is the book without solutions.\n" if has_html else
            "The book's HTML was not built when this release was made.\n")
    return f"""# FER ensembles: the student release

- `exercises/`: the method exercises. Each asks you to write one paper's method and checks
  it with tests; write your code where it says `# YOUR CODE HERE`, run every cell, and hand
  in the notebook. More tests run when your instructor grades it.
- `notebooks/`: the chapters, to run and rerun with your own parameters.
- `course.md`: the syllabus: meetings, readings, graded sets, the rubric and the final
  project.
- {book}
The notebooks need the `fernb` package. Their first code cell installs it where it is
missing (Colab, Kaggle); on your own machine, install it once:

    python -m pip install "{launch.install_spec(root)}"
"""


def _instructor_readme(root: Path, exercises: list[str], has_html: bool) -> str:
    book = ("`html/index.html` is the full book (with the chapters' solutions)." if has_html else
            "The book's HTML was not built when this release was made.")
    listed = "\n".join(f"  - `source/{name}/{name}.ipynb`" for name in exercises)
    return f"""# FER ensembles: the instructor release

Keep this folder from students: it holds every solution and every hidden test.

- `source/`: the method exercises with their solutions and hidden tests, one nbgrader
  assignment each:
{listed}
- `notebooks/`: the chapters with their exercises' solutions.
- `course.md`: the syllabus (meetings, graded sets and points, rubric, final project).
- `LAUNCH.md`: a Colab and a Kaggle link for every chapter and exercise.
- {book}

## Giving out the exercises

Students get the student release (`fernb course build --student OUT` in the book's
repository): blanks, visible tests and the chapters without solutions, nothing else.

## Grading

Collect the submitted notebooks (any layout, e.g. `submitted/<student>/<exercise>.ipynb`),
then, in an environment with fernb installed and isolated from anything you care about (the
students' code runs):

    fernb course grade submitted/ --source source/ --out graded/

Each submission runs with this release's tests put back in place of the student's copies,
hidden tests included; a test cell earns its points when it runs without an error.
`graded/grades.csv` lists every cell's points and the first error; `graded/` holds each
executed notebook. Written answers are listed as points to mark by hand with the syllabus's
rubric.

The same notebooks follow nbgrader's conventions (solution and hidden-test markers, cell
metadata), so nbgrader works on this folder directly (`python -m pip install "fernb[course]"`
installs it): `nbgrader generate_assignment 01_esr_shared_base`, then `nbgrader autograde`
on the collected submissions.
"""


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _file_text(path: Path) -> str:
    raw = path.read_text(errors="replace")
    if path.suffix == ".ipynb":
        try:
            nb = json.loads(raw)
        except json.JSONDecodeError:
            return raw
        parts = []
        for cell in nb.get("cells", []):
            parts.append("".join(cell.get("source", "")))
            for output in cell.get("outputs", []):
                parts.append("".join(output.get("text", "")))
                parts += ["".join(v) if isinstance(v, list) else str(v)
                          for v in output.get("data", {}).values()]
        return "\n".join(parts)
    if path.suffix == ".html":
        raw = re.sub(r"<[^>]+>", " ", raw)
        return html.unescape(raw)
    return raw


def _shingles(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


@dataclass(frozen=True)
class Leak:
    file: Path
    secret: markers.Secret

    def __str__(self) -> str:
        return f"{self.file}: {self.secret.kind} of {self.secret.where}"


def secrets(root: Path | None = None) -> list[markers.Secret]:
    """Every solution, written answer and hidden test of the exercises and every solution
    directive of the chapters."""
    root = root or project_root()
    found = []
    for path in [*exercise_paths(root), *chapter_paths(root)]:
        found += markers.solution_texts(_read(path), path.name)
    return found


def fingerprints(secret: markers.Secret, visible: str) -> set[tuple[str, ...]]:
    """The word sequences that identify a secret: each run of :data:`SHINGLE` words (all of
    its words if it is shorter) that does not occur in ``visible``, the text students are
    meant to see (a solution that repeats a line of a question, or a fact the chapter states,
    identifies nothing)."""
    words = _words(secret.text)
    n = min(SHINGLE, len(words))
    if n == 0:
        return set()
    return _shingles(words, n) - _shingles(_words(visible), n)


def visible_text(root: Path | None = None) -> str:
    """All that students are meant to see: the student copies of every exercise and
    chapter."""
    root = root or project_root()
    return "\n".join(cell["source"]
                     for path in [*exercise_paths(root), *chapter_paths(root)]
                     for cell in markers.student_notebook(_read(path))["cells"])


def find_leaks(folder: Path, root: Path | None = None) -> list[Leak]:
    """Every file under ``folder`` that holds a solution's text."""
    root = root or project_root()
    visible = visible_text(root)
    prints = [(s, keys) for s in secrets(root) if (keys := fingerprints(s, visible))]
    leaks = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        if path.suffix not in _TEXT_SUFFIXES:
            continue
        words = _words(_file_text(path))
        by_size: dict[int, set[tuple[str, ...]]] = {}
        for secret, keys in prints:
            n = len(next(iter(keys)))
            if n not in by_size:
                by_size[n] = _shingles(words, n)
            if keys & by_size[n]:
                leaks.append(Leak(path, secret))
    return leaks
