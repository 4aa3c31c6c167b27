"""Every number in a chapter's prose is computed from the run (a myst-nb glue reference) or is
one a reader can check without running anything: a number the paper prints
(``fernb/paper_results.yaml``), a parameter's value in a profile, or a constant the chapter
declares (``PROSE_NUMBERS`` in its study: equation arithmetic, the paper's settings). A new
hard-coded result cannot land."""
from __future__ import annotations

import math
import re
from collections.abc import Iterator
from importlib import import_module
from pathlib import Path
from typing import Any

import nbformat
import pytest

from fernb import chapters
from fernb.report import _paper_results

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = chapters.notebook_names(ROOT)
# The paper_results.yaml chapter of each notebook.
PAPERS = {"01_esr": "esr", "02_relevance_maps": "relevance", "03_fll_to_fer": "fll_to_fer",
          "04_soft_labels": "soft_labels", "05_faml_t2v": "faml_t2v"}

# Text that is not prose about results: glue references and other roles, code, math, links,
# directive options, and references to the paper's own numbered parts.
STRIP = [re.compile(p, re.S) for p in (
    r"```.*?```", r"\$\$.*?\$\$", r"\$[^$\n]+\$", r"\{[\w:-]+\}`[^`]*`", r"`[^`\n]*`",
    r"\]\([^)]*\)", r"https?://\S+", r"^:[\w-]+:.*$", r"<[^>]+>")]
REFERENCES = re.compile(
    r"\b(?:Tables?|Figs?\.|Figures?|[Ee]qs?\.|[Ee]quations?|Secs?\.|Sections?|Algorithms?|"
    r"[Cc]hapters?|Exercises?|[Ss]teps?|[Ll]evels?|[Ss]tages?|[Pp]hases?|[Rr]ows?|[Cc]olumns?|"
    r"[Bb]ranch(?:es)?|[Mm]ember|[Nn]etwork|[Tt]rial|[Ff]old|[Rr]eplicate|[Gg]eneration|"
    r"[Pp]art|[Qq]uadrant|AU)"
    r"\s*\(?[IVX\d]+(?:[.-][A-Z\d]+)*\)?(?:\s*(?:-|–|to|and|,)\s*\(?[IVX\d]+(?:[.-][A-Z\d]+)*\)?)*")
CITATION_YEAR = re.compile(r"\b(?:19|20)\d\d\b")
LIST_MARKER = re.compile(r"^\s*\d+[.)]\s", re.M)
NUMBER = re.compile(r"(?<![\w.\-+/])[-+]?\d[\d,]*(?:\.\d+)?(?:e-?\d+)?(?![\w\-/]|\.\d)")
ALWAYS = {0.0, 1.0}


def _markdown(name: str) -> Iterator[str]:
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            yield cell.source


def _flatten(value: Any) -> Iterator[float]:
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield float(value)
    elif isinstance(value, str):
        for m in NUMBER.finditer(value):
            yield from _number(m.group(0))
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten(k)
            yield from _flatten(v)
    elif isinstance(value, (list, tuple, set)):
        for v in value:
            yield from _flatten(v)


def _number(text: str) -> Iterator[float]:
    try:
        yield float(text.replace(",", ""))
    except ValueError:
        return


def allowed_numbers(name: str) -> set[float]:
    """The numbers a chapter may write in its prose without computing them."""
    path = ROOT / "notebooks" / f"{name}.ipynb"
    settings = chapters.settings_of(path)
    found = set(ALWAYS) | set(_flatten(settings.defaults()))
    for profile in chapters.PROFILES:
        try:
            found |= set(_flatten(chapters.load_profile(profile, ROOT).get(name, {})))
        except FileNotFoundError:
            continue
    if name in PAPERS:
        found |= set(_flatten(_paper_results()[PAPERS[name]]))
    module = import_module(settings.__module__)
    found |= set(_flatten(getattr(module, "PROSE_NUMBERS", {})))
    return found | {100 * v for v in found}


def _matches(written: str, allowed: set[float]) -> bool:
    value = next(_number(written), None)
    if value is None:
        return True
    decimals = len(written.split(".")[1]) if "." in written and "e" not in written else 0
    return any(math.isclose(value, a, rel_tol=1e-9, abs_tol=1e-12)
               or round(a, decimals) == value for a in allowed)


def hard_coded(name: str) -> list[str]:
    """Numbers in the chapter's Markdown that are neither computed nor declared."""
    allowed = allowed_numbers(name)
    found = []
    for source in _markdown(name):
        text = source
        for pattern in STRIP:
            text = pattern.sub(" ", text) if not pattern.flags & re.M else text
        text = re.sub(r"^:[\w-]+:.*$", " ", text, flags=re.M)
        text = REFERENCES.sub(" ", text)
        text = CITATION_YEAR.sub(" ", text)
        text = LIST_MARKER.sub(" ", text)
        for m in NUMBER.finditer(text):
            if not _matches(m.group(0).rstrip(".,"), allowed):
                start = max(0, m.start() - 40)
                found.append(f"{m.group(0)!r} in ...{text[start:m.end() + 40]!r}...")
    return found


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_number_in_the_prose_is_computed_or_declared(name: str) -> None:
    found = hard_coded(name)
    assert not found, (f"{name}: {len(found)} number(s) typed into the prose; glue them from "
                       f"the run (report.glue) or declare them in PROSE_NUMBERS:\n"
                       + "\n".join(found[:40]))


def test_the_check_catches_a_typed_result_and_passes_a_glued_one(tmp_path, monkeypatch):
    monkeypatch.setattr(
        "test_prose._markdown",
        lambda name: iter(["In this run the ensemble reaches 87.3% (Table 1, eq. (2)).",
                           "It reaches {glue:text}`acc`% on 48x48 faces with ESR-4."]))
    assert [f.split(" in ")[0] for f in hard_coded("01_esr")] == ["'87.3'"]
