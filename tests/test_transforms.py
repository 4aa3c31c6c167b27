"""Preprocessing (Haar detection, CLAHE, crop/resize with landmarks) and augmentations."""
from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
import torch

from fernb.data.transforms import (MEDIAPIPE_TO_68, apply_affine, apply_clahe, augmentation,
                                   box_from_landmarks, channel_stats, crop_matrix, crop_resize,
                                   detect_face, detect_landmarks, mediapipe_to_68,
                                   normalization, preprocess_face, square_box)
from fernb.landmarks import PARTS


def drawn_face(size: int = 240, cx: int = 130, cy: int = 120, s: int = 60) -> np.ndarray:
    """A blurred cartoon face (skin 170 on background 70, dark brows, eyes and mouth)."""
    img = np.full((size, size), 70, np.uint8)
    cv2.ellipse(img, (cx, cy), (s, int(s * 1.3)), 0, 0, 360, 170, -1)
    for side in (-1, 1):
        ex, ey = cx + side * int(s * 0.4), cy - int(s * 0.25)
        cv2.ellipse(img, (ex, ey - int(s * 0.2)), (int(s * 0.25), int(s * 0.06)), 0, 0, 360, 60, -1)
        cv2.ellipse(img, (ex, ey), (int(s * 0.18), int(s * 0.09)), 0, 0, 360, 40, -1)
    cv2.line(img, (cx, cy - int(s * 0.1)), (cx, cy + int(s * 0.3)), 140, 3)
    cv2.ellipse(img, (cx, cy + int(s * 0.55)), (int(s * 0.3), int(s * 0.08)), 0, 0, 360, 60, -1)
    return cv2.GaussianBlur(img, (0, 0), 2)


def synthetic_face_on_canvas() -> tuple[np.ndarray, tuple[int, int, int, int]]:
    synthetic = pytest.importorskip("fernb.data.synthetic")
    if not hasattr(synthetic, "generate"):
        pytest.skip("fernb.data.synthetic.generate is not available")
    face = synthetic.generate("synth-lab", n_subjects=2, size=160).images[0]
    face = face if face.ndim == 2 else cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)
    canvas = np.full((320, 320), int(np.median(face[:8])), np.uint8)
    canvas[60:220, 100:260] = face
    return canvas, (100, 60, 160, 160)


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)


def test_haar_finds_a_drawn_face_at_realistic_contrast():
    box = detect_face(drawn_face(cx=130, cy=120, s=60))
    assert box is not None
    x, y, w, h = box
    assert abs(x + w / 2 - 130) < 10 and abs(y + h / 2 - 120) < 10 and 100 < w < 220


def test_haar_finds_a_synthetic_face_placed_on_a_canvas():
    canvas, truth = synthetic_face_on_canvas()
    box = detect_face(canvas)
    assert box is not None and iou(box, truth) > 0.3


def test_no_face_on_a_flat_image_and_crop_fallbacks():
    flat = np.full((80, 80), 128, np.uint8)
    assert detect_face(flat) is None
    points = np.array([[20, 20], [60, 20], [40, 60]], np.float32)
    assert preprocess_face(flat, size=32, landmarks=points).crop == "landmarks"
    assert preprocess_face(flat, size=32).crop == "none"
    assert preprocess_face(drawn_face(), size=48).crop == "haar"


def test_clahe_matches_opencv_and_raises_local_contrast():
    rng = np.random.default_rng(0)
    low = (100 + 20 * rng.random((64, 64))).astype(np.uint8)
    expected = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(low)
    np.testing.assert_array_equal(apply_clahe(low), expected)
    assert apply_clahe(low).std() > 2 * low.std()
    rgb = np.stack([low, low, low], axis=-1)
    out = apply_clahe(rgb)
    assert out.shape == rgb.shape and out.std() > 2 * rgb.std()


def test_crop_matrix_maps_box_edges_to_output_edges():
    m = crop_matrix((10, 20, 40, 40), 20)
    corners = np.array([[9.5, 19.5], [49.5, 59.5], [29.5, 39.5]])  # left/top, right/bottom, centre
    np.testing.assert_allclose(apply_affine(corners, m), [[-0.5, -0.5], [19.5, 19.5], [9.5, 9.5]])


@pytest.mark.parametrize("box,size", [((20, 10, 40, 40), 120), ((-10, -6, 60, 60), 30)])
def test_landmark_follows_its_pixel_through_crop_and_resize(box, size):
    image = np.zeros((64, 64), np.uint8)
    image[30, 34] = 255                                            # a landmark at (x=34, y=30)
    out, points = crop_resize(image, box, size, np.array([[34.0, 30.0]]))
    blurred = cv2.GaussianBlur(out.astype(np.float32), (0, 0), 1.0)
    y, x = np.unravel_index(blurred.argmax(), blurred.shape)
    assert out.shape == (size, size)
    np.testing.assert_allclose(points[0], (x, y), atol=0.6 * max(1, size / box[2]))


