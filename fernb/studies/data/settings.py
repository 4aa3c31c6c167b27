"""The data chapter's parameters, declared once (:class:`fernb.params.ChapterSettings`), and
the numbers its prose may state without computing them."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from fernb.data import synthetic
from fernb.params import (LEARNING_RATE, POSITIVE_INT, ChapterSettings, Range, Relation, Unused,
                          param, relation)

@dataclass(frozen=True)
class Settings(ChapterSettings):
    """The chapter's parameters (``notebooks/00_data.ipynb``); defaults are the ``cpu``
    profile."""

    n_subjects_lab: int = param(40, Range(4, 10_000, integer=True),
                                "subjects in synth-lab (CK+ has 123)")
    n_subjects_wild: int = param(60, Range(4, 10_000, integer=True),
                                 "subjects in synth-wild (40 images each)")
    display_size: int = param(96, Range(synthetic.MIN_SIZE, synthetic.MAX_SIZE, integer=True),
                              "image size of the figures")
    n_folds: int = param(10, Range(3, 100, integer=True),
                         "folds of the ESR protocol table (paper: 10)")
    image_size: int = param(48, Range(48, synthetic.MAX_SIZE, integer=True),
                            "image size of the synth-lab calibration baseline")
    wild_size: int = param(64, Range(48, synthetic.MAX_SIZE, integer=True),
                           "image size of the synth-wild baseline (blur and pose need pixels)")
    width: float = param(0.5, Range(0, 4, open_low=True),
                         "channel multiplier of the baseline network (1.0 is the paper network)")
    epochs: int = param(15, POSITIVE_INT, "training epochs of the synth-lab baseline")
    wild_width: float = param(0.25, Range(0, 4, open_low=True),
                              "channel multiplier of the synth-wild baseline")
    wild_epochs: int = param(20, POSITIVE_INT, "training epochs of the synth-wild baseline")
    batch_size: int = param(32, POSITIVE_INT, "mini-batch size of both baselines")
    lr: float = param(0.05, LEARNING_RATE, "SGD learning rate of both baselines")

    RELATIONS: ClassVar[Sequence[Relation]] = (
        relation(("n_folds", "n_subjects_lab"), lambda v: v["n_folds"] <= v["n_subjects_lab"],
                 lambda v: f"n_folds = {v['n_folds']} subject-independent folds need at least "
                           f"as many subjects: n_subjects_lab = {v['n_subjects_lab']}"),
    )
    UNUSED: ClassVar[Sequence[Unused]] = ()


_LAB, _WILD = synthetic.KNOBS["synth-lab"], synthetic.KNOBS["synth-wild"]
# Numbers the chapter's prose states that no run computes: the 68-point layout, the action
# units FACS numbers, the real datasets' sizes and classes, the generator's defaults and the
# calibration range the presets were tuned to.
PROSE_NUMBERS: dict[str, float | list[float]] = {
    "landmarks of the iBUG 300-W layout": 68,
    "action units named in the prose": [1, 2, 4, 5, 6, 9, 10, 12, 14, 26],
    "CK+ subjects": 123,
    "SFEW films (about)": 95,
    "classes of the in-the-wild sets": 7,
    "blend probability, synth-lab / synth-wild (%)": [100 * _LAB["blend_prob"],
                                                      100 * _WILD["blend_prob"]],
    "calibration target, synth-lab (%)": [80, 95],
    "calibration target, synth-wild (%)": [50, 75],
    "holdout shares of subjects, test / validation (%)": [20, 15],
    # tests/test_synthetic_knobs.py measures these on the generator's clean peaks
    "farthest point's motion at motion 1, % of the face's width (range)": [3, 11],
    "a smile's lip corners, a jaw drop at motion 1 (% of the face's width)": [6, 10],
    "largest motion": synthetic.MOTION_MAX,
}
