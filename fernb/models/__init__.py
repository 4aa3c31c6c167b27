"""Models: every forward returns logits of shape (batch, members, classes)."""
from fernb.models.esr import ESR, esr4, esr9, single_network, traditional_ensemble

__all__ = ["ESR", "esr4", "esr9", "single_network", "traditional_ensemble"]
