"""The course's plan, declared once: each chapter's time estimate, the twelve meetings and
their graded sets with points.

:data:`CHAPTER_TIMES` is the one source of a chapter's time estimate: the syllabus
(``book/course.md``, whose tables :func:`course_page` writes and a test keeps current) and a
chapter's learning objectives (``report.glue_all(highlights("01_esr"))``, cited as
``{glue:text}`study_minutes``) read it. A method exercise's points are those of its
notebook's graded cells (:func:`exercise_points`), so the syllabus never restates them.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from fernb.chapters import project_root

MEETING_MINUTES = 90
EXERCISES_DIR = Path("notebooks") / "exercises"


@dataclass(frozen=True)
class ChapterTime:
    """How long a chapter takes.

    Attributes:
        chapter: the notebook's name.
        title: as the book's contents name it.
        study_minutes: reading the chapter and running it with the ``cpu`` profile, alone
            (the estimate its learning objectives state).
        meetings: class meetings of :data:`MEETING_MINUTES` the syllabus gives it, its
            method exercise and its written exercises included.
    """

    chapter: str
    title: str
    study_minutes: int
    meetings: int


CHAPTER_TIMES: dict[str, ChapterTime] = {t.chapter: t for t in (
    ChapterTime("00_data", "The data", 60, 1),
    ChapterTime("01_esr", "1. ESR and the branching level", 90, 2),
    ChapterTime("02_relevance_maps", "2. Relevance-map regularizers", 90, 2),
    ChapterTime("03_fll_to_fer", "3. FLL to FER transfer", 90, 2),
    ChapterTime("04_soft_labels", "4. Soft labels and gamma perturbation", 75, 2),
    ChapterTime("05_faml_t2v", "5. R18+FAML, FGA and top-two voting", 90, 2),
)}


def highlights(chapter: str) -> dict[str, int]:
    """A chapter's time estimate for its learning objectives: ``study_minutes``,
    ``course_meetings`` and ``course_minutes`` (for ``report.glue_all``)."""
    if chapter not in CHAPTER_TIMES:
        raise KeyError(f"no time estimate for {chapter!r}; chapters: {list(CHAPTER_TIMES)}")
    t = CHAPTER_TIMES[chapter]
    return {"study_minutes": t.study_minutes, "course_meetings": t.meetings,
            "course_minutes": t.meetings * MEETING_MINUTES}


@dataclass(frozen=True)
class Graded:
    """One item of a graded set: a method exercise (``exercise``, its points read from the
    notebook), or written work (``what`` and ``points``, marked with the rubric) of the
    chapters or the final project (``project``)."""

    what: str = ""
    points: int = 0
    exercise: str = ""
    project: bool = False


WRITTEN_CHAPTER_EXERCISES = Graded(
    "two of the chapter's exercises, predicted then measured, written answers", 2 * 6)


@dataclass(frozen=True)
class Meeting:
    """A class meeting: what students read before it, do in it, and hand in after it."""

    number: int
    topic: str
    chapter: str | None
    reading: str
    in_class: str
    graded: tuple[Graded, ...] = ()


MEETINGS: tuple[Meeting, ...] = (
    Meeting(1, "Faces, action units and subject-independent evaluation", "00_data",
            "the introduction and *The data*; Ekman & Friesen's FACS in outline",
            "run the data chapter; change one difficulty knob and predict its effect",
            (Graded("two of the data chapter's exercises, written answers", 2 * 6),)),
    Meeting(2, "Ensembles with shared representations", "01_esr",
            "Siqueira et al. (2020), Secs. 1-3 and Table 1",
            "the ESR chapter up to Table 1; the method exercise in pairs",
            (Graded(exercise="01_esr_shared_base"),)),
    Meeting(3, "Branching levels, Algorithm 1 and paired tests", "01_esr",
            "Siqueira et al. (2020), Sec. 4; the chapter's verdicts",
            "rerun the chapter with your own parameters; read a paired t-test",
            (WRITTEN_CHAPTER_EXERCISES,)),
    Meeting(4, "Relevance maps: where a network should look", "02_relevance_maps",
            "Ferreira et al. (2018), Secs. III-A and III-B",
            "the relevance chapter up to the losses; the method exercise",
            (Graded(exercise="02_relevance_losses"),)),
    Meeting(5, "Fully, weakly and hybrid supervision of the map", "02_relevance_maps",
            "Ferreira et al. (2018), Sec. IV; the chapter's evidence scores",
            "compare maps across lambda; score saliency against evidence regions",
            (WRITTEN_CHAPTER_EXERCISES,)),
    Meeting(6, "Landmarks as a pre-training task; counting cost", "03_fll_to_fer",
            "Wadhawan & Gandhi (2023), Secs. III and IV-E",
            "the FLL chapter up to the complexity table; the method exercise",
            (Graded(exercise="03_landmarks_and_flops"),)),
    Meeting(7, "Part-based ensembles and transfer", "03_fll_to_fer",
            "Wadhawan & Gandhi (2023), Secs. IV-A to IV-D",
            "rerun the chapter; final project proposals discussed in class",
            (WRITTEN_CHAPTER_EXERCISES,
             Graded("final project proposal (one page: question, data, regime, control)", 5,
                    project=True))),
    Meeting(8, "Soft labels from a network's confusions", "04_soft_labels",
            "Gan et al. (2019), Secs. 3.1-3.3 and Table 1",
            "the soft-label chapter up to the gamma sweep; the method exercise",
            (Graded(exercise="04_soft_labels"),)),
    Meeting(9, "Diversity by perturbation, and testing it", "04_soft_labels",
            "Gan et al. (2019), Secs. 3.4 and 4; Kuncheva & Whitaker on diversity",
            "rerun the chapter with more repeats; read the paired design",
            (WRITTEN_CHAPTER_EXERCISES,)),
    Meeting(10, "Decision rules: plurality, NOI and top-two voting", "05_faml_t2v",
            "Zhou et al. (2023), Sec. 3.3, Tables 1 and 3",
            "the FAML chapter's decision rules; the method exercise",
            (Graded(exercise="05_top_two_voting"),)),
    Meeting(11, "Multi-loss training and kernel fusion", "05_faml_t2v",
            "Zhou et al. (2023), Secs. 3.1-3.2 and 4",
            "rerun the chapter; final project work",
            (WRITTEN_CHAPTER_EXERCISES,)),
    Meeting(12, "Final projects", None,
            "each other's project reports",
            "ten-minute presentations with questions",
            (Graded("final project: report, code and presentation", 40, project=True),)),
)


def exercise_names(root: Path | None = None) -> list[str]:
    """The method exercises (``notebooks/exercises/NN_*.ipynb``) in order."""
    root = root or project_root()
    return sorted(p.stem for p in (root / EXERCISES_DIR).glob("[0-9][0-9]_*.ipynb"))


def exercise_points(name: str, root: Path | None = None) -> tuple[float, float]:
    """(autograded, written) points of an exercise notebook's graded cells."""
    from fernb.course.markers import is_grade, is_manual, points
    root = root or project_root()
    nb = json.loads((root / EXERCISES_DIR / f"{name}.ipynb").read_text())
    graded = [c for c in nb["cells"] if is_grade(c)]
    return (sum(points(c) for c in graded if not is_manual(c)),
            sum(points(c) for c in graded if is_manual(c)))


