"""Ferreira et al., "Physiological Inspired Deep Neural Networks for Emotion Recognition"
(IEEE Access 2018): the chapter's study.

- :mod:`.settings`: the parameters (:class:`Settings`), the variants and the numbers the prose
  may state (:data:`PROSE_NUMBERS`);
- :mod:`.data`: faces, target maps, subject-independent folds, the distractor cue's test sets;
- :mod:`.protocol`: every trained model as a stored job (:func:`plan`, :func:`run`) and the
  results loaded back (:class:`Results`);
- :mod:`.scoring`: one model's scores on its test faces (maps, Grad-CAM, evidence, the cue);
- :mod:`.tables` and :mod:`.figures`: what the chapter shows;
- :mod:`.claims`: the paper's claims and the mechanism regime's, judged on this run, and the
  paper-vs-book values; :mod:`.highlights`: every number and sentence the prose cites.

Choices where the paper is silent are parameters of :class:`Settings`, documented in the
chapter and in :mod:`fernb.models.relevance`; the weakly supervised terms are taken as sums
over a 120 x 120 map (``weak_reduction="sum"``): eqs. (6)-(7) print a 1/(m x n) mean, but the
lambdas of Fig. 10 only make sense for sums (the l1 norm and the total variation the text
names); a per-pixel mean times 14,400 keeps the paper's balance at any image size.
"""
from __future__ import annotations

from .claims import claims, measured
from .data import (CUE_CONDITIONS, Prepared, fold_splits, prepare, prepared, show_indices,
                   target_splits)
from .highlights import highlights, run_time
from .protocol import Arch, Results, Run, arch, data_spec, fit_config, load, loss, plan, run
from .settings import LABELS, PROSE_NUMBERS, VARIANTS, Settings
from . import figures, tables

__all__ = ["CUE_CONDITIONS", "LABELS", "PROSE_NUMBERS", "VARIANTS", "Arch", "Prepared", "Results",
           "Run", "Settings", "arch", "claims", "data_spec", "figures", "fit_config",
           "fold_splits", "highlights", "load", "loss", "measured", "plan", "prepare", "prepared",
           "run", "run_time", "show_indices", "tables", "target_splits"]
