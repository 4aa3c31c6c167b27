"""Face preprocessing and training augmentations.

Preprocessing (NumPy/OpenCV, once per image): Viola-Jones face detection with OpenCV's bundled
Haar cascade (ESR, Siqueira et al. 2020, "Methodology"), grayscale, CLAHE (Wadhawan & Gandhi
2023, Sec. III-A), square crop and resize, with landmarks carried through every crop and resize
by one affine map. Augmentation (torchvision.transforms.v2, per batch on (C, H, W) float
tensors): none, flip, or ESR's public-code recipe. Paired augmentation (torch affine_grid /
grid_sample, per batch on the device): flips, Ferreira et al.'s eq. (8) warp and eq. (9)
contrast normalisation, moving landmarks and relevance maps with their images. Optional
68-point landmarks from MediaPipe Face Mesh for datasets that ship none.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from fernb.landmarks import FLIP_PERMUTATION

HAAR_CASCADE = "haarcascade_frontalface_default.xml"
CROPS = ("haar", "landmarks", "box", "none")
AUGMENTATIONS = ("none", "flip", "esr")
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "symmetric": ((0.5,), (0.5,)),                                   # [0, 1] -> [-1, 1]
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),      # torchvision weights
}
LANDMARKS_EXTRA = (
    'pip install "fernb[landmarks]" in a virtual environment of its own '
    "(mediapipe==0.10.21 pins numpy<2 and its own OpenCV build)")

Box = tuple[int, int, int, int]


@lru_cache(maxsize=1)
def _cascade() -> cv2.CascadeClassifier:
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + HAAR_CASCADE)
    if cascade.empty():
        raise RuntimeError(f"OpenCV could not load {HAAR_CASCADE} from {cv2.data.haarcascades}; "
                           "install opencv-python-headless<5 (5.x ships no Haar cascades)")
    return cascade


def to_gray(image: np.ndarray) -> np.ndarray:
    """(H, W) uint8 grayscale from (H, W) or RGB (H, W, 3) uint8."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")


def detect_face(image: np.ndarray, *, scale_factor: float = 1.1, min_neighbors: int = 5,
                min_size: float = 0.2) -> Box | None:
    """Largest frontal face found by OpenCV's Viola-Jones cascade.

    Args:
        image: (H, W) or (H, W, 3) uint8.
        scale_factor: image pyramid step of ``detectMultiScale``.
        min_neighbors: overlapping detections needed to accept a face.
        min_size: smallest face side as a fraction of the shorter image side.
    Returns:
        ``(x, y, w, h)`` in pixels, or None when no face is found.
    """
    gray = to_gray(image)
    side = max(1, int(min_size * min(gray.shape)))
    faces = _cascade().detectMultiScale(gray, scaleFactor=scale_factor,
                                        minNeighbors=min_neighbors, minSize=(side, side))
    if len(faces) == 0:
        return None
    x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
    return int(x), int(y), int(w), int(h)


def square_box(box: Sequence[float], margin: float = 0.0) -> Box:
    """Integer square box with the same centre, side ``max(w, h) * (1 + 2 * margin)``."""
    x, y, w, h = box
    side = max(w, h) * (1 + 2 * margin)
    cx, cy = x + w / 2, y + h / 2
    return int(round(cx - side / 2)), int(round(cy - side / 2)), int(round(side)), int(round(side))


def box_from_landmarks(points: np.ndarray, margin: float = 0.1) -> Box:
    """Square box around (K, 2) landmarks, widened by ``margin`` of its side on each edge."""
    pts = np.asarray(points, dtype=np.float64)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return square_box((lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]), margin)


