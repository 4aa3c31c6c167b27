"""ESR's experiments (Siqueira, Magg and Wermter, AAAI 2020), as chapter 1 runs them.

- :mod:`~fernb.studies.esr.settings`: the chapter's parameters (``Settings``) and the
  constants its prose may cite (``PROSE_NUMBERS``);
- :mod:`~fernb.studies.esr.protocol`: the plan as stored jobs (one per trial and model), the
  functions that run them and the results read back; :mod:`~fernb.studies.esr.wild` the same
  for ESR-9 and its affect heads;
- :mod:`~fernb.studies.esr.tables`: Tables 1, 2 and 4, Figs. 4 and 5, diversity, the
  identical-starts control, measured cost and the training curves, as numbers;
- :mod:`~fernb.studies.esr.claims`: which models learned, the paper's claims judged on
  independent units, the paper-vs-book values and the prose's numbers and sentences.

The notebook (``notebooks/01_esr.ipynb``) calls what this module exports.
"""
from fernb.studies.esr.claims import (highlights, judge_claims, learning_checks, learning_view,
                                      measured, paper_table)
from fernb.studies.esr.protocol import LabResults, LabTraining, Results, Run, jobs, lab_data, \
    load, plan, run
from fernb.studies.esr.wild import WildResults, wild_data, wild_jobs
from fernb.studies.esr.settings import PROSE_NUMBERS, Settings
from fernb.studies.esr.tables import (best_branch, by_level, confusion_esr4, confusion_esr9,
                                      convergence, diversity_table, esr9_members,
                                      evidence_table, fig4, fig5_convergence, first_update,
                                      first_update_table, init_control, lab_curves,
                                      majority_rate, measured_cost, p_formats,
                                      paper_complexity, rmse_table, runs_table,
                                      saliency_figure, scaled_down, table1, table2,
                                      wild_curves)

__all__ = ["LabResults", "LabTraining", "PROSE_NUMBERS", "Results", "Run", "Settings",
           "WildResults", "best_branch", "by_level", "confusion_esr4",
           "confusion_esr9", "convergence", "diversity_table", "esr9_members",
           "evidence_table", "fig4", "fig5_convergence", "first_update", "first_update_table",
           "highlights", "init_control", "jobs", "judge_claims", "lab_curves", "lab_data",
           "learning_checks",
           "learning_view", "paper_table",
           "load", "majority_rate", "measured", "measured_cost", "p_formats",
           "paper_complexity", "plan", "rmse_table", "run", "runs_table", "saliency_figure",
           "scaled_down", "table1", "table2", "wild_curves", "wild_data", "wild_jobs"]
