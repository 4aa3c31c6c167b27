"""Training: one loop for every chapter (:func:`fit`), its configuration, optimizers and
schedules, and ESR's Algorithm 1 beside it."""
from fernb.train.esr import (STRATEGIES, balanced_subset, finetune_affect, quadrants,
                             train_bagging, train_esr)
from fernb.train.loop import Data, FitConfig, History, fit, freeze
from fernb.train.optim import Optimizer, Schedule, adam, sgd

__all__ = ["STRATEGIES", "Data", "FitConfig", "History", "Optimizer", "Schedule", "adam",
           "balanced_subset", "finetune_affect", "fit", "freeze", "quadrants", "sgd",
           "train_bagging", "train_esr"]
