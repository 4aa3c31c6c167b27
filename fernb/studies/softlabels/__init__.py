"""Chapter 4: soft labels and the gamma-perturbation ensemble (Gan, Chen and Xu, Pattern
Recognition Letters 125, 2019), as ``notebooks/04_soft_labels.ipynb`` runs it.

- :mod:`.settings`: the parameters (:class:`Settings`) and the constants the prose cites.
- :mod:`.protocol`: the plan, every network a job of the run store.
- :mod:`.results`: the results read back, and the per-image scores.
- :mod:`.tables`: numeric tables and figures.
- :mod:`.claims`: the claims judged with :mod:`fernb.verdicts`, the paper-vs-book values.
- :mod:`.prose`: every value and sentence the prose cites (:func:`highlights`).
"""
from fernb.studies.softlabels.claims import all_claims, as_metrics, measured
from fernb.studies.softlabels.prose import Clock, highlights
from fernb.studies.softlabels.protocol import (data_spec, mechanism_knobs, plan, source_spec,
                                               split)
from fernb.studies.softlabels.results import Results, run
from fernb.studies.softlabels.settings import PROSE_NUMBERS, Settings
from fernb.studies.softlabels.tables import (accuracy_table, confusion, d_frames, datasets,
                                             diagonal_table, diversity_table, group_name,
                                             heatmaps, histories, mistakes_table, observations,
                                             perturbation_table, soft_label_table,
                                             split_sizes, spread_table, sweep_figure,
                                             sweep_table, trace_figure, trace_table)

__all__ = [
    "PROSE_NUMBERS", "Clock", "Results", "Settings", "accuracy_table", "all_claims", "as_metrics",
    "confusion",
    "d_frames", "data_spec", "datasets", "diagonal_table", "diversity_table", "group_name",
    "heatmaps", "highlights", "histories", "measured", "mechanism_knobs", "mistakes_table",
    "observations", "perturbation_table", "plan", "run", "soft_label_table", "source_spec",
    "split", "split_sizes", "spread_table", "sweep_figure", "sweep_table", "trace_figure",
    "trace_table",
]