def crop_matrix(box: Box, size: int) -> np.ndarray:
    """(2, 3) affine map from image pixels to a ``size`` x ``size`` crop of ``box``.

    Pixel centres sit at integer coordinates and the box edges map onto the output edges, the
    convention of ``cv2.resize``: ``x' = (x - x0 + 0.5) * size / w - 0.5``.
    """
    x0, y0, w, h = box
    sx, sy = size / w, size / h
    return np.array([[sx, 0.0, (0.5 - x0) * sx - 0.5],
                     [0.0, sy, (0.5 - y0) * sy - 0.5]])


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine map to (..., 2) points."""
    pts = np.asarray(points, dtype=np.float64)
    return (pts @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def crop_resize(image: np.ndarray, box: Box, size: int,
                landmarks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Crop ``box`` (edges replicated where it leaves the image), resize to ``size`` x ``size``
    and map ``landmarks`` with :func:`crop_matrix`."""
    x0, y0, w, h = box
    if w <= 0 or h <= 0:
        raise ValueError(f"box must have a positive width and height, got {box}")
    img_h, img_w = image.shape[:2]
    pad = max(0, -x0, -y0, x0 + w - img_w, y0 + h - img_h)
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else image
    crop = padded[y0 + pad:y0 + pad + h, x0 + pad:x0 + pad + w]
    interpolation = cv2.INTER_AREA if size < max(w, h) else cv2.INTER_LINEAR
    out = cv2.resize(crop, (size, size), interpolation=interpolation)
    points = None if landmarks is None else apply_affine(landmarks, crop_matrix(box, size))
    return out, points


