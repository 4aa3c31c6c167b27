"""The course edition: method exercises graded automatically, a student release without any
solution and an instructor release, launching on a GPU, and the syllabus.

- :mod:`fernb.course.schedule`: each chapter's time estimate, the twelve meetings, their
  graded sets and points, and the generated tables of ``book/course.md``;
- :mod:`fernb.course.markers`: solution and hidden-test markers with nbgrader's conventions,
  and the student's copy of a notebook;
- :mod:`fernb.course.release`: the student and instructor releases and the check that no
  solution reaches students;
- :mod:`fernb.course.grade`: grading submitted exercise notebooks, as ``nbgrader autograde``;
- :mod:`fernb.course.launch`: the install cell and Colab/Kaggle links.

The method exercises are notebooks of their own (``notebooks/exercises/NN_*.ipynb``): in
each, a student writes one paper's method, checked by visible tests on the paper's worked
examples and by hidden tests against fernb's own implementation. Commands: ``fernb course
build --student|--instructor OUT``, ``fernb course check OUT``, ``fernb course grade``,
``fernb course install-cell`` and ``fernb course page``.
"""
from fernb.course.schedule import CHAPTER_TIMES, MEETINGS, highlights

__all__ = ["CHAPTER_TIMES", "MEETINGS", "highlights"]
