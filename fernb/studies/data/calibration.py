"""The calibration baseline: ESR's single network (paper Fig. 3) trained from scratch on one
subject-independent split of each synthetic preset and tested on unseen subjects, to show how
hard each preset is for a small network. Each baseline is a stored job (:mod:`fernb.store`)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fernb.data.datasets import DataSpec
from fernb.data.splits import holdout
from fernb.device import computed_precision
from fernb.evaluate import accuracy, per_class_recall, predict, top_confusions
from fernb.models.esr import single_network
from fernb.store import Entry, Job, Store
from fernb.studies.data.settings import Settings
from fernb.train import FitConfig, fit, sgd
from fernb.verdicts import Learning, learned

PRESETS = ("synth-lab", "synth-wild")


@dataclass
class Calibration:
    """One preset's baseline: test logits (N, 1, C), labels, its training history (a frame
    per epoch) and the classes."""

    logits: np.ndarray
    labels: np.ndarray
    history: pd.DataFrame
    classes: tuple[str, ...]

    def learning(self, name: str) -> Learning:
        """Did the baseline learn (above the test split's majority class)?"""
        return learned(name, self.logits, self.labels, n_classes=len(self.classes))


def _train(job: Job, entry: Entry, store: Store) -> dict[str, Any]:
    """Train and test one baseline (a job of :func:`jobs`)."""
    spec = job.spec
    data = spec["data"].load()
    split = holdout(data.labels, data.subjects, val_fraction=0.15, test_fraction=0.2,
                    seed=spec["seed"])
    model = single_network(n_classes=data.n_classes, width=spec["width"], seed=spec["seed"])
    config = FitConfig(epochs=spec["epochs"], optimizer=sgd(spec["lr"]),
                       batch_size=spec["batch_size"], device=job.runtime["device"],
                       precision=spec["precision"], seed=spec["seed"])
    history = fit(model, data.subset(split.train), data.subset(split.val), config,
                  checkpoint=entry.checkpoint)
    test = data.subset(split.test)
    logits = predict(model, test, device=config.device, precision=config.precision).numpy()
    entry.save_arrays("test", logits=logits, labels=test.labels)
    entry.save_frame("history", history.to_frame().reset_index())
    return {"accuracy": accuracy(logits, test.labels), "epochs": len(history)}


def jobs(settings: Settings) -> dict[str, Job]:
    """One job per preset: synth-lab at ``image_size`` and ``width``, synth-wild at
    ``wild_size`` and ``wild_width`` with ``wild_epochs``; SGD with momentum 0.9, the epoch
    with the lowest validation loss kept (15 % of subjects validate, 20 % test:
    :func:`fernb.data.splits.holdout`)."""
    s = settings
    precision = computed_precision(s.precision, s.device)
    common = dict(lr=s.lr, batch_size=s.batch_size, seed=s.seed, precision=precision)
    specs = {
        "synth-lab": dict(data=DataSpec.of("synth-lab", size=s.image_size,
                                           n_subjects=s.n_subjects_lab, seed=s.seed),
                          width=s.width, epochs=s.epochs, **common),
        "synth-wild": dict(data=DataSpec.of("synth-wild", size=s.wild_size,
                                            n_subjects=s.n_subjects_wild, seed=s.seed),
                           width=s.wild_width, epochs=s.wild_epochs, **common),
    }
    return {name: Job("data.calibration", spec, _train, label=f"{name} baseline",
                      runtime={"device": s.device}) for name, spec in specs.items()}


def calibrate(settings: Settings, store: Store) -> dict[str, Calibration]:
    """Train (or load from ``store``) both presets' baselines."""
    planned = jobs(settings)
    store.run(list(planned.values()))
    found = {}
    for name, job in planned.items():
        entry = store.get(job)
        test = entry.arrays("test")
        classes = job.spec["data"].load().classes
        found[name] = Calibration(test["logits"], test["labels"], entry.frame("history"),
                                  classes)
    return found


def calibration_table(calibrations: Mapping[str, Calibration]) -> pd.DataFrame:
    """Test images, test accuracy (%) and epochs trained per preset."""
    rows = [{"dataset": name, "test images": len(c.labels),
             "test accuracy (%)": 100 * accuracy(c.logits, c.labels),
             "epochs trained": len(c.history)} for name, c in calibrations.items()]
    return pd.DataFrame(rows).set_index("dataset")


def histories(calibrations: Mapping[str, Calibration]) -> dict[str, list[pd.DataFrame]]:
    """Each baseline's training curve, for :meth:`fernb.report.Report.learning`."""
    return {name: [c.history] for name, c in calibrations.items()}


def _confusions(calibration: Calibration, k: int = 3) -> str:
    pairs = top_confusions(calibration.logits, calibration.labels, calibration.classes, k=k)
    return ", ".join(f"{t} taken for {p} ({100 * v:.0f}%)" for (t, p), v in pairs.items())


def _weakest(calibration: Calibration, k: int = 2) -> str:
    recall = per_class_recall(calibration.logits, calibration.labels,
                              calibration.classes).dropna().sort_values(kind="stable")
    names = [f"{c} ({100 * v:.0f}%)" for c, v in recall.head(k).items()]
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def highlights(calibrations: Mapping[str, Calibration]) -> dict[str, Any]:
    """What the chapter's prose cites, per preset (``synth_lab_...``, ``synth_wild_...``):
    the test accuracy (%), the largest confusions and the classes recognised least, in
    words."""
    found: dict[str, Any] = {}
    for name, c in calibrations.items():
        key = name.replace("-", "_")
        found[f"{key}_accuracy"] = round(100 * accuracy(c.logits, c.labels), 1)
        found[f"{key}_confusions"] = _confusions(c)
        found[f"{key}_weakest"] = _weakest(c)
    return found
