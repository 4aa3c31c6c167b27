"""The data chapter (notebooks/00_data.ipynb): its parameters, the calibration baseline of
each synthetic preset (stored runs) and the pictures of the generator's knobs."""
from fernb.studies.data.calibration import (PRESETS, Calibration, calibrate, calibration_table,
                                            highlights, histories, jobs)
from fernb.studies.data.knobs import (annotation_counts, annotation_figure, blend_figure,
                                      blend_pairs_table, cue_figure, knob_table, motion_figure,
                                      relabelled_share)
from fernb.studies.data.settings import PROSE_NUMBERS, Settings

__all__ = ["PRESETS", "PROSE_NUMBERS", "Calibration", "Settings", "annotation_counts",
           "annotation_figure", "blend_figure", "blend_pairs_table", "calibrate",
           "calibration_table", "cue_figure", "highlights", "histories", "jobs", "knob_table",
           "motion_figure", "relabelled_share"]