def apply_clahe(image: np.ndarray, *, clip_limit: float = 2.0, tile_grid_size: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (``cv2.createCLAHE``); RGB images are
    equalised on the L channel of CIELAB."""
    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile_grid_size, tile_grid_size))
    if image.ndim == 2:
        return clahe.apply(image)
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    lab[..., 0] = clahe.apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


@dataclass
class Face:
    """A preprocessed face: ``image`` (size, size[, 3]) uint8, ``landmarks`` in its pixels (or
    None) and ``crop``, how it was found ("haar", "landmarks", "box" or "none")."""

    image: np.ndarray
    landmarks: np.ndarray | None
    crop: str


def preprocess_face(image: np.ndarray, *, size: int, crop: str = "haar",
                    landmarks: np.ndarray | None = None, box: Sequence[float] | None = None,
                    grayscale: bool = True, clahe: bool = False, margin: float = 0.0) -> Face:
    """Grayscale, CLAHE, crop and resize one image, carrying its landmarks along.

    Args:
        image: (H, W) or RGB (H, W, 3) uint8.
        size: output side in pixels.
        crop: "haar" (Viola-Jones; falls back to the landmarks, then the whole image, and says
            so in ``Face.crop``), "landmarks", "box" (the given ``box``) or "none" (resize only).
        landmarks: (K, 2) pixel (x, y) of ``image``, or None.
        box: ``(x, y, w, h)`` face box for ``crop="box"``.
        grayscale: convert to (H, W) grayscale first.
        clahe: equalise with :func:`apply_clahe` before detection (as Wadhawan & Gandhi).
        margin: extra context around the face box, as a fraction of its side on each edge.
    """
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    if crop == "landmarks" and landmarks is None:
        raise ValueError("crop='landmarks' needs landmarks; pass landmarks= or use crop='haar'")
    if crop == "box" and box is None:
        raise ValueError("crop='box' needs box=(x, y, w, h)")
    img = to_gray(image) if grayscale else image
    if clahe:
        img = apply_clahe(img)
    used, face_box = crop, None
    if crop == "haar":
        found = detect_face(img)
        if found is not None:
            face_box = square_box(found, margin)
        elif landmarks is not None:
            used = "landmarks"
        else:
            used = "none"
    if used == "landmarks":
        face_box = box_from_landmarks(landmarks, max(margin, 0.1))
    elif used == "box":
        face_box = square_box(box, margin)
    if face_box is None:
        face_box = (0, 0, img.shape[1], img.shape[0])
    out, points = crop_resize(img, face_box, size, landmarks)
    return Face(out, points, used)


def augmentation(kind: str, size: int) -> v2.Transform:
    """Training augmentation for (C, H, W) float tensors in [0, 1], output ``size`` x ``size``.

    Args:
        kind: "none"; "flip" (horizontal, p=0.5, as Zhou et al. Sec. 4); or "esr": ESR's
            "brightness and contrast changes, horizontal flips, rotations up to 30 degrees,
            translations, and rescaling" (Siqueira et al. 2020, Methodology) with the values of
            the authors' code: ColorJitter(0.5, 0.5), flip p=0.5, RandomAffine(30 deg,
            translate 10 %, scale 1.0-1.25).
        size: output side in pixels.
    """
    if kind not in AUGMENTATIONS:
        raise ValueError(f"augmentation kind must be one of {AUGMENTATIONS}, got {kind!r}")
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    steps: list[v2.Transform] = [v2.Resize((size, size), antialias=True)]
    if kind == "flip":
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    elif kind == "esr":
        steps += [v2.ColorJitter(brightness=0.5, contrast=0.5),
                  v2.RandomHorizontalFlip(p=0.5),
                  v2.RandomAffine(degrees=30, translate=(0.1, 0.1), scale=(1.0, 1.25),
                                  interpolation=v2.InterpolationMode.BILINEAR)]
    return v2.Compose(steps)



class BatchAugmentation:
    """:func:`augmentation` for ``fernb.train.fit(augment=...)``, drawn per image and applied
    to the whole (B, C, H, W) batch at once on its device (a v2 transform called on a batch
    would draw one set of random parameters for all its images; a Python loop over the
    images costs more than the training step at small sizes). Class targets pass through.

    ``"esr"`` applies, per image and in this order: brightness and contrast factors drawn
    from [0.5, 1.5] (ColorJitter(0.5, 0.5): ``b x``, then ``c x + (1 - c) mean(x)``, each
    clipped to [0, 1]), a horizontal flip with p = 0.5, and a random affine map (rotation
    up to 30 degrees, translation up to 10 % of the side, scale 1.0-1.25; bilinear, zeros
    outside), as the authors' code; ``"flip"`` only the flip. Batches of another size are
    resized to ``size`` first.
    """

    def __init__(self, kind: str, size: int) -> None:
        if kind not in AUGMENTATIONS:
            raise ValueError(f"augmentation kind must be one of {AUGMENTATIONS}, got {kind!r}")
        if size < 1:
            raise ValueError(f"size must be a positive number of pixels, got {size}")
        self.kind, self.size = kind, size

    def __call__(self, batch: torch.Tensor, targets: Any = None) -> tuple[torch.Tensor, Any]:
        if batch.ndim != 4:
            raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(batch.shape)}")
        if self.kind == "none":
            return batch, targets
        if tuple(batch.shape[-2:]) != (self.size, self.size):
            batch = F.interpolate(batch, size=(self.size, self.size), mode="bilinear",
                                  antialias=True, align_corners=False)
        b = len(batch)
        if self.kind == "esr":
            batch = _jitter(batch, torch.empty(b).uniform_(0.5, 1.5),
                            torch.empty(b).uniform_(0.5, 1.5))
        flipped = (torch.rand(b) < 0.5).to(batch.device)
        batch = torch.where(flipped[:, None, None, None], batch.flip(-1), batch)
        if self.kind == "esr":
            shift = 0.1 * self.size * (2 * torch.rand(2, b, dtype=torch.float64) - 1)
            zeros = torch.zeros(b, dtype=torch.float64)
            matrices = warp_matrices(
                torch.empty(b, dtype=torch.float64).uniform_(-math.pi / 6, math.pi / 6),
                zeros, zeros, torch.empty(b, dtype=torch.float64).uniform_(1.0, 1.25),
                shift[0], shift[1], size=(self.size, self.size))
            batch = warp_images(batch, matrices, padding_mode="zeros")
        return batch, targets

    def spec(self) -> dict[str, Any]:
        """What the augmentation does, for a stored run's key (:mod:`fernb.specs`)."""
        return {"augmentation": "BatchAugmentation", "kind": self.kind, "size": self.size}

    def __repr__(self) -> str:
        return f"BatchAugmentation({self.kind!r}, {self.size})"


