"""Tests of the procedural face generator (fernb.data.synthetic)."""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from fernb.data import datasets
from fernb.data import synthetic as syn
from fernb.data.synthetic import AU_NAMES, PROTOTYPES, export, generate
from fernb.labels import EMOTIONS_7, EMOTIONS_8, valence_arousal

# Clean peaks: no pose jitter, jitter, blends or resting bias, so landmark motion is the AUs'.
CLEAN = dict(pose=0.0, au_jitter=0.0, blend_prob=0.0, resting_bias=0.0, intensity=(1.0, 1.0))


@pytest.fixture(scope="module")
def lab() -> datasets.FaceDataset:
    return generate("synth-lab", n_subjects=3, size=96, seed=3, **CLEAN)


@pytest.fixture(scope="module")
def wild() -> datasets.FaceDataset:
    return generate("synth-wild", n_subjects=4, size=64, seed=5, per_subject=60,
                    label_noise=0.2)


def _pairs(ds: datasets.FaceDataset, emotion: str) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks of (first frame, last frame) of every sequence of ``emotion``."""
    k = ds.classes.index(emotion)
    last = np.where((ds.labels == k) & (ds.meta["frame"] == ds.meta["n_frames"] - 1))[0]
    first = np.array([np.where((ds.meta["sequence"] == ds.meta["sequence"][i])
                               & (ds.meta["frame"] == 0))[0][0] for i in last])
    return ds.landmarks[first], ds.landmarks[last]


def test_same_seed_same_bytes_other_seed_differs() -> None:
    for preset in syn.PRESETS:
        a = generate(preset, n_subjects=2, size=48, seed=7)
        b = generate(preset, n_subjects=2, size=48, seed=7)
        c = generate(preset, n_subjects=2, size=48, seed=8)
        assert a.images.tobytes() == b.images.tobytes()
        assert a.masks.tobytes() == b.masks.tobytes()
        np.testing.assert_array_equal(a.landmarks, b.landmarks)
        assert a.images.tobytes() != c.images.tobytes()


@pytest.mark.parametrize("size", [48, 77, 160, 224])
@pytest.mark.parametrize("preset", syn.PRESETS)
def test_shapes_and_dtypes(preset: str, size: int) -> None:
    ds = generate(preset, n_subjects=2, size=size, seed=0, **(
        {"per_subject": 5} if preset == "synth-wild" else {}))
    n = len(ds)
    c = 8 if preset == "synth-lab" else 7
    assert ds.classes == (EMOTIONS_8 if c == 8 else EMOTIONS_7)
    assert ds.images.shape == (n, size, size) and ds.images.dtype == np.uint8
    assert ds.masks.shape == (n, size, size) and ds.masks.dtype == np.uint8
    assert set(np.unique(ds.masks)) <= {0, 1}
    assert ds.landmarks.shape == (n, 68, 2) and ds.landmarks.dtype == np.float32
    assert ds.aus.shape == (n, len(AU_NAMES)) and ds.au_names == AU_NAMES
    assert ds.mixtures.shape == (n, c) and ds.valence_arousal.shape == (n, 2)
    assert ds.aus.min() >= 0 and ds.aus.max() <= 1
    assert np.abs(ds.valence_arousal).max() <= 1
    if preset == "synth-lab":
        inside = (ds.landmarks >= 0) & (ds.landmarks <= size - 1)
        assert inside.all()
    assert ds.images.std() > 20     # a rendered face, not a flat image


def test_prototype_table_covers_the_required_aus() -> None:
    required = {1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 16, 17, 20, 23, 25, 26}
    assert {int(a[2:]) for a in AU_NAMES} == required
    assert set(PROTOTYPES) == set(EMOTIONS_8)
    assert PROTOTYPES["neutral"] == {}
    assert {"AU6", "AU12"} <= set(PROTOTYPES["happiness"])
    assert {"AU1", "AU2", "AU5", "AU26"} <= set(PROTOTYPES["surprise"])
    assert {"AU1", "AU2", "AU5", "AU26"} <= set(PROTOTYPES["fear"])
    assert set(syn.UNILATERAL["contempt"]) == {"AU12", "AU14"}


def test_peak_aus_follow_the_prototypes(lab: datasets.FaceDataset) -> None:
    for emotion in ("happiness", "anger", "surprise"):
        k = lab.classes.index(emotion)
        peak = (lab.labels == k) & (lab.meta["frame"] == lab.meta["n_frames"] - 1)
        expected = np.zeros(len(AU_NAMES))
        for au, value in PROTOTYPES[emotion].items():
            expected[AU_NAMES.index(au)] = value
        np.testing.assert_allclose(lab.aus[peak], np.tile(expected, (peak.sum(), 1)),
                                   atol=1e-6)
    neutral = lab.meta["frame"] == 0
    assert np.all(lab.aus[neutral] == 0)


def test_au12_raises_mouth_corners(lab: datasets.FaceDataset) -> None:
    rest, peak = _pairs(lab, "happiness")
    assert np.all(peak[:, [48, 54], 1] < rest[:, [48, 54], 1] - 1.0)     # up (y down)
    width = lambda p: p[:, 54, 0] - p[:, 48, 0]                              # noqa: E731
    assert np.all(width(peak) > width(rest))


def test_au26_drops_jaw_and_parts_lips(lab: datasets.FaceDataset) -> None:
    rest, peak = _pairs(lab, "surprise")
    assert np.all(peak[:, 8, 1] > rest[:, 8, 1] + 3.0)
    gap = lambda p: p[:, 66, 1] - p[:, 62, 1]                                # noqa: E731
    assert np.all(gap(rest) < 1.0) and np.all(gap(peak) > 5.0)


def test_open_mouth_interior_is_dark(lab: datasets.FaceDataset) -> None:
    k = lab.classes.index("surprise")
    last = np.where((lab.labels == k) & (lab.meta["frame"] == lab.meta["n_frames"] - 1))[0]
    for i in last:
        x, y = (0.25 * lab.landmarks[i, 62] + 0.75 * lab.landmarks[i, 66]).round().astype(int)
        lips = lab.landmarks[i, 57].round().astype(int)
        assert lab.images[i, y, x] < 80
        assert lab.images[i, y, x] < lab.images[i, lips[1] + 6, lips[0]] - 40


def test_au1_raises_inner_brows_and_au4_lowers_and_narrows(
        lab: datasets.FaceDataset) -> None:
    rest, peak = _pairs(lab, "surprise")                 # AU1 + AU2
    assert np.all(peak[:, [21, 22], 1] < rest[:, [21, 22], 1] - 2.0)
    rest, peak = _pairs(lab, "anger")                    # AU4
    assert np.all(peak[:, 17:27, 1] > rest[:, 17:27, 1])
    inner = lambda p: p[:, 22, 0] - p[:, 21, 0]                              # noqa: E731
    assert np.all(inner(peak) < inner(rest) - 1.0)


def test_contempt_is_unilateral(lab: datasets.FaceDataset) -> None:
    rest, peak = _pairs(lab, "contempt")
    lift = rest[:, [48, 54], 1] - peak[:, [48, 54], 1]   # upward motion of each corner
    assert np.all(lift.max(1) > 1.5) and np.all(lift.min(1) < 0.1)
    k = lab.classes.index("contempt")
    assert set(np.unique(lab.meta["au_side"][lab.labels == k])) <= {-1, 1}
    rest, peak = _pairs(lab, "happiness")
    lift = rest[:, [48, 54], 1] - peak[:, [48, 54], 1]
    np.testing.assert_allclose(lift[:, 0], lift[:, 1], atol=0.05)


def test_ckplus_protocol_frames() -> None:
    ds = generate("synth-lab", n_subjects=2, size=48, seed=1, n_frames=9)
    assert len(ds) == 2 * 7 * 4
    for s in np.unique(ds.meta["sequence"]):
        idx = np.where(ds.meta["sequence"] == s)[0]
        frames = ds.meta["frame"][idx]
        np.testing.assert_array_equal(np.sort(frames), [0, 6, 7, 8])
        labels = ds.labels[idx][np.argsort(frames)]
        assert labels[0] == 0 and labels[1] == labels[2] == labels[3] != 0
        assert len(np.unique(ds.subjects[idx])) == 1
    full = generate("synth-lab", n_subjects=2, size=48, seed=1, n_frames=9, frames="all")
    assert len(full) == 2 * 7 * 9
    seq0 = full.meta["sequence"] == 0
    assert np.all(np.diff(full.meta["intensity"][seq0]) >= 0)


def test_mixtures_and_valence_arousal(lab: datasets.FaceDataset,
                                      wild: datasets.FaceDataset) -> None:
    blended = generate("synth-lab", n_subjects=3, size=48, seed=2, blend_prob=1.0)
    for ds in (blended, wild):
        np.testing.assert_allclose(ds.mixtures.sum(1), 1.0, atol=1e-5)
        clean = ds.meta.get("clean_label", ds.labels)
        np.testing.assert_array_equal(ds.mixtures.argmax(1), clean)
        for i in range(0, len(ds), 17):
            expected = valence_arousal(ds.mixtures[i], ds.classes, ds.meta["intensity"][i])
            np.testing.assert_allclose(ds.valence_arousal[i], expected, atol=1e-5)
    assert (np.sort(blended.mixtures, 1)[:, -2] > 0).mean() > 0.5
    happy = lab.labels == lab.classes.index("happiness")
    assert np.all(lab.valence_arousal[happy, 0] > 0.5)


def test_label_noise_is_recorded(wild: datasets.FaceDataset) -> None:
    flipped = wild.labels != wild.meta["clean_label"]
    assert 0.1 < flipped.mean() < 0.3
    none = generate("synth-wild", n_subjects=2, size=48, label_noise=0.0)
    np.testing.assert_array_equal(none.labels, none.meta["clean_label"])


def test_wild_class_imbalance_is_rafdb_like() -> None:
    ds = generate("synth-wild", n_subjects=10, size=48, per_subject=80, label_noise=0.0,
                  imbalance=1.0)
    counts = ds.class_counts()
    assert counts.argmax() == ds.classes.index("happiness")
    assert counts[ds.classes.index("fear")] < counts[ds.classes.index("sadness")] / 3
    flat = generate("synth-wild", n_subjects=10, size=48, per_subject=80, imbalance=0.0)
    assert flat.class_counts().min() > 0.6 * flat.class_counts().max()


def test_masks_mark_the_active_regions(lab: datasets.FaceDataset) -> None:
    assert np.all(lab.masks.reshape(len(lab), -1).sum(1) > 0)
    last = lab.meta["frame"] == lab.meta["n_frames"] - 1
    for emotion, point in (("happiness", 62), ("anger", 21), ("surprise", 8)):
        idx = np.where(last & (lab.labels == lab.classes.index(emotion)))[0]
        for i in idx:
            x, y = lab.landmarks[i, point].round().astype(int)
            y = y - 3 if point == 8 else y
            assert lab.masks[i, y, x] == 1
    happy = np.where(last & (lab.labels == lab.classes.index("happiness")))[0][0]
    x, y = lab.landmarks[happy, 21].round().astype(int)
    assert lab.masks[happy, y, x] == 0                       # brows are not a smile's evidence
    neutral = np.where(lab.labels == 0)[0][0]
    for point in (21, 37, 62):
        x, y = lab.landmarks[neutral, point].round().astype(int)
        assert lab.masks[neutral, y, x] == 1


def test_landmarks_follow_the_pose_transform() -> None:
    still = dict(yaw=0.0, occlusion=0.0, noise=0.0, blur=0.0, illumination=0.0, clutter=0.0,
                 label_noise=0.0, per_subject=10)
    a = generate("synth-wild", n_subjects=2, size=96, seed=4, pose=0.0, **still)
    b = generate("synth-wild", n_subjects=2, size=96, seed=4, pose=1.5, **still)
    for i in range(len(a)):
        m, _ = cv2.estimateAffinePartial2D(a.landmarks[i], b.landmarks[i], method=cv2.LMEDS)
        mapped = a.landmarks[i] @ m[:, :2].T + m[:, 2]
        assert np.abs(mapped - b.landmarks[i]).max() < 1e-2
        roll = np.degrees(np.arctan2(m[1, 0], m[0, 0]))
        assert abs(roll - b.meta["roll"][i]) < 0.05
    assert np.abs(b.meta["roll"]).max() > 5


@pytest.mark.parametrize("yaw", [0.0, 25.0])
def test_pupils_lie_at_the_eye_landmarks(yaw: float) -> None:
    ds = generate("synth-wild", n_subjects=3, size=96, seed=9, per_subject=8, yaw=yaw,
                  occlusion=0.0, noise=0.0, blur=0.0, clutter=0.0, illumination=0.0)
    checked = 0
    for i in range(len(ds)):
        x, y = ds.landmarks[i, 28].round().astype(int)
        skin = float(ds.images[i, y, x])
        for eye in (slice(36, 42), slice(42, 48)):
            pts = ds.landmarks[i, eye]
            if pts[4:6, 1].mean() - pts[1:3, 1].mean() < 4.5:   # squinting: lids cover it
                continue
            centre = 0.5 * (pts[0] + pts[3])
            half = 0.5 * (pts[3] - pts[0])
            value = lambda p: float(ds.images[i, int(round(p[1])), int(round(p[0]))])  # noqa
            pupil = value(centre)
            sclera = min(max(value(centre + sign * f * half) for f in (0.5, 0.6, 0.7, 0.8))
                         for sign in (-1, 1))                      # brightest each side
            assert pupil < skin - 60 and pupil < sclera - 30
            checked += 1
    assert checked > len(ds) / 2


def test_cache_hit_is_a_load(tmp_path, monkeypatch) -> None:
    first = generate("synth-lab", n_subjects=2, size=48, seed=3, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1

    def fail(*args, **kwargs):
        raise AssertionError("second call should load the cache, not render")

    monkeypatch.setattr(syn, "_build", fail)
    second = generate("synth-lab", n_subjects=2, size=48, seed=3, cache_dir=tmp_path)
    for key in ("images", "labels", "subjects", "landmarks", "aus", "mixtures",
                "valence_arousal", "masks"):
        np.testing.assert_array_equal(getattr(first, key), getattr(second, key))
    for key, value in first.meta.items():
        np.testing.assert_array_equal(value, second.meta[key])
    assert second.classes == first.classes and second.au_names == AU_NAMES
    with pytest.raises(AssertionError, match="should load"):
        generate("synth-lab", n_subjects=2, size=48, seed=4, cache_dir=tmp_path)


def test_registered_loaders_use_root_as_cache(tmp_path) -> None:
    assert {"synth-lab", "synth-wild"} <= set(datasets.available_datasets())
    ds = datasets.load_dataset("synth-wild", root=tmp_path, n_subjects=2, size=48,
                               per_subject=3)
    assert ds.name == "synth-wild" and len(ds) == 6
    assert len(list(tmp_path.glob("synth-wild-*.npz"))) == 1


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(preset="synth-real"), ValueError, "synth-lab"),
    (dict(size=47), ValueError, "48..224"),
    (dict(size=225), ValueError, "48..224"),
    (dict(n_subjects=1), ValueError, "n_subjects"),
    (dict(size=64.0), TypeError, "size must be an int"),
    (dict(colour=1), ValueError, "valid knobs: .*au_jitter"),
    (dict(per_subject=3), ValueError, "unknown knob"),
    (dict(frames="peak"), ValueError, "protocol"),
    (dict(blend_strength=0.5), ValueError, "< 0.5"),
    (dict(intensity=(0.8, 0.2)), ValueError, "low <= high"),
    (dict(noise=-1), ValueError, ">= 0"),
])
def test_bad_input_is_rejected(kwargs, error, match) -> None:
    args = dict(preset="synth-lab", n_subjects=2, size=48)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        generate(args.pop("preset"), **args)


def test_export_layout(tmp_path) -> None:
    ds = generate("synth-lab", n_subjects=2, size=48, seed=0)
    out = export(ds, tmp_path / "out")
    table = pd.read_csv(out / "labels.csv")
    assert len(table) == len(ds)
    assert list(table.columns[:3]) == ["path", "label", "subject"]
    assert {"valence", "arousal"} <= set(table)
    assert {f"p_{c}" for c in ds.classes} <= set(table)
    assert {f"x{k}" for k in range(68)} | {f"y{k}" for k in range(68)} <= set(table)
    assert set(AU_NAMES) <= set(table)
    row = table.iloc[5]
    img = cv2.imread(str(out / row["path"]), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(img, ds.images[5])
    assert row["label"] == ds.classes[ds.labels[5]]
    np.testing.assert_allclose([row["x30"], row["y30"]], ds.landmarks[5, 30], atol=1e-4)
    assert "landmarks" in (out / "README.txt").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["out"], "no temporary folder is left"
    with pytest.raises(FileExistsError, match="not empty"):
        export(ds, out)
    with pytest.raises(TypeError, match="FaceDataset"):
        export(ds.images, tmp_path / "bad")


def test_an_interrupted_export_leaves_nothing(tmp_path, monkeypatch) -> None:
    ds = generate("synth-lab", n_subjects=2, size=48, seed=0)
    calls = []

    def fail(path, image):
        calls.append(path)
        if len(calls) == 10:
            raise KeyboardInterrupt
        return True

    monkeypatch.setattr(cv2, "imwrite", fail)
    with pytest.raises(KeyboardInterrupt):
        export(ds, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_export_reads_back_as_the_folder_dataset(tmp_path) -> None:
    ds = generate("synth-wild", n_subjects=3, size=48, seed=1)
    out = export(ds, tmp_path / "wild")
    back = datasets.load_dataset("folder", root=str(out), size=48)
    assert back.classes == ds.classes and len(back) == len(ds)
    np.testing.assert_array_equal(back.images, ds.images)
    np.testing.assert_array_equal(back.labels, ds.labels)
    np.testing.assert_array_equal(back.subjects, ds.subjects)
    np.testing.assert_allclose(back.landmarks, ds.landmarks, atol=1e-4)
    np.testing.assert_allclose(back.valence_arousal, ds.valence_arousal, atol=1e-6)
    np.testing.assert_allclose(back.mixtures, ds.mixtures, atol=1e-6)
    smaller = datasets.load_dataset("folder", root=str(out), size=24 * 2 - 8)
    assert smaller.image_size == (40, 40)
    np.testing.assert_allclose(smaller.landmarks, (ds.landmarks + 0.5) * 40 / 48 - 0.5,
                               atol=1e-3)
