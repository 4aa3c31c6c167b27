"""Face preprocessing and training augmentations.

Preprocessing (NumPy/OpenCV, once per image): Viola-Jones face detection with OpenCV's bundled
Haar cascade (ESR, Siqueira et al. 2020, "Methodology"), grayscale, CLAHE (Wadhawan & Gandhi
2023, Sec. III-A), square crop and resize, with landmarks carried through every crop and resize
by one affine map. Augmentation (torchvision.transforms.v2, per batch on (C, H, W) float
tensors): none, flip, or ESR's public-code recipe. Optional 68-point landmarks from MediaPipe
Face Mesh for datasets that ship none.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np
import torch
from torchvision.transforms import v2

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
    """Apply :func:`augmentation` to every image of a (B, C, H, W) batch independently, for
    ``fernb.train.fit(augment=...)`` (a v2 transform called on a batch would draw one set of
    random parameters for the whole batch). Class targets pass through unchanged."""

    def __init__(self, kind: str, size: int) -> None:
        self.kind = kind
        self.transform = augmentation(kind, size)

    def __call__(self, batch: torch.Tensor, targets: Any = None) -> tuple[torch.Tensor, Any]:
        if batch.ndim != 4:
            raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(batch.shape)}")
        if self.kind == "none":
            return batch, targets
        return torch.stack([self.transform(image) for image in batch]), targets

    def __repr__(self) -> str:
        return f"BatchAugmentation({self.kind!r})"


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
