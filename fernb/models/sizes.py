"""Channel widths and the size arguments every network builder shares."""
from __future__ import annotations


def scaled(channels: int, width: float) -> int:
    """``channels`` times the width multiplier (1.0: the paper's network), at least 1."""
    return max(1, round(channels * width))


def check_sizes(*, n_classes: int, in_chans: int, width: float) -> None:
    """Reject fewer than 2 classes, no input channel or a width that is not positive."""
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}")
    if in_chans < 1:
        raise ValueError(f"in_chans must be at least 1, got {in_chans}")
    if not width > 0:
        raise ValueError(f"width must be positive (1.0 = the paper's network), got {width}")