def _jitter(batch: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor
            ) -> torch.Tensor:
    """Per-image brightness then contrast factors (B,), as torchvision's ColorJitter blends
    them: towards black, then towards the image's mean gray level; clipped to [0, 1]."""
    b = brightness.to(batch.device, batch.dtype).view(-1, 1, 1, 1)
    c = contrast.to(batch.device, batch.dtype).view(-1, 1, 1, 1)
    out = (batch * b).clamp(0, 1)
    gray = out if out.shape[1] == 1 else (out * _GRAY.to(out)).sum(1, keepdim=True)
    mean = gray.mean(dim=(1, 2, 3), keepdim=True)
    return (c * out + (1 - c) * mean).clamp(0, 1)


_GRAY = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of (N, C, H, W) images: pass the training split only."""
    if images.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) images, got shape {tuple(images.shape)}")
    flat = images.transpose(0, 1).reshape(images.shape[1], -1).double()
    return tuple(flat.mean(1).tolist()), tuple(flat.std(1).tolist())


def normalization(kind: str = "symmetric", *, channels: int = 1,
                  stats: tuple[Sequence[float], Sequence[float]] | None = None) -> v2.Normalize:
    """``v2.Normalize`` for "symmetric" ([-1, 1], Wadhawan & Gandhi), "imagenet" (torchvision
    pretrained backbones, 3 channels) or "stats" (``stats=channel_stats(train_images)``)."""
    if kind == "stats":
        if stats is None:
            raise ValueError("kind='stats' needs stats=(mean, std), e.g. channel_stats(train)")
        mean, std = stats
    elif kind in NORMALIZATIONS:
        mean, std = NORMALIZATIONS[kind]
    else:
        raise ValueError(f"normalization kind must be one of {[*NORMALIZATIONS, 'stats']}, "
                         f"got {kind!r}")
    if len(mean) == 1:
        mean, std = tuple(mean) * channels, tuple(std) * channels
    if len(mean) != channels:
        raise ValueError(f"{kind!r} statistics have {len(mean)} channels but the images have "
                         f"{channels}; use channels=3 (dataset.with_options(channels=3))")
    return v2.Normalize(mean=list(mean), std=list(std))


# MediaPipe Face Mesh (478 points) -> iBUG 68-point layout. Entry i lists the mesh vertices
# whose mean approximates point i: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, outer lips
# 48-59, inner lips 60-67; point 0 is the subject's right jaw end (image left).
MEDIAPIPE_TO_68: tuple[tuple[int, ...], ...] = (
    (127,), (234,), (93,), (132, 58), (58, 172), (136,), (150,), (176,), (152,),
    (400,), (379,), (365,), (397, 288), (361,), (323,), (454,), (356,),
    (70,), (63,), (105,), (66,), (107,), (336,), (296,), (334,), (293,), (300,),
    (168, 6), (197, 195), (5,), (4,), (75,), (97,), (2,), (326,), (305,),
    (33,), (160,), (158,), (133,), (153,), (144,), (362,), (385,), (387,), (263,), (373,), (380,),
    (61,), (39,), (37,), (0,), (267,), (269,), (291,), (321,), (314,), (17,), (84,), (91,),
    (78,), (82,), (13,), (312,), (308,), (317,), (14,), (87,),
)


def mediapipe_to_68(points: np.ndarray) -> np.ndarray:
    """(..., 478 or 468, 2) Face Mesh points -> (..., 68, 2) via :data:`MEDIAPIPE_TO_68`."""
    pts = np.asarray(points, dtype=np.float32)
    if pts.shape[-2] < 468 or pts.shape[-1] != 2:
        raise ValueError(f"expected (..., 478, 2) Face Mesh points, got shape {pts.shape}")
    return np.stack([pts[..., list(idx), :].mean(axis=-2) for idx in MEDIAPIPE_TO_68], axis=-2)


def detect_landmarks(images: Iterable[np.ndarray]) -> np.ndarray:
    """68-point landmarks with MediaPipe Face Mesh (optional extra ``fernb[landmarks]``).

    Args:
        images: (H, W) or RGB (H, W, 3) uint8 images.
    Returns:
        (N, 68, 2) float32 pixel (x, y); NaN rows where no face was found.
    """
    try:
        import mediapipe as mp
    except ImportError as err:
        raise ImportError(f"landmark detection needs mediapipe: {LANDMARKS_EXTRA}") from err
    out = []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                         refine_landmarks=True) as mesh:
        for image in images:
            rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image
            found = mesh.process(rgb).multi_face_landmarks
            if not found:
                out.append(np.full((68, 2), np.nan, dtype=np.float32))
                continue
            h, w = rgb.shape[:2]
            pts = np.array([(p.x * w, p.y * h) for p in found[0].landmark], dtype=np.float32)
            out.append(mediapipe_to_68(pts))
    return np.stack(out) if out else np.zeros((0, 68, 2), dtype=np.float32)


# Paired augmentation: one random geometry per image, applied with the same matrix to the
# image, its relevance maps and its landmarks (fit's augment(x, y) -> (x, y) on the device).
#
# Ferreira et al. 2018, Sec. III-C, eq. (8): a point (x, y) moves to
#     (x', y') = s R(theta) [[1, k1], [k2, 1]] (x - t1, y - t2),
# with coordinates measured from the image centre (about the top-left corner, as a literal
# reading would have it, a 10 degree rotation moves a 120 px face by up to 20 px). Eq. (8) is
# read as the forward map of points: landmarks go through it, images are resampled through
# its inverse. Pixel centres sit at integer coordinates, as in :func:`crop_matrix`; pixels
# that come from outside the image take the value of their mirrored position
# (``padding_mode="reflection"``). Eq. (9) then stretches each channel between two random
# percentiles.

TARGET_ROLES = ("label", "map", "landmarks")


@dataclass(frozen=True)
class WarpSets:
    """The sets eq. (8)'s parameters are drawn from, uniformly and independently for every
    image (Ferreira et al., Sec. IV-A). Angles in radians (+-5 and +-10 degrees),
    translations in pixels: "randomly sampled integers from the interval [0, 5]", so faces
    only ever move up and to the left."""

    angles: tuple[float, ...] = (-math.pi / 18, -math.pi / 36, 0.0, math.pi / 36, math.pi / 18)
    skews: tuple[float, ...] = (-0.1, 0.0, 0.1)
    scales: tuple[float, ...] = (0.9, 0.95, 1.0, 1.05, 1.1)
    translations: tuple[float, ...] = (0, 1, 2, 3, 4, 5)

    def sample(self, n: int) -> dict[str, torch.Tensor]:
        """``n`` draws of theta, k1, k2, s, t1, t2 (float64, CPU) from torch's global RNG."""
        sets = {"theta": self.angles, "k1": self.skews, "k2": self.skews, "s": self.scales,
                "t1": self.translations, "t2": self.translations}
        return {name: torch.tensor(values, dtype=torch.float64)[
                    torch.randint(len(values), (n,))] for name, values in sets.items()}


