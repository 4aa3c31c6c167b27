"""Wadhawan and Gandhi's experiments (IEEE TAI 2023), as chapter 3 runs them.

- :mod:`~fernb.studies.parts.settings`: the chapter's parameters (:class:`Settings`) and the
  constants its prose cites (:data:`PROSE_NUMBERS`);
- :mod:`~fernb.studies.parts.protocol`: the two regimes as stored jobs (:func:`plan`);
- :mod:`~fernb.studies.parts.results`: training what the store lacks and reading it back
  (:func:`run`, :class:`Results`);
- :mod:`~fernb.studies.parts.tables`: the data, Table I, II, III, the budget, the weight
  travel, the learning curve, Fig. 10;
- :mod:`~fernb.studies.parts.learning`: the training curves and the did-it-learn checks;
- :mod:`~fernb.studies.parts.analysis`: Sec. V-A (displacements, the landmark probe), V-B
  (landmark errors before and after fine-tuning), IV-C / V-C (Grad-CAM evidence, Fig. 11);
- :mod:`~fernb.studies.parts.claims`: the verdicts and the paper-vs-book values;
- :mod:`~fernb.studies.parts.highlights`: every number and sentence the prose cites.

Choices where the paper is silent, and the book's departures from its schedule, are stated in
the chapter and in :mod:`fernb.transfer`.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from fernb.studies.parts.analysis import (displacements, error_table, gradcam_evidence,
                                          gradcam_figure,
                                          landmark_figure_faces, landmark_pairs,
                                          landmark_probe, own_part_lift, part_displacements)
from fernb.studies.parts.claims import (arithmetic, claims, curve_claims, measured, metrics,
                                        real_data)
from fernb.studies.parts.highlights import (curve_sentences, displacement_sentences,
                                            feature_sentences, mechanism_sentences,
                                            learning_sentences, minutes,
                                            paper_vs_book_sentences, probe_sentences,
                                            rate_sentences, settings_sentences,
                                            summary_sentences, table1_sentences, vb_sentences,
                                            wild_probe_sentences)
from fernb.studies.parts.learning import (curve_checks, curve_learning_histories,
                                          curve_majority, default_checks, default_histories,
                                          lab_majority, landmark_curves, wild_curves)
from fernb.studies.parts.protocol import KIND_NAMES, Plan, plan
from fernb.studies.parts.results import Results, load, run
from fernb.studies.parts.settings import PROSE_NUMBERS, Settings
from fernb.studies.parts.tables import (COLUMNS, complexity, curve_figure, curve_table,
                                        data_figure, data_table, landmark_figure, names,
                                        rate_table, schedule, stage2_table, table1, table3,
                                        travel_table)
from fernb.verdicts import Claim
from fernb.verdicts import claims_table as _claims_table

__all__ = [
    "COLUMNS", "KIND_NAMES", "PROSE_NUMBERS", "Plan", "Results", "Settings", "arithmetic",
    "claims", "claims_table", "complexity", "curve_checks", "curve_claims", "curve_figure",
    "curve_learning_histories", "curve_majority", "curve_table", "data_figure", "data_table",
    "default_checks", "default_histories", "displacements", "error_table", "gradcam_evidence",
    "gradcam_figure", "highlights", "lab_majority", "landmark_curves", "landmark_figure",
    "landmark_figure_faces", "landmark_pairs", "landmark_probe", "load", "measured", "metrics",
    "minutes", "names", "own_part_lift", "part_displacements", "plan", "rate_table",
    "real_data", "run", "schedule", "stage2_table", "table1", "table3", "travel_table",
    "wild_curves",
]


def highlights(results: Results, *, shifts: pd.DataFrame, probe: pd.DataFrame,
               wild_probe: pd.DataFrame, errors: pd.DataFrame, judged: Mapping[str, Claim],
               verdicts: pd.DataFrame, comparison: pd.DataFrame) -> dict[str, object]:
    """Every number and sentence the chapter's prose cites (glued by
    :meth:`fernb.report.Report.glue_all`).

    Args:
        shifts: :func:`displacements` of the lab set (empty without neutral faces).
        probe, wild_probe: :func:`landmark_probe` of the first lab trial and of the wild
            set; errors: :func:`error_table`.
        judged: :func:`claims`; verdicts: :func:`curve_claims`.
        comparison: the paper-vs-book table (:func:`fernb.report.paper_vs_book`).
    """
    settings = results.settings
    table_names = names(settings)
    checks = default_checks(results, table_names)
    curve = curve_checks(results)
    out: dict[str, object] = {}
    out |= settings_sentences(results)
    out |= rate_sentences(results)
    out |= learning_sentences(checks, curve)
    out |= table1_sentences(results, table_names, judged)
    out |= curve_sentences(results, verdicts)
    out |= mechanism_sentences(results, curve)
    if len(shifts):
        out |= displacement_sentences(shifts)
    out |= feature_sentences(results)
    out |= probe_sentences(probe, shifts, judged)
    out |= wild_probe_sentences(results, wild_probe)
    out |= vb_sentences(errors, judged)
    out |= summary_sentences(results, table_names, judged)
    out |= paper_vs_book_sentences(comparison)
    out["trained"] = len(results.outcome.trained) if results.outcome is not None else 0
    out["reused"] = len(results.outcome.reused) if results.outcome is not None else 0
    out["n_jobs"] = len(results.entries)
    out["lab_majority"] = 100 * lab_majority(results)
    out["holds_count"] = int(sum(c.verdict == "holds" for c in judged.values()))
    out["claims_count"] = len(judged)
    out["curve_holds"] = int((verdicts["verdict"] == "holds").sum())
    out["curve_rows"] = len(verdicts)
    out["n_trials"] = len(settings.trials)
    out["networks_trained"] = int(np.sum([1 for _ in results.plan.networks]))
    return out


def claims_table(judged: Mapping[str, Claim]) -> pd.DataFrame:
    """The reader's claims table of :func:`claims` (:func:`fernb.verdicts.claims_table`)."""
    return _claims_table(list(judged.values()))
