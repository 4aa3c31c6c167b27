"""Chapter 0 (the data): parameter constraints and the calibration baseline.

The calibration baseline trains ESR's single network (paper Fig. 3) from scratch on one
subject-independent split of a synthetic preset and tests it on unseen subjects, to show how
hard each preset is for a small network.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from fernb.data import synthetic
from fernb.data.datasets import FaceDataset
from fernb.data.splits import holdout
from fernb.evaluate import accuracy, per_class_recall, predict, top_confusions
from fernb.models.esr import single_network
from fernb.params import (LEARNING_RATE, POSITIVE_INT, SEED, Device, Range, Rules, relation)
from fernb.train import History, fit

PARAMETERS = Rules(
    values={
        "n_subjects_lab": Range(4, 10_000, integer=True),
        "n_subjects_wild": Range(4, 10_000, integer=True),
        "display_size": Range(synthetic.MIN_SIZE, synthetic.MAX_SIZE, integer=True),
        "n_folds": Range(3, 100, integer=True),
        "image_size": Range(48, synthetic.MAX_SIZE, integer=True),
        "wild_size": Range(48, synthetic.MAX_SIZE, integer=True),
        "width": Range(0, 4, open_low=True), "wild_width": Range(0, 4, open_low=True),
        "epochs": POSITIVE_INT, "wild_epochs": POSITIVE_INT, "batch_size": POSITIVE_INT,
        "lr": LEARNING_RATE, "seed": SEED, "device": Device(),
    },
    relations=[
        relation(("n_folds", "n_subjects_lab"), lambda v: v["n_folds"] <= v["n_subjects_lab"],
                 lambda v: f"n_folds = {v['n_folds']} subject-independent folds need at least "
                           f"as many subjects: n_subjects_lab = {v['n_subjects_lab']}"),
    ],
)


@dataclass
class Calibration:
    """Test logits (N, 1, C) and labels of the baseline, its history and the classes."""

    logits: torch.Tensor
    labels: np.ndarray
    history: History
    classes: tuple[str, ...]


def calibrate(data: FaceDataset, *, width: float, epochs: int, lr: float, batch_size: int,
              seed: int, device: str = "auto") -> Calibration:
    """Train the single network on a subject-independent split (20 % of subjects test, 15 %
    validation; :func:`fernb.data.splits.holdout`), keeping the epoch with the lowest
    validation loss, and predict the test subjects."""
    split = holdout(data.labels, data.subjects, val_fraction=0.15, test_fraction=0.2, seed=seed)
    model = single_network(n_classes=data.n_classes, width=width, seed=seed)
    history = fit(model, data.subset(split.train), data.subset(split.val), epochs=epochs, lr=lr,
                  batch_size=batch_size, device=device, seed=seed, progress=False)
    test = data.subset(split.test)
    return Calibration(predict(model, test, device=device), test.labels, history, data.classes)


def calibration_table(calibrations: dict[str, Calibration]) -> pd.DataFrame:
    """Test images, test accuracy (%) and epochs trained per preset."""
    rows = [{"dataset": name, "test images": len(c.labels),
             "test accuracy (%)": round(100 * accuracy(c.logits, c.labels), 1),
             "epochs trained": len(c.history)} for name, c in calibrations.items()]
    return pd.DataFrame(rows).set_index("dataset")


def top_confusions_text(calibration: Calibration, k: int = 3) -> str:
    """The ``k`` largest confusions of a run in words, e.g. "fear taken for surprise (25%)"."""
    pairs = top_confusions(calibration.logits, calibration.labels, calibration.classes, k=k)
    return ", ".join(f"{t} taken for {p} ({100 * v:.0f}%)" for (t, p), v in pairs.items())


def weakest_classes_text(calibration: Calibration, k: int = 2) -> str:
    """The ``k`` classes recognised least (recall), e.g. "fear (31%) and disgust (40%)"."""
    recall = per_class_recall(calibration.logits, calibration.labels,
                              calibration.classes).dropna().sort_values(kind="stable")
    names = [f"{c} ({100 * v:.0f}%)" for c, v in recall.head(k).items()]
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
