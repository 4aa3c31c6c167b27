"""Every paper's loss, each citing its equation. All take member outputs (B, M, ...)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def member_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """ESR eq. (1): sum over members of the batch-mean cross-entropy.

    Args:
        logits: (B, M, C).
        targets: (B,) class indices or (B, C) class distributions (soft labels).
    """
    return sum(F.cross_entropy(logits[:, m], targets) for m in range(logits.shape[1]))


def member_rmse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over members and output dimensions of the RMSE, e.g. valence and arousal
    (ESR-9's affect fine-tuning minimises the RMSE, Table 4)."""
    mse = (outputs - targets.unsqueeze(1)).pow(2).mean(0)  # (M, D)
    return mse.sqrt().sum()
