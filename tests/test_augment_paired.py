"""Paired augmentations: eq. (8) warps, eq. (9) contrast and landmark-aware flips, with
landmarks and maps moving like their images (Ferreira et al. 2018, Sec. III-C and IV-A)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fernb.data.transforms import (ContrastRanges, LandmarkAugmentation, PairedAugmentation,
                                   RelevanceAugmentation, WarpSets, contrast_normalize,
                                   warp_images, warp_matrices, warp_points)
from fernb.landmarks import FLIP_PERMUTATION, heatmap


def params(n: int = 1, *, theta=0.0, k1=0.0, k2=0.0, s=1.0, t1=0.0, t2=0.0):
    return {name: torch.full((n,), float(v), dtype=torch.float64)
            for name, v in dict(theta=theta, k1=k1, k2=k2, s=s, t1=t1, t2=t2).items()}


def blob(size: int, x: float, y: float, sigma: float = 1.5) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32),
                            torch.arange(size, dtype=torch.float32), indexing="ij")
    return torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))


def centroid(image: torch.Tensor) -> tuple[float, float]:
    ys, xs = torch.meshgrid(torch.arange(image.shape[0], dtype=torch.float32),
                            torch.arange(image.shape[1], dtype=torch.float32), indexing="ij")
    mass = image.sum()
    return float((image * xs).sum() / mass), float((image * ys).sum() / mass)


def face_points(size: int = 48) -> torch.Tensor:
    """68 distinct points inside the frame, index 36 on the image left, 45 on the right."""
    t = torch.linspace(0, 1, 68)
    x = size * (0.25 + 0.5 * t)
    y = size * (0.3 + 0.4 * torch.sin(math.pi * 5 * t).abs())
    return torch.stack([x, y], -1)


def test_eq8_moves_points_as_computed_by_hand():
    # 5 x 5 image, centre (2, 2). Rotation by 90 deg: (3, 2) is (1, 0) from the centre -> (0, 1).
    m = warp_matrices(**params(theta=math.pi / 2), size=(5, 5))
    np.testing.assert_allclose(warp_points(torch.tensor([[[3.0, 2.0]]]), m)[0, 0], [2.0, 3.0],
                               atol=1e-6)
    # Translation t = (2, 1): x' = x - t.
    m = warp_matrices(**params(t1=2, t2=1), size=(5, 5))
    np.testing.assert_allclose(warp_points(torch.tensor([[[3.0, 2.0]]]), m)[0, 0], [1.0, 1.0])
    # Skew k1 = 0.1: (0, 2) from the centre -> (0.2, 2).
    m = warp_matrices(**params(k1=0.1), size=(5, 5))
    np.testing.assert_allclose(warp_points(torch.tensor([[[2.0, 4.0]]]), m)[0, 0], [2.2, 4.0],
                               atol=1e-6)
    # Scale 2 after translation (1, 0): (4, 2) -> ((2, 0) - (1, 0)) * 2 = (2, 0) -> (4, 2);
    # (3, 2) -> (0, 0) -> (2, 2).
    m = warp_matrices(**params(s=2, t1=1), size=(5, 5))
    np.testing.assert_allclose(warp_points(torch.tensor([[[4.0, 2.0], [3.0, 2.0]]]), m)[0],
                               [[4.0, 2.0], [2.0, 2.0]])


def test_identity_parameters_give_the_input_back():
    torch.manual_seed(0)
    x = torch.rand(3, 2, 9, 7)
    m = warp_matrices(**params(3), size=(9, 7))
    torch.testing.assert_close(warp_images(x, m), x, atol=1e-5, rtol=0)
    points = torch.rand(3, 68, 2) * 7
    torch.testing.assert_close(warp_points(points, m), points)
    same = PairedAugmentation(targets=("label", "map", "landmarks"), warp=WarpSets(
        angles=(0.0,), skews=(0.0,), scales=(1.0,), translations=(0,)))
    labels, maps = torch.arange(3), torch.rand(3, 1, 9, 7)
    out, (l2, m2, p2) = same(x, (labels, maps, points))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(m2, maps, atol=1e-5, rtol=0)
    torch.testing.assert_close(p2, points)
    assert l2 is labels


def test_borders_take_the_mirrored_pixels():
    ramp = torch.arange(6.0).view(1, 1, 1, 6)
    m = warp_matrices(**params(t1=2), size=(1, 6))  # content moves 2 px left
    # Output x = 4, 5 sample input x = 6, 7, mirrored about the edge at 5.5 onto 5, 4.
    torch.testing.assert_close(warp_images(ramp, m).flatten(),
                               torch.tensor([2.0, 3.0, 4.0, 5.0, 5.0, 4.0]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("border", ["left", "right", "top", "bottom"])
def test_maps_warp_with_zeros_outside_so_no_peak_is_mirrored(border):
    # A landmark 3 px inside a border; the warp moves content 5 px away from that border, so
    # the output's first 5 px sample outside the map. Mirroring would put a copy of the peak
    # at 1 px from the border; zeros keep only the moved peak, at 8 px.
    near, far, shift = (3.0, 24.0, -5) if border in ("left", "top") else (44.0, 24.0, 5)
    x, y = (near, far) if border in ("left", "right") else (far, near)
    maps = blob(48, x, y)[None, None]
    aug = PairedAugmentation(targets=("map",), warp=WarpSets(
        angles=(0.0,), skews=(0.0,), scales=(1.0,), translations=(shift,)))
    _, out = aug(torch.zeros(1, 1, 48, 48), maps)
    out = out[0, 0] if border in ("left", "right") else out[0, 0].T
    edge, moved = (1, 8) if border in ("left", "top") else (46, 39)
    assert float(out[:, moved].max()) > 0.9
    assert float(out[:, edge].max()) < 0.01
    image, _ = aug(maps.clone(), maps)  # images keep their mirrored border
    image = image[0, 0] if border in ("left", "right") else image[0, 0].T
    assert float(image[:, edge].max()) > 0.5


@pytest.mark.parametrize("p", [dict(theta=math.pi / 18, k1=0.1, k2=-0.1, s=1.1, t1=3, t2=5),
                               dict(theta=-math.pi / 36, k1=-0.1, s=0.9, t1=0, t2=4)])
def test_a_bright_spot_at_a_landmark_lands_on_the_warped_landmark(p):
    landmark = torch.tensor([[[20.3, 14.6]]])
    image = blob(48, 20.3, 14.6)[None, None]
    m = warp_matrices(**params(**p), size=(48, 48))
    moved = warp_points(landmark, m)[0, 0]
    x, y = centroid(warp_images(image, m)[0, 0])
    assert abs(x - float(moved[0])) < 0.5 and abs(y - float(moved[1])) < 0.5
    assert (moved - landmark[0, 0]).norm() > 2  # it did move


def test_maps_move_like_the_image_and_match_maps_of_moved_landmarks():
    torch.manual_seed(1)
    points = face_points()[None]
    maps = torch.from_numpy(heatmap(points.numpy(), 48, sigma=2.0))[None]  # (1, 1, 48, 48)
    aug = RelevanceAugmentation(contrast=None, targets=("label", "map", "landmarks"))
    for _ in range(3):
        state = torch.get_rng_state()
        _, (_, warped_map, warped_points) = aug(maps.clone(), (torch.zeros(1), maps, points))
        torch.set_rng_state(state)
        warped_image, _ = aug(maps.clone(), (torch.zeros(1), maps, points))
        # Same matrix for both; they differ only where the warp samples outside (the image
        # is padded by reflection, the map by zeros), which the face's points never reach.
        inner = (..., slice(8, -8), slice(8, -8))
        torch.testing.assert_close(warped_map[inner], warped_image[inner])
        redrawn = heatmap(warped_points[0].numpy(), 48, sigma=2.0)
        # A rendered map of the moved landmarks agrees with the moved map up to the scale
        # and skew distortion of the Gaussians.
        assert np.abs(redrawn - warped_map[0, 0].numpy()).max() < 0.35
        peak = np.unravel_index(warped_map[0, 0].numpy().argmax(), (48, 48))
        nearest = (warped_points[0] - torch.tensor([peak[1], peak[0]])).norm(dim=1).min()
        assert nearest < 1.5


def test_flip_swaps_left_and_right_landmarks():
    points = face_points()[None].repeat(2, 1, 1)  # (2, 68, 2)
    image = torch.rand(2, 1, 48, 48)
    aug = LandmarkAugmentation(targets=("label", "landmarks"), flip=1.0)
    labels = torch.tensor([3, 5])
    out, (l2, p2) = aug(image, (labels, points.reshape(2, 136)))
    assert torch.equal(out, image.flip(-1)) and l2 is labels and p2.shape == (2, 136)
    p2 = p2.reshape(2, 68, 2)
    # The subject's right outer eye corner (36) is now the mirror of the left one (45).
    def mirrored(i: int) -> torch.Tensor:
        return torch.stack([47 - points[:, i, 0], points[:, i, 1]], -1)

    torch.testing.assert_close(p2[:, 36], mirrored(45))
    torch.testing.assert_close(p2[:, 45], mirrored(36))
    torch.testing.assert_close(p2[:, 30], mirrored(30))  # the nose tip stays itself
    assert sorted(FLIP_PERMUTATION[[36, 39, 48]]) == [42, 45, 54]
    # A bright spot at landmark 45 ends up at flipped landmark 36.
    spot = blob(48, *points[0, 45].tolist())[None, None]
    flipped, (_, p3) = aug(spot, (labels[:1], points[:1]))
    p3 = p3.reshape(1, 68, 2)
    x, y = centroid(flipped[0, 0])
    assert abs(x - float(p3[0, 36, 0])) < 0.1 and abs(y - float(p3[0, 36, 1])) < 0.1


def test_flip_probability_and_per_image_draws():
    torch.manual_seed(0)
    image = torch.rand(200, 1, 8, 8)
    out, maps = LandmarkAugmentation(targets=("map",))(image, image.clone())
    flipped = (out != image).flatten(1).any(1)
    assert torch.equal(out, maps)
    assert 70 < int(flipped.sum()) < 130
    assert torch.equal(out[flipped], image[flipped].flip(-1))
    assert torch.equal(LandmarkAugmentation(targets=("map",), flip=0.0)(image, image)[0], image)


def test_parameters_are_drawn_from_the_paper_sets():
    torch.manual_seed(0)
    drawn = WarpSets().sample(3000)
    expect = {"theta": [math.radians(a) for a in (-10, -5, 0, 5, 10)],
              "k1": [-0.1, 0, 0.1], "k2": [-0.1, 0, 0.1], "s": [0.9, 0.95, 1, 1.05, 1.1],
              "t1": [0, 1, 2, 3, 4, 5], "t2": [0, 1, 2, 3, 4, 5]}
    for name, values in expect.items():
        np.testing.assert_allclose(sorted(set(drawn[name].tolist())), values, atol=1e-12)
    low, high = ContrastRanges().sample(3000, 3)
    assert low.shape == (3000, 3) and 0 <= low.min() and low.max() <= 10
    assert 90 <= high.min() and high.max() <= 100 and low.std() > 2
    with pytest.raises(ValueError, match="contrast ranges"):
        ContrastRanges(low=(0, 60), high=(50, 100))


def test_eq9_on_a_hand_computed_array():
    x = (torch.arange(11.0) / 10).view(1, 1, 1, 11)  # 0.0, 0.1, ..., 1.0
    # p_L = 10 % -> S = 0.1, p_H = 90 % -> S = 0.9; (x - 0.1) / 0.8, clipped to [0, 1].
    out = contrast_normalize(x, 10.0, 90.0).flatten()
    expected = [0, 0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1, 1]
    torch.testing.assert_close(out, torch.tensor(expected), atol=1e-6, rtol=0)
    # Interpolated percentiles: p_L = 5 % -> 0.05, p_H = 75 % -> 0.75; x = 0.4 -> 0.35 / 0.7.
    out = contrast_normalize(x, 5.0, 75.0).flatten()
    assert float(out[4]) == pytest.approx(0.5, abs=1e-6)
    assert float(out[1]) == pytest.approx(0.05 / 0.7, abs=1e-6)
    # Per image and channel: a channel at a tenth of the contrast gives the same result.
    torch.manual_seed(0)
    pair = torch.rand(2, 1, 6, 6)
    pair = torch.cat([pair, 0.3 + 0.1 * pair], 1)  # (2, 2, 6, 6)
    low = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    high = torch.tensor([[100.0, 100.0], [80.0, 80.0]])
    out = contrast_normalize(pair, low, high)
    torch.testing.assert_close(out[:, 0], out[:, 1], atol=1e-5, rtol=0)
    ref = np.percentile(pair[1, 0].numpy(), [10, 80])
    torch.testing.assert_close(out[1, 0], ((pair[1, 0] - ref[0]) / (ref[1] - ref[0])).clamp(0, 1),
                               atol=1e-5, rtol=0)
    assert contrast_normalize(torch.full((1, 1, 3, 3), 0.4), 0.0, 100.0).eq(0).all()


def test_relevance_augmentation_keeps_shapes_and_is_seeded():
    x, labels, maps = torch.rand(4, 1, 24, 24), torch.arange(4), torch.rand(4, 1, 24, 24)
    torch.manual_seed(3)
    a, (l1, m1) = RelevanceAugmentation()(x, (labels, maps))
    torch.manual_seed(3)
    b, (_, m2) = RelevanceAugmentation()(x, (labels, maps))
    assert a.shape == x.shape and m1.shape == maps.shape and l1 is labels
    assert torch.equal(a, b) and torch.equal(m1, m2)
    assert a.min() >= 0 and a.max() <= 1 and not torch.allclose(a, x)
    only, y = RelevanceAugmentation(targets=("label",))(x, labels)
    assert only.shape == x.shape and y is labels


def test_bad_arguments_raise():
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="role"):
        PairedAugmentation(targets=("label", "mask"))
    with pytest.raises(ValueError, match="probability"):
        LandmarkAugmentation(flip=1.5)
    with pytest.raises(ValueError, match="3 element"):
        RelevanceAugmentation()(x, (torch.zeros(2), torch.rand(2, 1, 8, 8), torch.rand(2, 5, 2)))
    with pytest.raises(ValueError, match="images' size"):
        RelevanceAugmentation()(x, (torch.zeros(2), torch.rand(2, 1, 4, 4)))
    with pytest.raises(ValueError, match="permutation for 5 points"):
        LandmarkAugmentation(flip=1.0)(x, torch.rand(2, 5, 2))
    with pytest.raises(ValueError, match="B, C, H, W"):
        RelevanceAugmentation()(x[0], torch.zeros(2))
