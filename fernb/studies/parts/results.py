"""Chapter 3's stored results read back: each network's entries, the test labels of each
place, and ensembles' logits (:class:`Results`); :func:`run` plans, trains what the store
lacks and loads."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fernb.store import Entry, Store
from fernb.studies.parts.protocol import Network, Plan, plan
from fernb.studies.parts.settings import Settings


@dataclass
class Results:
    """What the chapter reads back from the store: the plan, each network's entry (and its
    stage-1 entry), the test labels of each place, and the rate entry."""

    plan: Plan
    entries: dict[str, Entry]
    labels: dict[tuple[str, str], np.ndarray]
    outcome: Any = None

    @property
    def settings(self) -> Settings:
        return self.plan.settings

    @property
    def rate(self) -> Entry:
        return self.entries[self.plan.rate.key]

    def networks(self, regime: str, where: str | None = None, kind: str | None = None,
                 seed: int | None = None) -> list[Network]:
        return [n for n in self.plan.networks if n.regime == regime
                and (where is None or n.where == where) and (kind is None or n.kind == kind)
                and (seed is None or n.seed == seed)]

    def entry(self, network: Network) -> Entry:
        return self.entries[network.job.key]

    def stage1(self, network: Network) -> Entry:
        if network.stage1 is None:
            raise ValueError(f"{network.name} has no stage 1")
        return self.entries[network.stage1.key]

    def logits(self, regime: str, where: str, kind: str, *, seed: int = 0,
               artifact: str = "test") -> np.ndarray:
        """The (N, M, C) logits of an ensemble (its members stacked) on the test set, after
        stage 2 (``artifact="head"``) or on the lab set (``"cross"``)."""
        members = self.networks(regime, where, kind, seed)
        if not members:
            raise ValueError(f"no {kind} networks in {regime} {where} (seed {seed})")
        return np.concatenate([self.entry(n).arrays(artifact)["logits"] for n in members],
                              axis=1)


def load(plan: Plan, store: Store) -> Results:
    """The stored results of every job of ``plan`` (an error names a job not yet run)."""
    entries = {job.key: store.get(job) for job in plan.jobs}
    for network in plan.networks:
        if network.stage1 is not None:
            entries[network.stage1.key] = store.get(network.stage1)
    labels = {}
    for network in plan.networks:
        key = (network.regime, network.where)
        if key not in labels:
            labels[key] = network.job.spec["test"].load().labels
        if network.job.spec.get("cross") is not None and ("default", "cross") not in labels:
            labels[("default", "cross")] = network.job.spec["cross"].load().labels
    return Results(plan, entries, labels)


def run(work: Plan | Settings, store: Store) -> Results:
    """Train what the store does not hold of a plan (or of the settings' plan), printing what
    was reused and what was trained, and read everything back."""
    work = plan(work) if isinstance(work, Settings) else work
    outcome = store.run(work.jobs)
    results = load(work, store)
    results.outcome = outcome
    return results