@dataclass(frozen=True)
class ContrastRanges:
    """Percent ranges the lower and upper percentiles p_L and p_H of eq. (9) are drawn from,
    uniformly, per image and channel. The paper says only that they are "randomly selected";
    p_L in [0, 10] and p_H in [90, 100] are this book's choice. Note that even p_L = 0,
    p_H = 100 stretches the image to its full [0, 1] range."""

    low: tuple[float, float] = (0.0, 10.0)
    high: tuple[float, float] = (90.0, 100.0)

    def __post_init__(self) -> None:
        lo, hi = self.low, self.high
        if not (0 <= lo[0] <= lo[1] <= hi[0] <= hi[1] <= 100):
            raise ValueError(f"contrast ranges must satisfy 0 <= low[0] <= low[1] <= high[0] "
                             f"<= high[1] <= 100 (percent), got low={lo}, high={hi}")

    def sample(self, n: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, channels) draws of p_L and p_H in percent from torch's global RNG."""
        low = self.low[0] + (self.low[1] - self.low[0]) * torch.rand(n, channels)
        high = self.high[0] + (self.high[1] - self.high[0]) * torch.rand(n, channels)
        return low, high


def warp_matrices(theta: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, s: torch.Tensor,
                  t1: torch.Tensor, t2: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Eq. (8) as (B, 2, 3) forward maps of pixel coordinates, ``p' = M[:, :2] p + M[:, 2]``.

    Args:
        theta, k1, k2, s, t1, t2: (B,) rotation (radians), skews, scale, translation (px).
        size: (height, width) of the images.
    """
    cos, sin = torch.cos(theta), torch.sin(theta)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    skew = torch.stack([torch.stack([torch.ones_like(k1), k1], -1),
                        torch.stack([k2, torch.ones_like(k2)], -1)], -2)
    linear = s[:, None, None] * rotation @ skew  # (B, 2, 2)
    h, w = size
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=linear.dtype)
    shift = centre + torch.stack([t1, t2], -1)  # (B, 2)
    offset = centre - (linear @ shift[..., None])[..., 0]
    return torch.cat([linear, offset[..., None]], -1)  # (B, 2, 3)


def warp_points(points: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Apply (B, 2, 3) pixel maps to (B, K, 2) pixel (x, y) points."""
    m = matrices.to(points.device, points.dtype)
    return points @ m[:, :, :2].transpose(1, 2) + m[:, None, :, 2]


def warp_images(images: torch.Tensor, matrices: torch.Tensor, *, mode: str = "bilinear",
                padding_mode: str = "reflection") -> torch.Tensor:
    """Resample (B, C, H, W) images so that the pixel at p moves to ``M p`` (B, 2, 3).

    ``torch.nn.functional.affine_grid`` wants, for every output pixel, where to sample the
    input in normalised coordinates (-1 and 1 are the outer edges, ``align_corners=False``):
    the inverse map, conjugated by the pixel-to-normalised scaling.
    """
    if images.ndim != 4:
        raise ValueError(f"expected (B, C, H, W) images, got shape {tuple(images.shape)}")
    h, w = images.shape[-2:]
    m = matrices.double().cpu()
    inverse = torch.linalg.inv(m[:, :, :2])  # (B, 2, 2)
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=torch.float64)
    scale = torch.tensor([2 / w, 2 / h], dtype=torch.float64)
    linear = scale[:, None] * inverse / scale[None, :]
    offset = scale * ((inverse @ (centre - m[:, :, 2])[..., None])[..., 0] - centre)
    theta = torch.cat([linear, offset[..., None]], -1).to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode=mode, padding_mode=padding_mode, align_corners=False)


