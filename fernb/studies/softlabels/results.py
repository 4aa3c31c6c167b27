"""Chapter 4's results, read back from the run store, and the per-image scores every table
and claim is computed from.

:func:`run` runs the plan (:mod:`.protocol`) in two steps, the sweep first because the
ensembles' gammas come from it, and returns :class:`Results`. Scores are kept per image so
that two ensembles tested on the same faces are compared image by image
(:func:`fernb.evaluate.clustered_test`): correctness under eq. (7) against the annotated
label and, where the generator knows it, the clean label (the face's primary emotion); the
negative log-likelihood of the face's true mixture; the members' disagreement.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from fernb.data.datasets import FaceDataset
from fernb.data.splits import Split
from fernb.ensemble import disagreement_per_sample
from fernb.evaluate import to_predictions
from fernb.softlabels import (Violation, diagonal_violations, mean_probabilities, mixture_nll,
                              restrict_soft_labels)
from fernb.store import Job, Store
from fernb.studies.softlabels.protocol import (Sweep, constructed, constructor_job,
                                               ensemble_jobs, group_targets, main_d, other_d,
                                               oracle_soft_labels, plan, read_sweep, regimes,
                                               source_job, split, sweep_jobs)
from fernb.studies.softlabels.settings import Settings
from fernb.verdicts import Learning, learned

RULE = "score_average"  # eq. (7): the unweighted average of the members' scores (logits)
D_NAMES = {"source": "the source's D", "dataset": "the dataset's own D",
           "oracle": "the oracle D (true mixtures)"}


@dataclass(frozen=True)
class SoftLabels:
    """One D in the dataset's class order: where it comes from, and Sec. 3.2's rule checked
    on it (``violations``: rows whose maximum is off their own class)."""

    name: str
    built_on: str
    matrix: np.ndarray = field(repr=False)
    classes: tuple[str, ...]

    @property
    def violations(self) -> list[Violation]:
        return diagonal_violations(self.matrix)

    @property
    def valid(self) -> bool:
        return not self.violations

    @property
    def title(self) -> str:
        """What a reader calls it, e.g. "D built on synth-lab (the source)"."""
        if self.name == "oracle":
            return f"oracle D ({self.built_on}'s true mixtures)"
        return f"D built on {self.built_on} (the {self.name})"

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.matrix, index=pd.Index(self.classes, name="true class"),
                            columns=pd.Index(self.classes, name="soft label"))


@dataclass
class Trained:
    """One stored network: its target, validation and test logits (N, C), history, trace
    (hard-label networks: validation accuracy and D's violations per epoch) and the seconds
    it took when first trained."""

    label: str
    target: dict[str, Any]
    val: np.ndarray = field(repr=False)
    test: np.ndarray = field(repr=False)
    history: pd.DataFrame = field(repr=False)
    trace: pd.DataFrame | None = field(repr=False)
    seconds: float
    val_labels: np.ndarray = field(repr=False)
    test_labels: np.ndarray = field(repr=False)
    classes: tuple[str, ...] = ()

    @classmethod
    def load(cls, job: Job, store: Store) -> Trained:
        entry = store.get(job)
        p = entry.arrays("predictions")
        trace = entry.frame("trace") if (entry.path / "trace.csv").exists() else None
        return cls(job.label, dict(job.spec["target"]), p["val"], p["test"],
                   entry.frame("history"), trace, float(entry.record["seconds"]),
                   p["val_labels"], p["test_labels"], tuple(entry.json("classes")))

    @property
    def gamma(self) -> float | None:
        return self.target.get("gamma")


@dataclass
class Group:
    """One ensemble kind of a regime: its D (None: hard labels), each member's gamma and its
    networks by repeat and member."""

    name: str
    d: str | None
    gammas: tuple[float | None, ...]
    networks: list[list[Trained]] = field(repr=False)

    def logits(self, part: str = "test") -> np.ndarray:
        """(R, N, M, C) logits of every repeat's ensemble."""
        return np.stack([np.stack([getattr(n, part) for n in row], axis=1)
                         for row in self.networks])

    @property
    def members(self) -> list[Trained]:
        return [n for row in self.networks for n in row]


@dataclass
class Scores:
    """Per-image scores of one group: (R, N) for its ensembles, (R * M, N) for its members;
    None where the data do not allow it (no clean labels or mixtures, one member)."""

    correct: np.ndarray
    correct_probabilities: np.ndarray
    member_correct: np.ndarray
    clean: np.ndarray | None
    member_clean: np.ndarray | None
    nll: np.ndarray | None
    member_nll: np.ndarray | None
    disagreement: np.ndarray | None


@dataclass
class Regime:
    """One regime's faces, split, D matrices and ensembles."""

    name: str
    data: FaceDataset = field(repr=False)
    split: Split = field(repr=False)
    constructor: Trained
    soft_labels: dict[str, SoftLabels]
    main: str
    groups: dict[str, Group]
    _scores: dict[str, Scores] = field(default_factory=dict, repr=False)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.data.classes

    @property
    def d(self) -> SoftLabels:
        """The D the regime's soft-label ensembles train on."""
        return self.soft_labels[self.main]

    @property
    def test_labels(self) -> np.ndarray:
        return self.data.labels[self.split.test]

    @property
    def clean_labels(self) -> np.ndarray | None:
        """The primary emotion of each test face, where the generator kept it."""
        clean = self.data.meta.get("clean_label")
        return None if clean is None else np.asarray(clean)[self.split.test]

    @property
    def mixtures(self) -> np.ndarray | None:
        """The true emotion mixture of each test face, where the generator knows it."""
        return None if self.data.mixtures is None else self.data.mixtures[self.split.test]

    @property
    def majority(self) -> float:
        """The test split's majority-class rate (the floor every model must beat)."""
        y = self.test_labels
        return float(np.bincount(y, minlength=len(self.classes)).max() / len(y))

    def scores(self, group: str) -> Scores:
        if group not in self._scores:
            self._scores[group] = _scores(self, self.groups[group])
        return self._scores[group]

    def learning(self, group: str) -> list[Learning]:
        """Did the group learn: each repeat's ensemble (eq. 7) and each member, on the test
        split against its majority class."""
        g, y, c = self.groups[group], self.test_labels, len(self.classes)
        checks = [learned(f"{self.name}: {group} ensemble" + (f", repeat {r}" if r else ""),
                          z, y, n_classes=c, rule=RULE) for r, z in enumerate(g.logits())]
        for r, row in enumerate(g.networks):
            for k, n in enumerate(row):
                checks.append(learned(f"{self.name}: {group} member {k + 1}"
                                      + (f", repeat {r}" if r else ""), n.test, y, n_classes=c))
        return checks


def _scores(regime: Regime, group: Group) -> Scores:
    z = group.logits()  # (R, N, M, C)
    y, clean, mix = regime.test_labels, regime.clean_labels, regime.mixtures
    members = np.concatenate([z[:, :, k] for k in range(z.shape[2])])  # (R * M, N, C)

    def right(outputs: np.ndarray, labels: np.ndarray, rule: str | None = RULE) -> np.ndarray:
        return np.stack([to_predictions(o, rule) == labels for o in outputs]).astype(float)

    probs = np.stack([mean_probabilities(e) for e in z])  # (R, N, C)
    return Scores(
        correct=right(z, y), correct_probabilities=right(probs, y, None),
        member_correct=right(members, y, None),
        clean=None if clean is None else right(z, clean),
        member_clean=None if clean is None else right(members, clean, None),
        nll=None if mix is None else np.stack([mixture_nll(p, mix) for p in probs]),
        member_nll=None if mix is None else np.stack(
            [mixture_nll(mean_probabilities(m), mix) for m in members]),
        disagreement=None if z.shape[2] < 2 else np.stack(
            [disagreement_per_sample(e, y) for e in z]))


@dataclass
class Results:
    """Everything chapter 4 shows: the source network, the sweep and each regime."""

    settings: Settings
    source: Trained | None
    sweep: Sweep
    sweep_networks: list[Trained]
    regimes: dict[str, Regime]
    seconds: float

    @property
    def default(self) -> Regime:
        return self.regimes["default"]

    @property
    def mechanism(self) -> Regime | None:
        return self.regimes.get("mechanism")

    @cached_property
    def learning(self) -> dict[str, list[Learning]]:
        """Did-it-learn checks by regime (the source network with the default regime)."""
        out = {}
        for name, regime in self.regimes.items():
            checks = [c for g in regime.groups for c in regime.learning(g)]
            if name == "default" and self.source is not None:
                s = self.source
                checks.insert(0, learned("source network", s.test, s.test_labels,
                                         n_classes=len(s.classes)))
            out[name] = checks
        return out


def _soft_labels(settings: Settings, regime: str, data: FaceDataset, s: Split,
                 store: Store) -> dict[str, SoftLabels]:
    found = {}
    source = source_job(settings)
    if source is not None:
        d, classes = constructed(store.get(source))
        if set(data.classes) <= set(classes):
            found["source"] = SoftLabels("source", settings.source,
                                         restrict_soft_labels(d, classes, data.classes),
                                         data.classes)
    d, _ = constructed(store.get(constructor_job(settings, regime)))
    found["dataset"] = SoftLabels("dataset", data.name, d, data.classes)
    if data.mixtures is not None:
        found["oracle"] = SoftLabels("oracle", data.name, oracle_soft_labels(data, s),
                                     data.classes)
    return found


def load(settings: Settings, store: Store, sweep: Sweep) -> Results:
    """The study's results from the store (every job must be stored: :func:`run`)."""
    jobs = ensemble_jobs(settings, sweep)
    found = {}
    for regime in regimes(settings):
        data = jobs[(regime, "hard", 0, 0)].spec["data"].load()
        s = split(data, settings.seed)
        groups = {}
        for group, targets in group_targets(settings, regime, sweep).items():
            networks = [[Trained.load(jobs[(regime, group, r, k)], store)
                         for k in range(len(targets))] for r in range(settings.repeats)]
            groups[group] = Group(group, targets[0].get("d"),
                                  tuple(t.get("gamma") for t in targets), networks)
        found[regime] = Regime(regime, data, s, Trained.load(constructor_job(settings, regime),
                                                             store),
                               _soft_labels(settings, regime, data, s, store), main_d(settings),
                               groups)
    source = source_job(settings)
    everything = {j.key: j for j in plan(settings, sweep)}.values()  # each network once
    seconds = sum(float(store.get(j).record["seconds"]) for j in everything)
    return Results(settings, None if source is None else Trained.load(source, store), sweep,
                   [Trained.load(j, store) for j in sweep_jobs(settings)[1:]], found, seconds)


def run(settings: Settings, store: Store | None = None) -> Results:
    """Train what is not stored (the sweep first: the ensembles' gammas come from it), then
    read every result back."""
    store = store or Store()
    store.run(plan(settings))
    sweep = read_sweep(settings, store)
    store.run(plan(settings, sweep))
    return load(settings, store, sweep)


def other_name(settings: Settings) -> str | None:
    """The other D's name, for the text (None when there is one D only)."""
    other = other_d(settings)
    return None if other is None else D_NAMES[other]