def test_square_and_landmark_boxes():
    assert square_box((10, 10, 20, 40)) == (0, 10, 40, 40)
    assert square_box((0, 0, 10, 10), margin=0.5) == (-5, -5, 20, 20)
    x, y, w, h = box_from_landmarks(np.array([[10, 10], [30, 50]]), margin=0.0)
    assert (w, h) == (40, 40) and (x + w / 2, y + h / 2) == (20, 30)


def test_preprocess_face_carries_landmarks_and_validates():
    image = drawn_face()
    points = np.array([[100.0, 100.0], [160.0, 100.0]])
    face = preprocess_face(image, size=48, crop="box", box=(70, 60, 120, 120), landmarks=points)
    np.testing.assert_allclose(face.landmarks, apply_affine(points, crop_matrix((70, 60, 120, 120), 48)))
    rgb = preprocess_face(np.stack([image] * 3, -1), size=32, crop="none", grayscale=False)
    assert rgb.image.shape == (32, 32, 3)
    with pytest.raises(ValueError, match="crop must be one of"):
        preprocess_face(image, size=32, crop="mtcnn")
    with pytest.raises(ValueError, match="needs landmarks"):
        preprocess_face(image, size=32, crop="landmarks")


@pytest.mark.parametrize("kind", ["none", "flip", "esr"])
def test_augmentations_keep_shape_and_range(kind):
    torch.manual_seed(0)
    x = torch.rand(1, 40, 40)
    out = augmentation(kind, 32)(x)
    assert out.shape == (1, 32, 32) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1


def test_flip_and_esr_actually_vary():
    x = torch.linspace(0, 1, 32).repeat(1, 32, 1)
    torch.manual_seed(0)
    flips = [augmentation("flip", 32)(x) for _ in range(20)]
    assert any(torch.equal(f, x.flip(-1)) for f in flips) and any(torch.equal(f, x) for f in flips)
    torch.manual_seed(0)
    assert not torch.allclose(augmentation("esr", 32)(x), augmentation("esr", 32)(x))
    assert torch.equal(augmentation("none", 32)(x), x)
    with pytest.raises(ValueError, match="augmentation kind"):
        augmentation("mixup", 32)


def test_normalization_presets_and_stats():
    x = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 3)
    np.testing.assert_allclose(normalization("symmetric")(x).flatten(), [-1, 0, 1])
    assert normalization("symmetric", channels=3)(x.expand(3, 1, 3)).shape == (3, 1, 3)
    with pytest.raises(ValueError, match="channels=3"):
        normalization("imagenet", channels=1)
    images = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)])
    mean, std = channel_stats(images)
    assert mean == pytest.approx((0.5,)) and std[0] > 0
    z = normalization("stats", stats=(mean, std))(images[1])
    assert torch.allclose(z, torch.full_like(z, 0.5 / std[0]))
    with pytest.raises(ValueError, match="stats"):
        normalization("stats")


def test_mediapipe_mapping_table():
    assert len(MEDIAPIPE_TO_68) == 68
    flat = [i for group in MEDIAPIPE_TO_68 for i in group]
    assert all(0 <= i < 468 for i in flat) and all(1 <= len(g) <= 2 for g in MEDIAPIPE_TO_68)
    assert len({g for g in MEDIAPIPE_TO_68}) == 68                # no two points alike
    assert MEDIAPIPE_TO_68[30] == (4,) and MEDIAPIPE_TO_68[8] == (152,)  # nose tip, chin
    pts = np.stack([np.arange(478.0), np.zeros(478)], axis=1)
    out = mediapipe_to_68(pts)
    assert out.shape == (68, 2)
    np.testing.assert_allclose(out[list(PARTS["nose"])[:2], 0], [(168 + 6) / 2, (197 + 195) / 2])
    with pytest.raises(ValueError, match="478"):
        mediapipe_to_68(np.zeros((68, 2)))


def test_landmark_detector_names_the_extra_when_mediapipe_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)
    with pytest.raises(ImportError, match=r'pip install "fernb\[landmarks\]"'):
        detect_landmarks([np.zeros((32, 32), np.uint8)])


def test_batch_augmentation_draws_per_image():
    from fernb.data.transforms import BatchAugmentation
    torch.manual_seed(0)
    batch = torch.rand(1, 1, 48, 48).expand(16, -1, -1, -1).contiguous()
    labels = torch.arange(16)
    out, targets = BatchAugmentation("esr", 48)(batch, labels)
    assert out.shape == batch.shape and targets is labels
    assert len({round(float(img.sum()), 3) for img in out}) > 8, "images share one transform"
    assert torch.equal(BatchAugmentation("none", 48)(batch, labels)[0], batch)
    with pytest.raises(ValueError, match="B, C, H, W"):
        BatchAugmentation("flip", 48)(batch[0], labels)
