"""Ensembles of independent networks with the book's one output convention.

:class:`Members` holds M networks in an ``nn.ModuleList`` and stacks their outputs into
logits of shape (batch, members, classes), so every decision rule in :mod:`fernb.ensemble`
and every metric in :mod:`fernb.evaluate` applies to it. :meth:`Members.build` gives every
network its own reproducible initialisation (:func:`fernb.seeding.seeded` with the member's
index), so members differ from each other and are identical on a rerun with the same seed.

``forward`` takes any networks; the rest of the model contract (:mod:`fernb.models`) needs
networks that follow it: ``forward_features`` returns a tuple of each network's features,
``forward_head`` takes that tuple, and ``cam_layer(member)`` is network ``member``'s own.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from fernb.models.contract import Features, member_index
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

    def forward_features(self, x: torch.Tensor) -> tuple[Features, ...]:
        """Each network's features, in member order."""
        return tuple(_contract(net, "forward_features").forward_features(x)
                     for net in self.networks)

    def forward_head(self, features: tuple[Features, ...]) -> torch.Tensor:
        """Each network's head on its own features: (B, M, C)."""
        if not isinstance(features, tuple) or len(features) != len(self.networks):
            raise ValueError(f"features must be a tuple of {len(self.networks)} networks' "
                             f"features, as forward_features returns them")
        return torch.cat([as_members(_contract(net, "forward_head").forward_head(f))
                          for net, f in zip(self.networks, features)], dim=1)

    def cam_layer(self, member: int = 0, image_size: int | None = None) -> nn.Module:
        """Network ``member``'s Grad-CAM layer."""
        network = self.networks[member_index(member, len(self.networks))]
        return _contract(network, "cam_layer").cam_layer(0, image_size)

    def member(self, index: int) -> nn.Module:
        """Network ``index`` alone, as a model with members = 1."""
        return _Single(self.networks[member_index(index, len(self.networks))])


def _contract(network: nn.Module, method: str) -> nn.Module:
    if not callable(getattr(network, method, None)):
        raise TypeError(f"{type(network).__name__} has no {method}; Members needs networks "
                        f"that follow the model contract of fernb.models for it")
    return network


class _Single(nn.Module):
    """One network as a model with members = 1 (see :meth:`Members.member`)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return as_members(self.network(x))  # (B, 1, C)

    def forward_features(self, x: torch.Tensor) -> Features:
        return _contract(self.network, "forward_features").forward_features(x)

    def forward_head(self, features: Features) -> torch.Tensor:
        return as_members(_contract(self.network, "forward_head").forward_head(features))

    def cam_layer(self, member: int = 0, image_size: int | None = None) -> nn.Module:
        member_index(member, 1)
        return _contract(self.network, "cam_layer").cam_layer(0, image_size)
