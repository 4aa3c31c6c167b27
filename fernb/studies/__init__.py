"""The papers' experimental protocols, one module per chapter.

Each module declares its chapter's parameter constraints as ``PARAMETERS``
(:class:`fernb.params.Rules`), which the runner checks before the kernel starts and the
notebook's first cell checks again; the studies store every finished run on disk, so an
interrupted study resumes where it stopped.
"""
from __future__ import annotations

import importlib

from fernb.params import Rules

# notebook stem -> the module of fernb.studies holding its PARAMETERS
CHAPTERS: dict[str, str] = {
    "00_data": "data",
    "01_esr": "esr",
    "02_relevance_maps": "relevance",
    "03_fll_to_fer": "parts",
    "04_soft_labels": "softlabels",
    "05_faml_t2v": "faml",
}


def chapter_rules(stem: str) -> Rules | None:
    """The declared parameter constraints of a chapter notebook, or None if it has none."""
    module = CHAPTERS.get(stem)
    if module is None:
        return None
    return importlib.import_module(f"fernb.studies.{module}").PARAMETERS
