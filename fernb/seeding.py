"""Reproducible, independent random streams for every member of an ensemble.

Every ensemble in the book draws each member's initial weights from its own stream, derived
from the run's seed and the member's index, so that members start different from each other,
the same on every rerun, and independently of how many random numbers anything else drew
before (training, shuffling, augmentation). A member's stream never touches the global RNG
state of the caller: :func:`seeded` forks it.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed derived from ``seed`` and ``keys`` (e.g. a member index) by NumPy's
    ``SeedSequence``: different keys give statistically independent streams."""
    entropy = [int(seed) & 0xFFFFFFFF]
    for key in keys:
        if isinstance(key, str):
            entropy += list(key.encode())
        elif isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            entropy.append(int(key) & 0xFFFFFFFF)
        else:
            raise TypeError(f"seed keys must be ints or strings, got {key!r}")
    return int(np.random.SeedSequence(entropy).generate_state(2, np.uint32).view(np.uint64)[0]
               >> np.uint64(1))


@contextmanager
def seeded(seed: int, *keys: int | str) -> Iterator[None]:
    """Run the block with torch's CPU RNG seeded by :func:`derive_seed`, then restore the
    caller's RNG state.

    Example::

        with seeded(seed, member):
            network = build()  # its initial weights depend on (seed, member) only
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, *keys))
        yield