def contrast_normalize(images: torch.Tensor, low: torch.Tensor | float,
                       high: torch.Tensor | float) -> torch.Tensor:
    """Eq. (9): per channel, ``(S - S(p_L)) / (S(p_H) - S(p_L))`` clipped to [0, 1].

    Args:
        images: (B, C, H, W).
        low, high: percentiles p_L < p_H in percent, scalars or (B, C); ``S(p)`` is the
            channel's p-th percentile with linear interpolation (``numpy.percentile``'s
            default).
    """
    if images.ndim != 4:
        raise ValueError(f"expected (B, C, H, W) images, got shape {tuple(images.shape)}")
    b, c = images.shape[:2]
    ordered = images.flatten(2).sort(-1).values  # (B, C, N)
    n = ordered.shape[-1]

    def percentile(p: torch.Tensor | float) -> torch.Tensor:
        pos = (torch.as_tensor(p, dtype=torch.float64).expand(b, c) / 100 * (n - 1))
        below = pos.floor().long().clamp(0, n - 1)
        above = (below + 1).clamp(max=n - 1)
        frac = (pos - below).to(images.device, images.dtype)[..., None]
        lo = ordered.gather(-1, below.to(images.device)[..., None])
        hi = ordered.gather(-1, above.to(images.device)[..., None])
        return (lo + frac * (hi - lo))[..., None]  # (B, C, 1, 1)

    s_low, s_high = percentile(low), percentile(high)
    scaled = (images - s_low) / (s_high - s_low).clamp_min(torch.finfo(images.dtype).eps)
    return scaled.clamp(0, 1)


