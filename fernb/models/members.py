"""Ensembles of independent networks with the book's one output convention.

:class:`Members` holds M networks in an ``nn.ModuleList`` and stacks their outputs into
logits of shape (batch, members, classes), so every decision rule in :mod:`fernb.ensemble`
and every metric in :mod:`fernb.evaluate` applies to it. :meth:`Members.build` gives every
network its own reproducible initialisation (:func:`fernb.seeding.seeded` with the member's
index), so members differ from each other and are identical on a rerun with the same seed.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from fernb.seeding import seeded


def as_members(logits: torch.Tensor) -> torch.Tensor:
    """A network's (B, C) output as (B, 1, C); (B, M, C) passes through."""
    if logits.ndim == 2:
        return logits.unsqueeze(1)
    if logits.ndim == 3:
        return logits
    raise ValueError(f"expected logits (batch, classes) or (batch, members, classes), got "
                     f"shape {tuple(logits.shape)}")


class Members(nn.Module):
    """Independent networks as one model: ``forward(x)`` -> (B, M, C).

    Args:
        networks: modules returning (B, C) or (B, 1, C) logits for the same input.
    """

    def __init__(self, networks: Sequence[nn.Module]) -> None:
        super().__init__()
        if not len(networks):
            raise ValueError("Members needs at least one network")
        self.networks = nn.ModuleList(networks)

    @classmethod
    def build(cls, builder: Callable[[], nn.Module], n: int, *, seed: int) -> Members:
        """``n`` networks from ``builder()``, network ``k`` initialised under
        ``seeded(seed, k)``."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        networks = []
        for k in range(n):
            with seeded(seed, k):
                networks.append(builder())
        return cls(networks)

    def __len__(self) -> int:
        return len(self.networks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([as_members(net(x)) for net in self.networks], dim=1)  # (B, M, C)

    def member(self, index: int) -> nn.Module:
        """Network ``index`` alone, as a model with members = 1."""
        return _Single(self.networks[index])


class _Single(nn.Module):
    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return as_members(self.network(x))  # (B, 1, C)