def _describe(item: Graded, root: Path | None) -> str:
    if not item.exercise:
        return f"{item.what} ({item.points:g})"
    auto, written = exercise_points(item.exercise, root)
    return (f"method exercise `{item.exercise}` ({auto + written:g}: {auto:g} autograded, "
            f"{written:g} written)")


def times_table(root: Path | None = None) -> str:
    rows = ["| chapter | reading and running it alone | class meetings |", "|---|---|---|"]
    rows += [f"| {t.title} | {t.study_minutes} min | {t.meetings} x "
             f"{MEETING_MINUTES} min |" for t in CHAPTER_TIMES.values()]
    return "\n".join(rows)


def meetings_table(root: Path | None = None) -> str:
    rows = ["| meeting | topic | reading | in class | graded set (points) |",
            "|---|---|---|---|---|"]
    for m in MEETINGS:
        graded = "; ".join(_describe(g, root) for g in m.graded) or "none"
        rows.append(f"| {m.number} | {m.topic} | {m.reading} | {m.in_class} | {graded} |")
    return "\n".join(rows)


def points_table(root: Path | None = None) -> str:
    kinds = {"method exercises (autograded)": 0.0, "method exercises (written)": 0.0,
             "chapter exercises (written)": 0.0, "final project": 0.0}
    for m in MEETINGS:
        for g in m.graded:
            if g.exercise:
                auto, written = exercise_points(g.exercise, root)
                kinds["method exercises (autograded)"] += auto
                kinds["method exercises (written)"] += written
            elif g.project:
                kinds["final project"] += g.points
            else:
                kinds["chapter exercises (written)"] += g.points
    total = sum(kinds.values())
    rows = ["| graded work | points | share |", "|---|---|---|"]
    rows += [f"| {k} | {v:g} | {100 * v / total:.0f}% |" for k, v in kinds.items()]
    rows.append(f"| total | {total:g} | 100% |")
    return "\n".join(rows)


BLOCKS = {"times": times_table, "meetings": meetings_table, "points": points_table}
_BLOCK = re.compile(r"(% fernb:begin (?P<name>[\w-]+)\n)(?P<body>.*?)(% fernb:end (?P=name)\n)",
                    re.S)


def course_page(root: Path | None = None, text: str | None = None) -> str:
    """``book/course.md`` with every generated block (``% fernb:begin NAME`` ... ``% fernb:end
    NAME``, MyST comments) rewritten from this module."""
    root = root or project_root()
    text = (root / "book" / "course.md").read_text() if text is None else text
    found = {m["name"] for m in _BLOCK.finditer(text)}
    unknown = found - set(BLOCKS)
    if unknown:
        raise ValueError(f"book/course.md has unknown generated blocks {sorted(unknown)}; "
                         f"known: {sorted(BLOCKS)}")

    def fill(m: re.Match) -> str:
        return f"{m.group(1)}\n{BLOCKS[m['name']](root)}\n\n{m.group(4)}"

    return _BLOCK.sub(fill, text)


def write_course_page(root: Path | None = None) -> bool:
    """Rewrite the generated blocks of ``book/course.md``; True if it changed."""
    root = root or project_root()
    path = root / "book" / "course.md"
    old = path.read_text()
    new = course_page(root, old)
    if new != old:
        path.write_text(new)
    return new != old
