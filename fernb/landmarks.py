"""The iBUG 300-W 68-point layout: part groups, horizontal-flip permutation and Gaussian
landmark heat-maps (the relevance-map targets of Ferreira et al., Sec. III)."""
from __future__ import annotations

import numpy as np

N_LANDMARKS = 68

# 0-based index ranges of the five parts used by Wadhawan & Gandhi and Ferreira et al.
PARTS: dict[str, tuple[int, ...]] = {
    "jaw": tuple(range(0, 17)),
    "eyebrows": tuple(range(17, 27)),
    "nose": tuple(range(27, 36)),
    "eyes": tuple(range(36, 48)),
    "mouth": tuple(range(48, 68)),
}
PART_COLORS: dict[str, str] = {
    "jaw": "#1f77b4", "eyebrows": "#ff7f0e", "nose": "#2ca02c", "eyes": "#d62728",
    "mouth": "#9467bd",
}


def _flip_permutation() -> np.ndarray:
    perm = np.arange(N_LANDMARKS)
    pairs = [(i, 16 - i) for i in range(8)]                       # jaw
    pairs += [(17 + i, 26 - i) for i in range(5)]                 # brows
    pairs += [(31, 35), (32, 34)]                                 # nose base
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (59, 55), (58, 56)]   # outer lips
    pairs += [(60, 64), (61, 63), (67, 65)]                       # inner lips
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


FLIP_PERMUTATION: np.ndarray = _flip_permutation()


def subset_flip_permutation(indices: tuple[int, ...]) -> np.ndarray:
    """:data:`FLIP_PERMUTATION` restricted to a landmark subset closed under mirroring (e.g.
    ``PARTS["eyes"]``): entry ``i`` is the position within ``indices`` of the mirror of
    point ``indices[i]``, for flipping (K, 2) part landmarks."""
    position = {int(point): i for i, point in enumerate(indices)}
    mirrors = [int(FLIP_PERMUTATION[point]) for point in indices]
    missing = sorted(set(mirrors) - set(position))
    if missing:
        raise ValueError(f"indices must contain the mirror of each point; missing {missing}")
    return np.array([position[m] for m in mirrors])


def flip_landmarks(points: np.ndarray, width: int) -> np.ndarray:
    """Mirror (..., 68, 2) pixel landmarks horizontally in an image of the given width."""
    out = points[..., FLIP_PERMUTATION, :].copy()
    out[..., 0] = (width - 1) - out[..., 0]
    return out


def heatmap(points: np.ndarray, size: int | tuple[int, int], sigma: float = 2.0,
            indices: tuple[int, ...] | None = None, combine: str = "max") -> np.ndarray:
    """Gaussian heat-map of landmarks: one peak-1 Gaussian per point, combined by their
    maximum (values in [0, 1]) or their sum (peaks add where points are close).

    Args:
        points: (68, 2) or (N, 68, 2) landmarks in pixel (x, y) of the target size.
        size: output height/width (int) or (height, width).
        sigma: Gaussian width in pixels.
        indices: landmark subset (e.g. ``PARTS["mouth"]``); all points when None.
        combine: ``"max"`` or ``"sum"`` over the points.
    Returns:
        (H, W) or (N, H, W) float32 map.
    """
    if combine not in ("max", "sum"):
        raise ValueError(f"combine must be 'max' or 'sum', got {combine!r}")
    h, w = (size, size) if isinstance(size, int) else size
    pts = np.asarray(points, dtype=np.float32)
    single = pts.ndim == 2
    if single:
        pts = pts[None]
    if indices is not None:
        pts = pts[:, list(indices)]
    ys = np.arange(h, dtype=np.float32)[None, None, :, None]
    xs = np.arange(w, dtype=np.float32)[None, None, None, :]
    px = pts[..., 0][..., None, None]
    py = pts[..., 1][..., None, None]
    g = np.exp(-((xs - px) ** 2 + (ys - py) ** 2) / (2 * sigma**2))
    g = g.max(axis=1) if combine == "max" else g.sum(axis=1)
    return g[0] if single else g
