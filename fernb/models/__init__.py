"""Models: every forward returns logits of shape (batch, members, classes)."""
from fernb.models.esr import ESR, esr4, esr9, single_network, traditional_ensemble
from fernb.models.members import Members

__all__ = ["ESR", "Members", "esr4", "esr9", "single_network", "traditional_ensemble"]
