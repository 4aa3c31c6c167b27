"""The iBUG 300-W 68-point layout (0-based) against tables written out by hand: part ranges,
the horizontal-flip permutation and each part's own flip, and the landmark heat-maps."""
from __future__ import annotations

import math

import numpy as np
import pytest

from fernb.landmarks import (FLIP_PERMUTATION, N_LANDMARKS, PARTS, flip_landmarks, heatmap,
                             subset_flip_permutation)
from fernb.models.parts import LANDMARK_SETS

# Mirror image of every point in a horizontally flipped face, read off the 300-W chart:
# jaw i <-> 16 - i (chin 8 stays); brows 17-21 <-> 26-22; nose bridge 27-30 and tip 33 stay,
# 31 <-> 35, 32 <-> 34; eye corners 36 <-> 45, 39 <-> 42, upper lids 37 <-> 44, 38 <-> 43,
# lower lids 40 <-> 47, 41 <-> 46; outer lips 48 <-> 54, 49 <-> 53, 50 <-> 52, 55 <-> 59,
# 56 <-> 58 (51 and 57 stay); inner lips 60 <-> 64, 61 <-> 63, 65 <-> 67 (62 and 66 stay).
FLIP_68 = (
    16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,          # jaw 0-16
    26, 25, 24, 23, 22, 21, 20, 19, 18, 17,                            # brows 17-26
    27, 28, 29, 30, 35, 34, 33, 32, 31,                                # nose 27-35
    45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,                    # eyes 36-47
    54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55,                    # outer lips 48-59
    64, 63, 62, 61, 60, 67, 66, 65,                                    # inner lips 60-67
)
MIDLINE = (8, 27, 28, 29, 30, 33, 51, 57, 62, 66)
PART_RANGES = {"jaw": (0, 17), "eyebrows": (17, 27), "nose": (27, 36), "eyes": (36, 48),
               "mouth": (48, 68)}
# Each part's flip as positions within the part (entry i: where the mirror of point i is).
PART_FLIPS = {
    "jaw": [16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
    "eyebrows": [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
    "nose": [0, 1, 2, 3, 8, 7, 6, 5, 4],
    "eyes": [9, 8, 7, 6, 11, 10, 3, 2, 1, 0, 5, 4],
    "mouth": [6, 5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 16, 15, 14, 13, 12, 19, 18, 17],
}


def test_flip_permutation_is_the_300w_mirror_table() -> None:
    assert len(FLIP_68) == N_LANDMARKS == 68
    assert FLIP_PERMUTATION.tolist() == list(FLIP_68)
    assert np.flatnonzero(FLIP_PERMUTATION == np.arange(68)).tolist() == list(MIDLINE)


def test_part_ranges_are_the_300w_groups() -> None:
    assert PARTS == {p: tuple(range(a, b)) for p, (a, b) in PART_RANGES.items()}
    assert LANDMARK_SETS == {
        **{p: tuple(range(a, b)) for p, (a, b) in PART_RANGES.items()},
        "full": tuple(range(68))}


@pytest.mark.parametrize("part", sorted(PART_FLIPS))
def test_each_part_flips_onto_itself(part: str) -> None:
    assert subset_flip_permutation(PARTS[part]).tolist() == PART_FLIPS[part]


def test_flip_landmarks_mirrors_x_and_swaps_sides() -> None:
    points = np.stack([np.arange(68.0), 100.0 + np.arange(68.0)], axis=1)  # x = i, y = 100 + i
    out = flip_landmarks(points[None], width=80)[0]
    # The right outer eye corner (36) takes the left one's place (45) and vice versa.
    assert out[36].tolist() == [79.0 - 45, 145.0] and out[45].tolist() == [79.0 - 36, 136.0]
    assert out[48].tolist() == [79.0 - 54, 154.0] and out[8].tolist() == [71.0, 108.0]
    np.testing.assert_array_equal(out[:, 0], 79.0 - np.array(FLIP_68, float))
    np.testing.assert_array_equal(out[:, 1], 100.0 + np.array(FLIP_68, float))
    np.testing.assert_array_equal(flip_landmarks(out, width=80), points)


def test_heatmap_by_hand() -> None:
    points = np.zeros((68, 2), np.float32)
    points[:] = (1.0, 1.0)
    points[48:68] = (4.0, 2.0)   # every mouth point at x = 4, y = 2
    mouth = heatmap(points, (3, 6), sigma=1.0, indices=PARTS["mouth"])
    assert mouth.shape == (3, 6) and mouth[2, 4] == 1.0
    assert mouth[2, 3] == pytest.approx(math.exp(-0.5)) and mouth[1, 1] == pytest.approx(
        math.exp(-(9 + 1) / 2))
    summed = heatmap(points, (3, 6), sigma=1.0, indices=PARTS["mouth"], combine="sum")
    assert summed[2, 4] == pytest.approx(20.0)
    with pytest.raises(ValueError, match="combine"):
        heatmap(points, 3, combine="mean")
