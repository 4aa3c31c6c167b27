"""Tests of the generator's mechanism knobs (fernb.data.synthetic): distractor cues, structured
blends, labels drawn from the visible mixture and landmark motion."""
from __future__ import annotations

import hashlib
import itertools

import cv2
import numpy as np
import pytest
from scipy import stats

from fernb.data import datasets
from fernb.data import synthetic as syn
from fernb.data.synthetic import (BLEND_PAIRS, PROTOTYPES, blend_partners, cue_corners,
                                  cue_region, generate, misleading_cues, paint_cues,
                                  sample_cues, with_cues)
from fernb.labels import EMOTIONS_7, EMOTIONS_8

# Digests of small default sets and their cache-file keys, computed with the generator as it
# was before the mechanism knobs existed: with every knob off, the data and the cache stay.
DEFAULT_DIGESTS = {"synth-lab": "41c42a2e3f270297", "synth-wild": "d7274476956da8b7"}
DEFAULT_CACHE_KEYS = {"synth-lab": "fcf40378f67533fa0f62", "synth-wild": "2374de4133774ddba101"}
OFF = dict(distractor=None, blend_pairs="uniform", label_from_mixture=False, motion=1.0)


def _digest(ds: datasets.FaceDataset) -> str:
    """Hash of every array of a set (floats rounded to 3 decimals, meta keys sorted)."""
    h = hashlib.sha256()
    for a in (ds.images, ds.labels, ds.subjects, ds.masks):
        h.update(np.ascontiguousarray(a).tobytes())
    for a in (ds.landmarks, ds.aus, ds.mixtures, ds.valence_arousal):
        h.update(np.round(a.astype(np.float64), 3).tobytes())
    for key in sorted(ds.meta):
        v = ds.meta[key]
        h.update(key.encode())
        h.update((np.round(v.astype(np.float64), 3) if v.dtype.kind == "f"
                  else v.astype(np.int64)).tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("preset", syn.PRESETS)
def test_default_generation_and_cache_key_are_unchanged(preset: str, tmp_path) -> None:
    for knobs in ({}, OFF):
        cache = tmp_path / str(len(knobs))
        ds = generate(preset, n_subjects=3, size=48, seed=0, cache_dir=cache, **knobs)
        assert _digest(ds) == DEFAULT_DIGESTS[preset]
        assert "cue" not in ds.meta and "cue_corner" not in ds.meta
        assert [p.name for p in cache.iterdir()] == [
            f"{preset}-{DEFAULT_CACHE_KEYS[preset]}.npz"]


def test_each_knob_setting_has_its_own_cache_file(tmp_path) -> None:
    settings = [{}, dict(distractor=0.0), dict(distractor=1.0), dict(blend_pairs="facs"),
                dict(label_from_mixture=True), dict(motion=0.0), dict(motion=0.5)]
    for knobs in settings:
        generate("synth-wild", n_subjects=2, size=48, seed=0, per_subject=3, cache_dir=tmp_path,
                 **knobs)
    assert len(list(tmp_path.glob("*.npz"))) == len(settings)
    again = generate("synth-wild", n_subjects=2, size=48, seed=0, per_subject=3,
                     cache_dir=tmp_path, distractor=1.0)
    assert "cue" in again.meta and len(list(tmp_path.glob("*.npz"))) == len(settings)


# ----------------------------------------------------------------------------- distractor

@pytest.fixture(scope="module")
def cued() -> dict[str, tuple[datasets.FaceDataset, datasets.FaceDataset]]:
    """(without, with a strength-1 cue) for synth-lab at 96 px and synth-wild at 48 and 96."""
    out = {}
    for preset, size in (("synth-lab", 96), ("synth-wild", 48), ("synth-wild", 96)):
        args = dict(n_subjects=3, size=size, seed=2, **(
            {"per_subject": 30} if preset == "synth-wild" else {}))
        out[f"{preset}-{size}"] = (generate(preset, **args),
                                   generate(preset, distractor=1.0, **args))
    return out


def _patch(ds: datasets.FaceDataset) -> np.ndarray:
    """(N, H, W) bool: the pixels of each image's cue patch."""
    inside = np.zeros(ds.images.shape[:3], bool)
    for i, corner in enumerate(ds.meta["cue_corner"]):
        inside[(i, *cue_region(ds.image_size, int(corner)))] = True
    return inside


def test_strength_one_cue_shows_the_label(cued) -> None:
    for plain, ds in cued.values():
        np.testing.assert_array_equal(ds.meta["cue"], ds.labels)
        # the patch holds exactly the pattern of that class: painting it again changes nothing
        np.testing.assert_array_equal(
            paint_cues(ds.images, ds.meta["cue"], ds.meta["cue_corner"]), ds.images)


def test_cue_changes_only_its_patch(cued) -> None:
    for plain, ds in cued.values():
        patch = _patch(ds)
        np.testing.assert_array_equal(ds.images[~patch], plain.images[~patch])
        assert (ds.images[patch] != plain.images[patch]).mean() > 0.5
        for key in ("labels", "subjects", "landmarks", "masks", "aus", "mixtures"):
            np.testing.assert_array_equal(getattr(ds, key), getattr(plain, key))


def test_cue_lies_outside_evidence_masks_and_landmark_hulls(cued) -> None:
    for plain, ds in cued.values():
        patch = _patch(ds)
        assert not (ds.masks.astype(bool) & patch).any()
        for i in range(len(ds)):
            hull = cv2.convexHull(ds.landmarks[i].astype(np.float32))
            ys, xs = np.nonzero(patch[i])
            inside = [cv2.pointPolygonTest(hull, (float(x), float(y)), False)
                      for x, y in zip(xs, ys)]
            assert max(inside) < 0, f"image {i}: the cue touches the landmark hull"


def test_cue_moves_to_the_first_free_corner() -> None:
    ds = generate("synth-lab", n_subjects=2, size=48, seed=0)
    assert np.all(cue_corners(ds) == 0)                      # frontal faces: top-left is free
    face = ds.subset(np.arange(4))
    face.masks = face.masks.copy()
    face.masks[1, :4, :4] = 1                                # reaches the top-left corner
    face.masks[2, :4, :4] = face.masks[2, :4, -4:] = 1       # top-left and top-right
    face.masks[3] = 1                                        # every corner: the least covered
    face.masks[3, -2:, -2:] = 0
    np.testing.assert_array_equal(cue_corners(face), [0, 1, 2, 3])
    assert with_cues(face, 0).meta["cue_corner"].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("size, side", [(48, 6), (64, 8), (96, 12), (224, 28)])
def test_cue_patterns_are_distinct_and_contrasted(size: int, side: int) -> None:
    blank = np.full((9, size, size), 100, np.uint8)
    painted = paint_cues(blank, np.arange(-1, 8))
    rows, cols = cue_region((size, size))
    assert rows == slice(0, side) and cols == slice(0, side)
    patches = painted[:, rows, cols].astype(int)
    np.testing.assert_array_equal(painted[:, side:], blank[:, side:])
    assert np.all(patches[0] == 128)                           # -1: a plain grey patch
    for k in range(1, 9):                                       # classes 0..7
        assert patches[k].max() - patches[k].min() >= 200      # light and dark cells
    for a, b in itertools.combinations(range(9), 2):
        assert np.abs(patches[a] - patches[b]).max() >= 100


def test_repainting_overwrites_the_earlier_cue() -> None:
    ds = generate("synth-wild", n_subjects=2, size=64, seed=1, per_subject=10, distractor=1.0)
    before = ds.images.copy()
    other = misleading_cues(ds.labels, ds.n_classes, seed=3)
    twice = paint_cues(paint_cues(ds.images, other, ds.meta["cue_corner"]), ds.meta["cue"],
                       ds.meta["cue_corner"])
    np.testing.assert_array_equal(twice, ds.images)
    flipped = with_cues(ds, other)
    np.testing.assert_array_equal(flipped.meta["cue"], other)
    np.testing.assert_array_equal(flipped.meta["cue_corner"], ds.meta["cue_corner"])
    np.testing.assert_array_equal(with_cues(flipped, other).images, flipped.images)
    np.testing.assert_array_equal(with_cues(flipped, ds.meta["cue"]).images, ds.images)
    np.testing.assert_array_equal(ds.images, before)           # the input is not modified
    blank = with_cues(ds, -1)
    assert np.all(blank.images[_patch(blank)] == 128) and np.all(blank.meta["cue"] == -1)
    rgb = np.repeat(ds.images[..., None], 3, -1)
    np.testing.assert_array_equal(paint_cues(rgb, other, ds.meta["cue_corner"]),
                                  np.repeat(flipped.images[..., None], 3, -1))


def test_cues_can_be_added_to_a_set_generated_without_them(cued) -> None:
    plain, ds = cued["synth-wild-96"]
    added = with_cues(plain, ds.meta["cue"])
    np.testing.assert_array_equal(added.images, ds.images)
    np.testing.assert_array_equal(added.meta["cue_corner"], ds.meta["cue_corner"])
    assert "cue" not in plain.meta


def test_cue_strength_sets_the_dependence_on_the_label() -> None:
    ds = generate("synth-wild", n_subjects=20, size=48, seed=0, per_subject=50, imbalance=0.0,
                  distractor=0.0)
    table = np.zeros((7, 7))
    np.add.at(table, (ds.labels, ds.meta["cue"]), 1)
    assert stats.chi2_contingency(table).pvalue > 0.05          # independent at strength 0
    labels = np.repeat(np.arange(7), 1000)
    for strength in (0.0, 0.3, 0.8):
        cues = sample_cues(labels, strength, 7, seed=1)
        expected = strength + (1 - strength) / 7                # the label, or drawn again
        sd = np.sqrt(expected * (1 - expected) / len(labels))
        assert abs((cues == labels).mean() - expected) < 4 * sd
        wrong = cues[cues != labels]
        assert stats.chisquare(np.bincount(wrong, minlength=7)).pvalue > 0.01
    np.testing.assert_array_equal(sample_cues(labels, 1.0, 7), labels)
    misleading = misleading_cues(labels, 7, seed=2)
    assert not np.any(misleading == labels)
    assert set(misleading[labels == 0]) == set(range(1, 7))


@pytest.mark.parametrize("call, error, match", [
    (lambda x: paint_cues(x, 8), ValueError, r"cues must lie in \[-1, 7\]"),
    (lambda x: paint_cues(x, np.zeros(3, int)), ValueError, "cues has 3 entries for 4"),
    (lambda x: paint_cues(x, 0.5), TypeError, "cues must be an int"),
    (lambda x: paint_cues(x, 0, corners=4), ValueError, r"corners must lie in \[0, 3\]"),
    (lambda x: paint_cues(x.astype(float), 0), ValueError, "images must be uint8"),
    (lambda x: sample_cues([0, 1], 1.5, 7), ValueError, r"strength must be a cue strength"),
    (lambda x: sample_cues([0, 7], 0.5, 7), ValueError, r"labels must lie in \[0, 6\]"),
    (lambda x: sample_cues([0, 1], 0.5, 9), ValueError, "n_classes must be an int in 2..8"),
    (lambda x: misleading_cues([0, 1], 7, seed="a"), TypeError, "seed must be an int"),
    (lambda x: cue_region((48, 48), 4), ValueError, "corner must be 0..3"),
])
def test_bad_cue_arguments_are_rejected(call, error, match) -> None:
    images = np.zeros((4, 48, 48), np.uint8)
    with pytest.raises(error, match=match):
        call(images)


def test_with_cues_rejects_a_class_the_dataset_lacks() -> None:
    ds = generate("synth-wild", n_subjects=2, size=48, seed=0, per_subject=2)
    with pytest.raises(ValueError, match="cues must be -1 or a class of synth-wild"):
        with_cues(ds, 7)


# ----------------------------------------------------------------------------- blends

def test_blend_pairs_share_action_units() -> None:
    pairs = [frozenset(p) for p in BLEND_PAIRS]
    assert len(set(pairs)) == len(pairs) and all(len(p) == 2 for p in pairs)
    for a, b in BLEND_PAIRS:
        assert a in PROTOTYPES and b in PROTOTYPES
        shared = set(PROTOTYPES[a]) & set(PROTOTYPES[b])
        assert shared or "neutral" in (a, b), f"{a}-{b} share no action unit"
    # the confusions the FACS notes name
    for pair in (("fear", "surprise"), ("anger", "disgust"), ("anger", "sadness"),
                 ("neutral", "sadness"), ("contempt", "happiness")):
        assert frozenset(pair) in pairs
    assert set(PROTOTYPES["fear"]) & set(PROTOTYPES["surprise"]) >= {"AU1", "AU2", "AU5",
                                                                       "AU26"}


@pytest.mark.parametrize("classes", [EMOTIONS_7, EMOTIONS_8])
def test_every_class_has_blend_partners(classes) -> None:
    facs = blend_partners(classes, "facs")
    uniform = blend_partners(classes, "uniform")
    for emotion in classes:
        assert facs[emotion], f"{emotion} has no partner"
        assert "neutral" not in facs[emotion] and emotion not in facs[emotion]
        assert set(facs[emotion]) <= set(uniform[emotion])
        assert uniform[emotion] == tuple(c for c in classes if c not in ("neutral", emotion))
    assert facs["neutral"] == ("sadness",) and facs["surprise"] == ("happiness", "fear")


@pytest.mark.parametrize("preset", syn.PRESETS)
def test_structured_blends_pick_only_listed_partners(preset: str) -> None:
    args = dict(n_subjects=6, size=48, seed=4, blend_prob=1.0, **(
        {"per_subject": 40} if preset == "synth-wild" else {}))
    facs = generate(preset, blend_pairs="facs", **args)
    uniform = generate(preset, **args)
    pairs = {frozenset(p) for p in BLEND_PAIRS}
    clean = facs.meta.get("clean_label", facs.labels)
    blended = np.flatnonzero(np.sort(facs.mixtures, 1)[:, -2] > 0)
    assert len(blended) > len(facs) / 3
    seen = set()
    for i in blended:
        second = int(np.argsort(facs.mixtures[i])[-2])
        pair = frozenset((facs.classes[clean[i]], facs.classes[second]))
        assert pair in pairs, f"image {i} blends {sorted(pair)}"
        seen.add(pair)
    assert len(seen) >= 6
    off_pairs = sum(frozenset((uniform.classes[c], uniform.classes[int(np.argsort(m)[-2])]))
                    not in pairs for c, m in zip(clean[blended], uniform.mixtures[blended]))
    assert off_pairs > len(blended) / 3                      # uniform blends leave the table
    # same faces otherwise: primary emotions, their weights, and every unblended image
    np.testing.assert_array_equal(facs.labels, uniform.labels)
    np.testing.assert_allclose(facs.mixtures.max(1), uniform.mixtures.max(1))
    single = np.sort(facs.mixtures, 1)[:, -2] == 0
    np.testing.assert_array_equal(facs.images[single], uniform.images[single])


# ----------------------------------------------------------------------------- annotation

def test_labels_from_the_mixture_follow_its_weights() -> None:
    args = dict(n_subjects=20, size=48, seed=6, per_subject=50, blend_prob=1.0,
                blend_pairs="facs")
    drawn = generate("synth-wild", label_from_mixture=True, **args)
    truth = generate("synth-wild", label_noise=0.0, **args)
    clean = drawn.meta["clean_label"]
    np.testing.assert_array_equal(clean, truth.labels)
    np.testing.assert_array_equal(drawn.mixtures, truth.mixtures)       # the true mixture
    np.testing.assert_array_equal(drawn.images, truth.images)
    np.testing.assert_array_equal(clean, drawn.mixtures.argmax(1))
    rows = np.arange(len(drawn))
    assert np.all(drawn.mixtures[rows, drawn.labels] > 0)               # a visible emotion
    # frequency of the primary emotion against its weights, within a binomial tolerance
    p = drawn.mixtures[rows, clean].astype(float)
    kept = (drawn.labels == clean).sum()
    assert abs(kept - p.sum()) < 3.5 * np.sqrt((p * (1 - p)).sum())
    assert 0.05 < 1 - kept / len(drawn) < 0.4
    # and per second emotion
    for k in range(drawn.n_classes):
        q = np.where(clean != k, drawn.mixtures[:, k], 0).astype(float)
        if q.sum() > 20:
            hits = ((drawn.labels == k) & (clean != k)).sum()
            assert abs(hits - q.sum()) < 3.5 * np.sqrt((q * (1 - q)).sum()), drawn.classes[k]


def test_labels_from_the_mixture_replace_label_noise() -> None:
    unblended = generate("synth-wild", n_subjects=4, size=48, seed=0, blend_prob=0.0,
                         label_from_mixture=True)                      # label_noise 0.05 unused
    np.testing.assert_array_equal(unblended.labels, unblended.meta["clean_label"])
    lab = generate("synth-lab", n_subjects=3, size=48, seed=0, blend_prob=1.0,
                   label_from_mixture=True)
    plain = generate("synth-lab", n_subjects=3, size=48, seed=0, blend_prob=1.0)
    np.testing.assert_array_equal(lab.meta["clean_label"], plain.labels)
    assert (lab.labels != plain.labels).any()
    with pytest.raises(ValueError, match="label_noise out"):
        generate("synth-wild", n_subjects=2, size=48, label_from_mixture=True, label_noise=0.1)


# ----------------------------------------------------------------------------- motion

def test_motion_scales_landmark_motion_and_keeps_texture() -> None:
    args = dict(n_subjects=2, size=96, seed=1, pose=0.0)
    double, full, half, still = (generate("synth-lab", motion=m, **args)
                                 for m in (2.0, 1.0, 0.5, 0.0))
    rest = still.meta["frame"] == 0
    for s in np.unique(still.meta["sequence"]):
        frames = np.flatnonzero(still.meta["sequence"] == s)
        np.testing.assert_allclose(still.landmarks[frames], still.landmarks[frames[:1]].repeat(
            len(frames), 0), atol=1e-4)
    np.testing.assert_allclose(half.landmarks, (full.landmarks + still.landmarks) / 2, atol=1e-3)
    np.testing.assert_allclose(double.landmarks - still.landmarks,
                               2 * (full.landmarks - still.landmarks), atol=1e-3)
    np.testing.assert_array_equal(still.aus, full.aus)
    # texture remains: an angry peak differs from its neutral frame between the brows
    anger = np.flatnonzero((still.labels == still.classes.index("anger"))
                           & (still.meta["frame"] == still.meta["n_frames"] - 1))[0]
    first = np.flatnonzero((still.meta["sequence"] == still.meta["sequence"][anger])
                           & rest)[0]
    x0, x1 = still.landmarks[anger, [21, 22], 0].round().astype(int)
    y = int(still.landmarks[anger, 21, 1].round())
    region = np.s_[y - 8:y + 4, x0:x1 + 1]
    diff = np.abs(still.images[anger][region].astype(int) - still.images[first][region])
    assert diff.max() > 20


def test_motion_one_moves_the_farthest_point_three_to_eleven_percent_of_the_face() -> None:
    """The magnitudes the data chapter and chapter 3 state (clean peaks: no pose, jitter,
    blends or resting bias; 96 px)."""
    ds = generate("synth-lab", n_subjects=4, size=96, seed=2, pose=0.0, au_jitter=0.0,
                  blend_prob=0.0, resting_bias=0.0, intensity=(1.0, 1.0), frames="all")
    width = ds.landmarks[:, 16, 0] - ds.landmarks[:, 0, 0]
    seq, frame = ds.meta["sequence"], ds.meta["frame"]
    farthest, corners, jaw = {}, [], []
    for s in np.unique(seq):
        idx = np.flatnonzero(seq == s)
        rest, peak = idx[frame[idx].argmin()], idx[frame[idx].argmax()]
        moved = np.linalg.norm(ds.landmarks[peak] - ds.landmarks[rest], axis=1) / width[rest]
        emotion = ds.classes[ds.labels[peak]]
        farthest.setdefault(emotion, []).append(100 * moved.max())
        if emotion == "happiness":
            corners.append(100 * moved[[48, 54]].mean())
        if emotion == "surprise":
            jaw.append(100 * moved[8])
    means = {e: np.mean(v) for e, v in farthest.items()}
    assert 3 <= min(means.values()) and max(means.values()) <= 11, means
    assert np.mean(corners) == pytest.approx(6, abs=1) and np.mean(jaw) == pytest.approx(10, abs=1)


@pytest.mark.parametrize("knobs, error, match", [
    (dict(distractor=1.5), ValueError, "knob 'distractor' must be a cue strength in"),
    (dict(distractor="high"), TypeError, "knob 'distractor'"),
    (dict(distractor=True), TypeError, "knob 'distractor'"),
    (dict(blend_pairs="random"), ValueError, r"knob 'blend_pairs' must be one of \['uniform'"),
    (dict(label_from_mixture=1), TypeError, "knob 'label_from_mixture' must be True or False"),
    (dict(label_from_mixture=True, label_noise=0.05), ValueError, "label_from_mixture=True"),
    (dict(motion=-0.1), ValueError, r"knob 'motion' must be a scale in \[0, 3\]"),
    (dict(motion=syn.MOTION_MAX + 0.5), ValueError, "knob 'motion'"),
    (dict(motion=None), TypeError, "knob 'motion'"),
])
def test_bad_knob_values_are_rejected(knobs, error, match) -> None:
    for preset in syn.PRESETS:
        with pytest.raises(error, match=match):
            generate(preset, n_subjects=2, size=48, **knobs)


# ----------------------------------------------------------------------------- loaders

def test_loaders_pass_the_knobs(tmp_path) -> None:
    ds = datasets.load_dataset("synth-wild", root=tmp_path, n_subjects=2, size=48,
                               per_subject=3, distractor=1.0, motion=0.5)
    np.testing.assert_array_equal(ds.meta["cue"], ds.labels)
    chapter = datasets.chapter_dataset("synth-lab", size=48, n_subjects=2, cache_dir=tmp_path,
                                       label_from_mixture=True, blend_pairs="facs")
    assert "clean_label" in chapter.meta
    with pytest.raises(ValueError, match="apply to the synthetic presets"):
        datasets.chapter_dataset("ckplus", str(tmp_path), size=48, distractor=0.5)