class PairedAugmentation:
    """Random flips, eq. (8) warps and eq. (9) contrast for ``fit(augment=...)``, moving
    each target with its image.

    Args:
        targets: the role of each element of ``y`` (a tensor ``y`` is one element):
            ``"label"`` passes through; ``"map"`` ((B, C', H, W) at the images' size, e.g.
            relevance maps) is flipped and warped like the image, without contrast change
            and with zeros where the warp reaches outside the map (the image is padded by
            reflection);
            ``"landmarks"`` ((B, K, 2), or (B, 2K) as x0, y0, x1, y1, ...; pixel (x, y) of the
            image) is moved by the same matrix, and a flip swaps left and right indices.
        flip: probability of a horizontal flip per image (applied first, exactly).
        warp: the sets eq. (8) is drawn from, or None for no warp.
        contrast: the percentile ranges of eq. (9), or None for none.
        flip_permutation: landmark index permutation of a flip; None takes
            :data:`fernb.landmarks.FLIP_PERMUTATION` (68 points).

    Every image draws its own parameters from torch's global RNG (seeded by ``fit``); the
    result has the input's shapes, dtype and device.
    """

    def __init__(self, *, targets: Sequence[str] = ("label",), flip: float = 0.0,
                 warp: WarpSets | None = None, contrast: ContrastRanges | None = None,
                 flip_permutation: Sequence[int] | None = None) -> None:
        bad = [role for role in targets if role not in TARGET_ROLES]
        if not targets or bad:
            raise ValueError(f"targets must name a role from {TARGET_ROLES} for each element "
                             f"of y, got {tuple(targets)}")
        if not 0 <= flip <= 1:
            raise ValueError(f"flip is a probability in [0, 1], got {flip}")
        self.targets = tuple(targets)
        self.flip, self.warp, self.contrast = flip, warp, contrast
        perm = FLIP_PERMUTATION if flip_permutation is None else flip_permutation
        self.flip_permutation = torch.as_tensor(np.asarray(perm), dtype=torch.long)

    def __call__(self, x: torch.Tensor, y: Any) -> tuple[torch.Tensor, Any]:
        if x.ndim != 4:
            raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(x.shape)}")
        single = isinstance(y, torch.Tensor)
        ys = [y] if single else list(y)
        if len(ys) != len(self.targets):
            raise ValueError(f"y has {len(ys)} element(s) but targets names "
                             f"{len(self.targets)}: {self.targets}")
        b, size = len(x), tuple(x.shape[-2:])
        for role, value in zip(self.targets, ys):
            if role == "map" and tuple(value.shape[-2:]) != size:
                raise ValueError(f"maps must have the images' size {size}, got "
                                 f"{tuple(value.shape)}")
        if self.flip:
            flipped = (torch.rand(b) < self.flip).to(x.device)
            x = torch.where(flipped[:, None, None, None], x.flip(-1), x)
            ys = [self._flip(role, value, flipped, size[1])
                  for role, value in zip(self.targets, ys)]
        if self.warp is not None:
            matrices = warp_matrices(**self.warp.sample(b), size=size)
            x = warp_images(x, matrices)
            ys = [self._warp(role, value, matrices) for role, value in zip(self.targets, ys)]
        if self.contrast is not None:
            low, high = self.contrast.sample(b, x.shape[1])
            x = contrast_normalize(x, low, high)
        return x, (ys[0] if single else tuple(ys))

    def _flip(self, role: str, value: torch.Tensor, flipped: torch.Tensor,
              width: int) -> torch.Tensor:
        if role == "map":
            return torch.where(flipped.view(-1, *[1] * (value.ndim - 1)), value.flip(-1), value)
        if role == "landmarks":
            points = _as_points(value)
            if points.shape[1] != len(self.flip_permutation):
                raise ValueError(f"a flip needs a landmark permutation for {points.shape[1]} "
                                 f"points; flip_permutation has {len(self.flip_permutation)}")
            mirrored = points[:, self.flip_permutation.to(points.device)].clone()
            mirrored[..., 0] = (width - 1) - mirrored[..., 0]
            return torch.where(flipped[:, None, None], mirrored, points).reshape(value.shape)
        return value

    def _warp(self, role: str, value: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
        if role == "map":  # zeros outside: a mirrored border would copy peaks near edges
            return warp_images(value, matrices, padding_mode="zeros")
        if role == "landmarks":
            return warp_points(_as_points(value), matrices).reshape(value.shape)
        return value

    def spec(self) -> dict[str, Any]:
        """What the augmentation does, for a stored run's key (:mod:`fernb.specs`)."""
        return {"augmentation": type(self).__name__, "targets": self.targets,
                "flip": self.flip, "warp": self.warp, "contrast": self.contrast,
                "flip_permutation": self.flip_permutation.tolist()}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(targets={self.targets}, flip={self.flip}, "
                f"warp={self.warp}, contrast={self.contrast})")


def _as_points(value: torch.Tensor) -> torch.Tensor:
    """(B, K, 2) view of (B, K, 2) or (B, 2K) landmarks."""
    if value.ndim == 3 and value.shape[-1] == 2:
        return value
    if value.ndim == 2 and value.shape[1] % 2 == 0:
        return value.reshape(len(value), -1, 2)
    raise ValueError(f"landmarks must be (B, K, 2) or (B, 2K) pixel (x, y), got shape "
                     f"{tuple(value.shape)}")


class RelevanceAugmentation(PairedAugmentation):
    """Ferreira et al.'s augmentation (Sec. III-C): every image of every batch is warped by
    eq. (8) with Sec. IV-A's sets, then contrast-normalised by eq. (9); ``y`` is
    (labels, relevance maps) by default (``targets=("label",)`` for labels alone). The paper
    does not flip; ``flip`` adds it."""

    def __init__(self, *, targets: Sequence[str] = ("label", "map"), flip: float = 0.0,
                 warp: WarpSets | None = WarpSets(),
                 contrast: ContrastRanges | None = ContrastRanges(),
                 flip_permutation: Sequence[int] | None = None) -> None:
        super().__init__(targets=targets, flip=flip, warp=warp, contrast=contrast,
                         flip_permutation=flip_permutation)


class LandmarkAugmentation(PairedAugmentation):
    """Landmark-aware horizontal flip (p = 0.5): the image is mirrored and landmark ``i``
    becomes the mirror of landmark ``FLIP_PERMUTATION[i]`` (the subject's right eye corner
    36 takes the mirrored left corner 45), so indices keep their anatomical meaning. ``y`` is
    (B, 136) landmarks by default; ``targets=("label", "landmarks")`` for pairs. ``warp``
    and ``contrast`` add eqs. (8)-(9)."""

    def __init__(self, *, targets: Sequence[str] = ("landmarks",), flip: float = 0.5,
                 warp: WarpSets | None = None, contrast: ContrastRanges | None = None,
                 flip_permutation: Sequence[int] | None = None) -> None:
        super().__init__(targets=targets, flip=flip, warp=warp, contrast=contrast,
                         flip_permutation=flip_permutation)
