"""The errors a ``fernb`` command reports in one line (no traceback)."""
from __future__ import annotations

from fernb.params import ParameterError


class NotebookError(RuntimeError):
    """A notebook cell raised; the message shows the cell and its error."""


class RunInterrupted(RuntimeError):
    """The run was stopped with Ctrl-C; what it finished is stored and a rerun resumes."""


class ResultsBusy(RuntimeError):
    """Another run holds the results folder (or the book)."""


__all__ = ["NotebookError", "ParameterError", "ResultsBusy", "RunInterrupted"]
