"""The contract every model of :mod:`fernb.models` follows (see the package docstring).

:class:`Model` states it as a protocol; :func:`member_index` and :func:`deepest_layer` are
the two rules models share for ``cam_layer``: which member is meant, and which of a member's
layers Grad-CAM explains at a given input size.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from fernb.complexity import eval_mode

# A Grad-CAM map is taken from the deepest layer whose output is at least this many cells
# wide, so that it still shows where on the face the evidence lies (ESR at 48 px: the third
# convolution, 9 x 9, not the last, 1 x 1).
MIN_CAM_SIZE = 5

Features = torch.Tensor | tuple[torch.Tensor, ...]


@runtime_checkable
class Model(Protocol):
    """What every model of :mod:`fernb.models` provides."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (batch, members, classes)."""
        ...

    def forward_features(self, x: torch.Tensor) -> Features:
        """What the model computes before its head(s)."""
        ...

    def forward_head(self, features: Features) -> torch.Tensor:
        """Logits (batch, members, classes) from ``forward_features``' output."""
        ...

    def cam_layer(self, member: int = 0, image_size: int | None = None) -> nn.Module:
        """The sub-module whose (B, C, H, W) output Grad-CAM weighs for ``member``."""
        ...


def member_index(member: int, n_members: int) -> int:
    """``member`` as an index in [0, n_members); negative values count from the end."""
    if not isinstance(member, int) or not -n_members <= member < n_members:
        raise ValueError(f"member must be an integer in [{-n_members}, {n_members}) for a model "
                         f"with {n_members} member(s), got {member!r}")
    return member % n_members


def deepest_layer(model: nn.Module, candidates: Sequence[nn.Module], in_chans: int,
                  image_size: int | None) -> nn.Module:
    """The deepest of ``candidates`` (sub-modules of ``model`` in the order the input passes
    them) whose output is at least :data:`MIN_CAM_SIZE` cells wide on a square input of
    ``image_size`` pixels; the first when none is; the last when ``image_size`` is None."""
    if not candidates:
        raise ValueError("candidates is empty: give the layers Grad-CAM may explain")
    if image_size is None:
        return candidates[-1]
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels or None, got "
                         f"{image_size!r}")
    widths: dict[int, int] = {}

    def record(module: nn.Module, _: object, output: torch.Tensor) -> None:
        widths[id(module)] = output.shape[-1]

    hooks = [layer.register_forward_hook(record) for layer in candidates]
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    try:
        with eval_mode(model), torch.no_grad():
            model(torch.zeros(1, in_chans, image_size, image_size, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    wide = [layer for layer in candidates if widths[id(layer)] >= MIN_CAM_SIZE]
    return wide[-1] if wide else candidates[0]
