"""The ``fernb`` command: ``book``, ``run``, ``params``, ``student-book``, ``course`` and
``data``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fernb.errors import NotebookError, ParameterError, ResultsBusy, RunInterrupted


def _cmd_run(args: argparse.Namespace) -> int:
    from fernb import runner
    overrides = dict(args.param or [])
    result = runner.run_notebook(args.notebook, profile=args.profile, overrides=overrides,
                                 output_dir=args.output_dir, timeout=args.timeout,
                                 store=args.store)
    for warning in result.warnings:
        print(f"[fernb] note: {warning}", file=sys.stderr)
    print(f"{result.notebook}: {result.seconds:.0f} s\n  notebook: {result.output}\n"
          f"  results:  {result.results_dir}")
    return 0


def _cmd_params(args: argparse.Namespace) -> int:
    from fernb import chapters
    if args.write_cell:
        path = chapters.resolve_notebook(args.notebook)
        changed = chapters.write_parameters_cell(path)
        print(f"{path.name}: parameters cell {'rewritten' if changed else 'already current'}")
        return 0
    print(chapters.parameters_table(args.notebook))
    return 0


def _cmd_book(args: argparse.Namespace) -> int:
    from fernb import runner
    only = [n.strip() for n in args.only.split(",")] if args.only else None
    runner.run_book(profile=args.profile, only=only, build=not args.no_build,
                    timeout=args.timeout, store=args.store)
    return 0


def _cmd_student_book(args: argparse.Namespace) -> int:
    from fernb import runner
    html = runner.build_student_book()
    print(f"student book (no solutions): {html / 'index.html'}")
    return 0


def _cmd_course_build(args: argparse.Namespace) -> int:
    from fernb.course import release
    if args.student:
        launch_from = (args.launch_from, args.branch) if args.launch_from else None
        built = release.build_student(args.student, launch_from=launch_from)
        leaks = release.find_leaks(built.folder)
        if leaks:
            raise RuntimeError("the student release holds solutions:\n"
                               + "\n".join(map(str, leaks)))
    else:
        built = release.build_instructor(args.instructor)
    print(built)
    return 0


def _cmd_course_check(args: argparse.Namespace) -> int:
    from fernb.course import release
    leaks = release.find_leaks(args.folder)
    for leak in leaks:
        print(f"leak: {leak}")
    print(f"{args.folder}: {len(leaks)} solution(s) found in "
          f"{len({leak.file for leak in leaks})} file(s)")
    return 1 if leaks else 0


def _cmd_course_grade(args: argparse.Namespace) -> int:
    from fernb.chapters import project_root
    from fernb.course import grade
    from fernb.course.schedule import EXERCISES_DIR
    sources = args.source or project_root() / EXERCISES_DIR
    grades = grade.grade_all(args.submission, sources, args.out, timeout=args.timeout)
    if args.out:
        print(f"graded {len(grades)} notebook(s): {args.out / 'grades.csv'}")
    return 0


def _cmd_course_install_cell(args: argparse.Namespace) -> int:
    import nbformat

    from fernb import chapters
    from fernb.course import launch, release
    root = chapters.project_root()
    paths = [chapters.resolve_notebook(n, root) for n in args.notebook]
    if args.all:
        paths += [*release.chapter_paths(root), *release.exercise_paths(root)]
    if not paths:
        raise ValueError("name notebooks, or give --all for every chapter and exercise")
    stale = []
    for path in paths:
        if args.check:
            if not launch.has_current_install_cell(nbformat.read(path, as_version=4), root):
                stale.append(path)
        else:
            changed = launch.insert_install_cell(path, root)
            print(f"{path.name}: install cell {'written' if changed else 'already current'}")
    for path in stale:
        print(f"{path.name}: no current install cell (fernb course install-cell {path})")
    return 1 if stale else 0


def _cmd_course_page(args: argparse.Namespace) -> int:
    from fernb.course import schedule
    if args.write:
        changed = schedule.write_course_page()
        print(f"book/course.md: tables {'rewritten' if changed else 'already current'}")
    else:
        print(schedule.course_page())
    return 0


def _cmd_course_links(args: argparse.Namespace) -> int:
    from fernb.chapters import project_root
    from fernb.course import launch, release
    root = project_root()
    paths = [str(p.relative_to(root)) for p in
             [*release.chapter_paths(root), *release.exercise_paths(root)]]
    print(launch.launch_table(paths, root))
    return 0


_SYNTH_KNOBS = ("distractor", "blend_pairs", "label_from_mixture", "motion")


def _cmd_clean(args: argparse.Namespace) -> int:
    from fernb.store import Store
    store = Store(args.store)
    days = None if args.all else args.older_than
    removed, freed = store.clean(older_than_days=days, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    kept, size = store.size()
    print(f"{store.root}: {verb} {len(removed)} stored run(s), {freed / 2**20:.1f} MiB; "
          f"{kept} kept, {size / 2**20:.1f} MiB")
    return 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from fernb.data import synthetic
    knobs = {k: getattr(args, k) for k in _SYNTH_KNOBS if getattr(args, k) is not None}
    ds = synthetic.generate(args.preset, n_subjects=args.n_subjects, size=args.size,
                            seed=args.seed, **knobs)
    out = synthetic.export(ds, args.out)
    print(f"wrote {len(ds)} faces ({ds.n_classes} classes, {args.n_subjects} subjects) to {out}")
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    from fernb.data.check import check_dataset
    report = check_dataset(args.name, args.root)
    print(report.format())
    return 0 if report.ok else 1


def _cmd_data_list(args: argparse.Namespace) -> int:
    from fernb.data import available_datasets
    print("\n".join(available_datasets()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fernb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add_store(p: argparse.ArgumentParser) -> None:
        p.add_argument("--store", type=Path, help="folder of trained models (default "
                       "$FERNB_STORE or results/store)")

    def add_profile(p: argparse.ArgumentParser) -> None:
        p.add_argument("--profile", default="cpu", help="smoke, cpu (default) or paper")
        p.add_argument("--timeout", type=int, default=3600, help="per-cell timeout, seconds")
        add_store(p)

    run = sub.add_parser("run", help="execute one chapter notebook with papermill")
    run.add_argument("notebook", help="e.g. 01_esr")
    add_profile(run)
    run.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="override a parameter (repeatable), e.g. -p epochs 30")
    run.add_argument("--output-dir", type=Path, help="results folder (default "
                     "results/<profile>/<notebook>)")
    run.set_defaults(func=_cmd_run)

    params = sub.add_parser("params", help="list a notebook's parameters and profile values")
    params.add_argument("notebook")
    params.add_argument("--write-cell", action="store_true",
                        help="rewrite the notebook's parameters cell from the declaration")
    params.set_defaults(func=_cmd_params)

    book = sub.add_parser("book", help="run every chapter, then build the HTML book")
    add_profile(book)
    book.add_argument("--only", help="comma-separated notebooks to run, e.g. 00_data,01_esr")
    book.add_argument("--no-build", action="store_true", help="run notebooks only")
    book.set_defaults(func=_cmd_book)

    clean = sub.add_parser("clean", help="remove stored trained models not used for a while")
    clean.add_argument("--older-than", type=float, default=30.0, metavar="DAYS",
                       help="remove what no run used in the last DAYS days (default 30)")
    clean.add_argument("--all", action="store_true", help="remove every stored model")
    clean.add_argument("--dry-run", action="store_true", help="only say what would go")
    add_store(clean)
    clean.set_defaults(func=_cmd_clean)

    student = sub.add_parser("student-book", help="build the book without solutions from the "
                             "chapters `fernb book` ran (_build/student)")
    student.set_defaults(func=_cmd_student_book)

    course = sub.add_parser("course", help="the course edition: releases, grading, install "
                            "cell, syllabus")
    csub = course.add_subparsers(dest="course_command", required=True)
    build = csub.add_parser("build", help="build the student release (exercises with blanks "
                            "and visible tests, chapters without solutions, the student book's "
                            "HTML if built, the course page; checked for solutions) or the "
                            "instructor release (solutions, hidden tests, grading, links)")
    edition = build.add_mutually_exclusive_group(required=True)
    edition.add_argument("--student", type=Path, metavar="OUT")
    edition.add_argument("--instructor", type=Path, metavar="OUT")
    build.add_argument("--launch-from", metavar="URL", help="the GitHub repository the course "
                       "publishes the student release in: LAUNCH.md links its notebooks to "
                       "Colab and Kaggle")
    build.add_argument("--branch", default="main", help="that repository's branch (main)")
    build.set_defaults(func=_cmd_course_build)
    check = csub.add_parser("check", help="look for every solution's text in a folder (a "
                            "student release); exit 1 on a hit")
    check.add_argument("folder", type=Path)
    check.set_defaults(func=_cmd_course_check)
    grade = csub.add_parser("grade", help="grade submitted exercise notebooks with the "
                            "hidden tests put back (runs the students' code)")
    grade.add_argument("submission", nargs="+", type=Path,
                       help="notebooks, or folders searched for them")
    grade.add_argument("--source", type=Path, help="the exercises with solutions and hidden "
                       "tests (default notebooks/exercises; an instructor release's source/)")
    grade.add_argument("--out", type=Path, help="write each graded notebook and grades.csv "
                       "here")
    grade.add_argument("--timeout", type=int, default=600, help="per-cell timeout, seconds")
    grade.set_defaults(func=_cmd_course_grade)
    install = csub.add_parser("install-cell", help="make a notebook's first code cell the one "
                              "that installs fernb where it is missing (Colab, Kaggle)")
    install.add_argument("notebook", nargs="*", help="chapter names or notebook paths")
    install.add_argument("--all", action="store_true", help="every chapter and exercise")
    install.add_argument("--check", action="store_true", help="only report notebooks "
                         "without the current cell (exit 1)")
    install.set_defaults(func=_cmd_course_install_cell)
    page = csub.add_parser("page", help="book/course.md with its tables from fernb.course")
    page.add_argument("--write", action="store_true", help="rewrite the tables in place")
    page.set_defaults(func=_cmd_course_page)
    csub.add_parser("links", help="Colab and Kaggle links of every chapter and exercise"
                    ).set_defaults(func=_cmd_course_links)

    data = sub.add_parser("data", help="synthetic data export and dataset checks")
    dsub = data.add_subparsers(dest="data_command", required=True)
    synth = dsub.add_parser("synth", help="export a synthetic set in the `folder` layout (PNG "
                            "images + labels.csv), readable with -p dataset folder")
    synth.add_argument("--preset", default="synth-lab", choices=["synth-lab", "synth-wild"])
    synth.add_argument("--size", type=int, default=96)
    synth.add_argument("--n-subjects", type=int, default=40)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--distractor", type=float, metavar="STRENGTH",
                       help="paint a class cue in an image corner that shows the label with "
                       "this probability (0-1), else a random class (labels.csv: cue, "
                       "cue_corner); default: no cue")
    synth.add_argument("--blend-pairs", choices=["uniform", "facs"],
                       help="second emotion of a blend: any other emotion (uniform, the "
                       "default) or one sharing action units with the first (facs)")
    synth.add_argument("--label-from-mixture", action="store_const", const=True,
                       help="draw each label from the face's emotion mixture (probability by "
                       "weight) instead of the preset's uniform label noise")
    synth.add_argument("--motion", type=float, metavar="SCALE",
                       help="scale of the action units' landmark motion, 0-3 (0: texture "
                       "cues only; default 1; 2: pronounced expressions)")
    synth.set_defaults(func=_cmd_data_synth)
    check = dsub.add_parser("check", help="validate a dataset's layout and decode every image")
    check.add_argument("name", help="ckplus, jaffe, sfew, fer2013, ferplus, rafdb, affectnet "
                       "or folder")
    check.add_argument("--root", type=Path, required=True)
    check.set_defaults(func=_cmd_data_check)
    dsub.add_parser("list", help="registered dataset names").set_defaults(func=_cmd_data_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (RunInterrupted, KeyboardInterrupt):
        print("fernb: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except (ParameterError, ResultsBusy, FileNotFoundError, FileExistsError, KeyError,
            ValueError) as err:
        print(f"fernb: error: {err}", file=sys.stderr)
        return 2
    except (NotebookError, RuntimeError) as err:
        print(f"fernb: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
