"""Models: every forward returns logits of shape (batch, members, classes)."""
from fernb.models.esr import ESR, esr4, esr9, single_network, traditional_ensemble
from fernb.models.members import Members
from fernb.models.parts import PartNetwork, part_ensemble

__all__ = ["ESR", "Members", "PartNetwork", "esr4", "esr9", "part_ensemble", "single_network",
           "traditional_ensemble"]
