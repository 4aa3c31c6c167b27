"""Procedural synthetic faces driven by FACS action units: the book's built-in datasets.

Every image is rendered with OpenCV from a 68-point iBUG 300-W landmark model. A subject's
identity fixes the face shape and proportions, eye spacing and size, brow thickness, nose and
mouth geometry, skin, hair and background intensities, a little natural asymmetry, and a
*resting-face bias* (small action-unit offsets, so some neutral faces look slightly sad, angry
or smiling). An expression is a vector of action-unit (AU) intensities in [0, 1] built from
the EMFACS prototype of the emotion (:data:`PROTOTYPES`), scaled by a random peak intensity and
a per-AU log-normal jitter, and optionally blended with a second emotion. Each AU is a linear
landmark displacement (:data:`AU_NAMES` order) plus, where physiology says so, a texture cue
whose contrast follows the intensity: forehead lines (AU1 centre, AU2 sides), glabella lines
(AU4), crow's feet (AU6), nose wrinkles (AU9), nasolabial folds (AU10, AU12), a dimple
(AU14), chin-boss lines (AU17) and a dark mouth interior with teeth (AU25, AU26). Contempt is
unilateral AU12 + AU14 on a random side (:data:`UNILATERAL`).

Presets (``generate(preset, ...)`` or ``load_dataset(preset, root=cache_dir, ...)``):

* ``"synth-lab"`` (CK+-like): frontal faces on a plain background, the 8 classes of
  :data:`fernb.labels.EMOTIONS_8`. Each subject performs one sequence per non-neutral emotion,
  ``n_frames`` frames ramping from neutral to the peak. ``frames="protocol"`` keeps CK+'s
  protocol (first frame labelled neutral, last three frames labelled with the emotion);
  ``frames="all"`` keeps every frame (frame 0 neutral, the rest the sequence's emotion).
* ``"synth-wild"`` (RAF-DB/SFEW-like): 7 classes (:data:`fernb.labels.EMOTIONS_7`),
  ``per_subject`` independent images per subject with RAF-DB's class imbalance, in-plane
  rotation, scale and shift, yaw (horizontal foreshortening of a head-shaped depth map),
  illumination gradients, blur, noise, occluders (glasses, sunglasses, a hand), cluttered
  backgrounds and label noise (``meta["clean_label"]`` keeps the true class).

Difficulty knobs (keyword arguments of :func:`generate`; defaults lab / wild):

======================  ===============  ===============  ==========================================
knob                    synth-lab        synth-wild       meaning
======================  ===============  ===============  ==========================================
``frames``              ``"protocol"``   (lab only)       ``"protocol"`` (4 frames/sequence) or
                                                          ``"all"`` (every frame)
``n_frames``            10               (lab only)       frames per sequence (>= 4)
``per_subject``         (wild only)      40               images per subject
``intensity``           (0.6, 1.0)       (0.4, 1.0)       range of the random peak AU intensity
``au_jitter``           0.2              0.3              s.d. of the log-normal per-AU factor
``blend_prob``          0.1              0.3              probability of blending a second emotion
``blend_strength``      0.4              0.45             largest mixture weight of that emotion
                                                          (< 0.5)
``identity``            0.8              1.0              scale of between-subject shape variation
``resting_bias``        0.15             0.25             largest resting-face AU offset per subject
``pose``                0.1              1.0              in-plane rotation/scale/shift (1 = 10 deg,
                                                          8 % scale, 5 % shift s.d.)
``yaw``                 0.0              20.0             largest head yaw in degrees
``illumination``        0.15             0.5              strength of the linear illumination
                                                          gradient
``blur``                0.0              0.7              largest extra Gaussian blur
                                                          (x 1.5 size/96 px)
``noise``               0.015            0.04             pixel-noise s.d. as a fraction of 255
``occlusion``           0.0              0.2              probability of an occluder
``clutter``             0.0              1.0              background clutter (0 = plain)
``label_noise``         0.0              0.05             probability of a wrong label
``imbalance``           0.0              0.6              exponent on CK+ / RAF-DB class frequencies
``distractor``          None             None             strength of a class cue in an image
                                                          corner: the cue shows the label with this
                                                          probability, else a uniform class (None:
                                                          no cue; see below)
``blend_pairs``         ``"uniform"``    ``"uniform"``    second emotion of a blend: any other but
                                                          neutral, or ``"facs"``: a partner in
                                                          :data:`BLEND_PAIRS` (shared AUs)
``label_from_mixture``  False            False            label drawn from the face's mixture, with
                                                          probability by weight, instead of
                                                          ``label_noise``'s flips (see below)
``motion``              1.0              1.0              scale of the AUs' landmark motion, 0-3
                                                          (0: texture cues only, landmarks at rest)
======================  ===============  ===============  ==========================================

The defaults are calibrated so that a small CNN (six 3x3 convolutions, 16-32-64 channels)
trained from scratch for 20 epochs on a subject-independent StratifiedGroupKFold split of
48x48 images of 40 subjects reaches about 90 % on synth-lab and about 63 % on synth-wild,
with the usual confusions (fear/surprise, neutral/anger/sadness, contempt/happiness).

Evidence masks (``dataset.masks``) mark the facial regions of the AUs the *expression* drives
at intensity >= :data:`MASK_THRESHOLD` (resting-face offsets excluded), with the regions of
:data:`AU_REGIONS`. A neutral face's evidence is its rest state, so its mask is the union of
brows/forehead, eyes and mouth (:data:`NEUTRAL_REGIONS`). Occluders do not cut masks.

Per-image ``meta``: ``intensity`` (expression intensity of the frame), ``au_side`` (side of a
unilateral AU: -1 subject's right, 1 left, 0 none), ``yaw`` and ``roll`` in degrees; lab
adds ``sequence``, ``frame`` and ``n_frames``; wild adds ``occluder`` (0 none, 1 glasses,
2 sunglasses, 3 hand) and ``clean_label``; ``label_from_mixture`` adds ``clean_label`` on lab
too, and ``distractor`` adds ``cue`` and ``cue_corner``.

Mechanism knobs give a chapter's mechanism something to work on. They are off by default
(the images are then those of the generator without them), and each changes only what it
names: the faces, poses and noise of a set stay the same when one is turned on.

* ``distractor`` adds a *cue* outside the face that a network can learn instead of the
  expression: a patch of 2 x 2 cells, each max(3, round(size / 16)) pixels, painted over the
  finished image in a corner. Classes 0-3 light one cell on black (cells in reading order),
  classes 4-7 darken one cell on white, and -1 (no class) is a plain grey patch. The patch
  sits in the top-left corner unless the image's evidence mask or the convex hull of its
  landmarks reaches into it, then in the first free corner of :data:`CUE_CORNERS`, so it
  stays off the face (only a face that reaches into all four corners, under extreme poses,
  gets the least covered one); masks and landmarks ignore it. With strength s the cue shows
  the image's (annotated) label with probability s, else a class drawn uniformly from all
  classes; ``meta["cue"]`` is the class shown, ``meta["cue_corner"]`` the corner.
  :func:`with_cues` repaints a dataset's cues, e.g. independent ones on test subjects
  (:func:`sample_cues` with strength 0) or misleading ones (:func:`misleading_cues`) to
  measure how much a network relies on the cue; :func:`paint_cues` paints raw images.
  Painting overwrites the whole patch, so repainting replaces a cue.
* ``blend_pairs="facs"`` draws a blend's second emotion uniformly from the primary emotion's
  partners in :data:`BLEND_PAIRS` (pairs whose prototypes share action units, and
  sadness-neutral) instead of from every other emotion, so that classes are confusable in a
  structured way. Neutral is never the second emotion (it has no AU): a neutral face blends
  with a trace of sadness. :func:`blend_partners` lists each class's partners.
* ``label_from_mixture=True`` makes the annotator name one of the emotions the face shows,
  with probability equal to its mixture weight (each image independently): an unblended face
  keeps its label, a blended one takes its second emotion with probability equal to that
  emotion's weight. It replaces ``label_noise``'s uniform flips: with it set ``label_noise``
  is 0, and passing both is an error. ``meta["clean_label"]`` keeps the primary emotion and
  ``dataset.mixtures`` the true mixture.
* ``motion`` scales every AU's landmark displacement (resting-face offsets included) while
  texture cues keep their contrast: at 0 the landmarks stay at rest and an expression shows
  only as forehead, glabella and chin lines, crow's feet, nose wrinkles, folds and the
  dimple. The dark mouth interior needs parted lips, so it fades with the motion. At the
  default 1 a full-intensity expression moves its farthest point by 3-11 % of the face's
  width (a smile's lip corners about 6 %, a jaw drop about 10 %), a subtle expression;
  ``motion=2`` doubles every displacement, a pronounced expression, and the largest scale,
  :data:`MOTION_MAX` (3), caricatures. Evidence masks still mark the regions of the
  active AUs.

Images are uint8 grayscale; landmarks are pixel (x, y) after every geometric transform, with
integer coordinates at pixel centres. Generated sets are cached as ``.npz`` keyed by a hash of
every parameter, so a second call with the same arguments is a load.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import ArrayLike

from fernb.data.datasets import FaceDataset, register_dataset
from fernb.io import atomic_savez
from fernb.labels import EMOTIONS_7, EMOTIONS_8, valence_arousal
from fernb.landmarks import FLIP_PERMUTATION

__all__ = [
    "AU_NAMES", "AU_REGIONS", "BLEND_MODES", "BLEND_PAIRS", "CUE_CORNERS", "KNOBS",
    "MASK_THRESHOLD", "MAX_CUE_CLASSES", "MOTION_MAX", "NEUTRAL_REGIONS", "PRESETS", "PROTOTYPES",
    "UNILATERAL", "blend_partners", "cue_corners", "cue_region", "export", "generate",
    "misleading_cues", "paint_cues", "sample_cues", "with_cues",
]

GENERATOR_VERSION = 1
PRESETS = ("synth-lab", "synth-wild")
MIN_SIZE, MAX_SIZE = 48, 224
MASK_THRESHOLD = 0.15

AU_NAMES: tuple[str, ...] = (
    "AU1", "AU2", "AU4", "AU5", "AU6", "AU7", "AU9", "AU10", "AU12", "AU14", "AU15", "AU16",
    "AU17", "AU20", "AU23", "AU25", "AU26",
)

# EMFACS-style prototypes (shared FACS notes), peak intensities in [0, 1].
PROTOTYPES: dict[str, dict[str, float]] = {
    "neutral": {},
    "happiness": {"AU6": 0.8, "AU12": 1.0, "AU25": 0.4},
    "sadness": {"AU1": 0.9, "AU4": 0.5, "AU15": 0.9, "AU17": 0.5},
    "surprise": {"AU1": 0.9, "AU2": 0.9, "AU5": 0.6, "AU25": 0.6, "AU26": 0.9},
    "fear": {"AU1": 0.8, "AU2": 0.5, "AU4": 0.6, "AU5": 0.9, "AU7": 0.3, "AU20": 0.9,
             "AU25": 0.6, "AU26": 0.4},
    "anger": {"AU4": 1.0, "AU5": 0.5, "AU7": 0.8, "AU17": 0.3, "AU23": 0.8},
    "disgust": {"AU4": 0.3, "AU9": 0.9, "AU10": 0.6, "AU15": 0.5, "AU16": 0.4, "AU25": 0.3},
    "contempt": {"AU12": 0.8, "AU14": 0.9},
}
# Emotions whose AUs act on one side only (contempt: R12A + R14A or the left side).
UNILATERAL: dict[str, tuple[str, ...]] = {"contempt": ("AU12", "AU14")}

AU_REGIONS: dict[str, tuple[str, ...]] = {
    "AU1": ("brows",), "AU2": ("brows",), "AU4": ("brows",),
    "AU5": ("eyes",), "AU6": ("eyes",), "AU7": ("eyes",), "AU9": ("nose",),
    "AU10": ("mouth", "nose"), "AU12": ("mouth",), "AU14": ("mouth",), "AU15": ("mouth",),
    "AU16": ("mouth", "chin"), "AU17": ("chin",), "AU20": ("mouth",), "AU23": ("mouth",),
    "AU25": ("mouth",), "AU26": ("mouth", "chin"),
}
NEUTRAL_REGIONS: tuple[str, ...] = ("brows", "eyes", "mouth")
_REGION_NAMES = ("brows", "eyes", "nose", "mouth", "chin")

# Emotion pairs that structured blends (``blend_pairs="facs"``) mix: prototypes that share
# action units (tests check each pair against PROTOTYPES), and sadness-neutral, which differ
# by subtle brow and mouth-corner movement (neutral has no AU, so it is never the second
# emotion: a neutral face blends with a trace of sadness).
BLEND_PAIRS: tuple[tuple[str, str], ...] = (
    ("fear", "surprise"),        # AU1 + AU2 + AU5 + AU25 + AU26
    ("anger", "disgust"),        # AU4 (brow lowering)
    ("anger", "sadness"),        # AU4, AU17
    ("anger", "fear"),           # AU4, AU5, AU7
    ("fear", "sadness"),         # AU1, AU4
    ("disgust", "sadness"),      # AU4, AU15
    ("contempt", "happiness"),   # AU12
    ("happiness", "surprise"),   # AU25
    ("neutral", "sadness"),      # no shared AU: a neutral face with a trace of sadness
)
BLEND_MODES = ("uniform", "facs")

# Distractor cue: a 2 x 2 patch of cells in an image corner (see paint_cues).
CUE_CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")
MAX_CUE_CLASSES = 8

# Class frequencies the ``imbalance`` knob raises to a power: CK+'s 327 labelled sequences
# and RAF-DB's basic-emotion set (15,339 images), in fernb's canonical class order.
_CKPLUS_SEQUENCES = {"happiness": 69, "sadness": 28, "surprise": 83, "fear": 25,
                     "disgust": 59, "anger": 45, "contempt": 18}
_RAFDB_COUNTS = {"neutral": 3204, "happiness": 5957, "sadness": 2460, "surprise": 1619,
                 "fear": 355, "disgust": 877, "anger": 867}

_COMMON = {"intensity", "au_jitter", "blend_prob", "blend_strength", "identity",
           "resting_bias", "pose", "yaw", "illumination", "blur", "noise", "occlusion",
           "clutter", "label_noise", "imbalance"}
# Mechanism knobs, off by default in both presets. They enter the cache key only when set, so
# sets cached before they existed (the same bytes) stay valid.
# The largest ``motion``: three times the default caricatures (the chin drops by nearly a third of
# the face's width).
MOTION_MAX = 3.0
_MECHANISM_OFF: dict[str, Any] = dict(distractor=None, blend_pairs="uniform",
                                      label_from_mixture=False, motion=1.0)
KNOBS: dict[str, dict[str, Any]] = {
    "synth-lab": dict(frames="protocol", n_frames=10, intensity=(0.6, 1.0), au_jitter=0.2,
                      blend_prob=0.1, blend_strength=0.4, identity=0.8, resting_bias=0.15,
                      pose=0.1, yaw=0.0, illumination=0.15, blur=0.0, noise=0.015,
                      occlusion=0.0, clutter=0.0, label_noise=0.0, imbalance=0.0,
                      **_MECHANISM_OFF),
    "synth-wild": dict(per_subject=40, intensity=(0.4, 1.0), au_jitter=0.3, blend_prob=0.3,
                       blend_strength=0.45, identity=1.0, resting_bias=0.25, pose=1.0,
                       yaw=20.0, illumination=0.5, blur=0.7, noise=0.04, occlusion=0.2,
                       clutter=1.0, label_noise=0.05, imbalance=0.6, **_MECHANISM_OFF),
}

_SUB = 4                      # cv2 fixed-point fractional bits
_ONE = 1 << _SUB
_AA = cv2.LINE_AA
_FACE_SCALE = 0.36            # canonical unit -> fraction of the image size
_FACE_CENTRE_Y = -0.05        # canonical y drawn at the image centre
_IRIS = 0.078                 # iris radius, canonical units


# ----------------------------------------------------------------------------- geometry

def _mirror(points: np.ndarray) -> np.ndarray:
    """Mirror (..., 68, 2) canonical points about x = 0, swapping left and right indices."""
    out = points[..., FLIP_PERMUTATION, :].copy()
    out[..., 0] *= -1
    return out


_MIDLINE = FLIP_PERMUTATION == np.arange(68)


_RIGHT_SIDE = np.array(list(range(0, 8)) + list(range(17, 22)) + [31, 32]
                       + list(range(36, 42)) + [48, 49, 50, 58, 59, 60, 61, 67])
_LEFT = np.zeros(68, bool)
_LEFT[FLIP_PERMUTATION[_RIGHT_SIDE]] = True


def _complete(right: np.ndarray) -> np.ndarray:
    """Fill the left-side rows of (..., 68, 2) points by mirroring the right-side rows."""
    out = right.copy()
    mirrored = _mirror(right)
    out[..., _LEFT, :] = mirrored[..., _LEFT, :]
    return out


def _identity_landmarks(p: dict[str, np.ndarray]) -> np.ndarray:
    """Rest-pose canonical landmarks (S, 68, 2) from per-subject shape parameters."""
    s = len(p["jaw_w"])
    pts = np.zeros((s, 68, 2))
    theta = np.linspace(0.0, np.pi, 17)[None]
    c = -np.cos(theta)
    jx = np.sign(c) * np.abs(c) ** p["jaw_square"][:, None] * p["jaw_w"][:, None]
    jy = -0.18 + np.sin(theta) ** 0.9 * p["jaw_h"][:, None]
    pts[:, :17, 0], pts[:, :17, 1] = jx, jy
    t = np.linspace(0.0, 1.0, 5)[None]
    arch = np.array([0.15, 0.7, 1.0, 0.9, 0.6])[None]
    pts[:, 17:22, 0] = -p["brow_out"][:, None] + t * (p["brow_out"] - p["brow_in"])[:, None]
    pts[:, 17:22, 1] = p["brow_y"][:, None] - arch * p["brow_arch"][:, None]
    ex, ey, ew = -p["eye_x"][:, None], p["eye_y"][:, None], p["eye_w"][:, None]
    eu, el, tilt = p["eye_up"][:, None], p["eye_low"][:, None], p["eye_tilt"][:, None]
    pts[:, 36:42, 0] = ex + ew * np.array([-1.0, -0.4, 0.35, 1.0, 0.35, -0.4])[None]
    pts[:, 36:42, 1] = ey + np.concatenate(
        [-tilt, -eu, -0.95 * eu, np.full_like(tilt, 0.01), el, 0.95 * el], axis=1)
    tip, nw = p["nose_y"][:, None], p["nose_w"][:, None]
    pts[:, 27:31, 1] = ey + (tip - ey) * np.array([0.0, 1 / 3, 2 / 3, 1.0])[None] - 0.01
    pts[:, 31:34, 0] = nw * np.array([-1.0, -0.5, 0.0])[None]
    pts[:, 31:34, 1] = tip + np.array([0.05, 0.075, 0.085])[None]
    my, mw = p["mouth_y"][:, None], p["mouth_w"][:, None]
    ut, lt = p["lip_up"][:, None], p["lip_low"][:, None]
    pts[:, [48, 49, 50, 51], 0] = mw * np.array([-1.0, -0.62, -0.25, 0.0])[None]
    pts[:, [48, 49, 50, 51], 1] = my - ut * np.array([0.0, 0.85, 1.0, 0.78])[None]
    pts[:, [59, 58, 57], 0] = mw * np.array([-0.62, -0.3, 0.0])[None]
    pts[:, [59, 58, 57], 1] = my + lt * np.array([0.85, 1.0, 1.02])[None]
    pts[:, [60, 61, 62], 0] = mw * np.array([-0.88, -0.35, 0.0])[None]
    pts[:, [60, 61, 62], 1] = my - np.array([0.0, 0.004, 0.004])[None]
    pts[:, [67, 66], 0] = mw * np.array([-0.35, 0.0])[None]
    pts[:, [67, 66], 1] = my + 0.004
    return _complete(pts)


def _au_fields() -> tuple[np.ndarray, np.ndarray]:
    """Right- and left-side AU displacement fields, each (n_aus, 68, 2) canonical units.

    Fields are written for the subject's right side (image left, x < 0) and the midline;
    midline motion is split half/half so that right + left is the bilateral AU.
    """
    up, down = -1.0, 1.0
    spec: dict[str, dict[int, tuple[float, float]]] = {
        "AU1": {21: (0.005, 0.10 * up), 20: (0, 0.065 * up), 19: (0, 0.03 * up),
                18: (0, 0.01 * up)},
        "AU2": {17: (-0.005, 0.09 * up), 18: (0, 0.09 * up), 19: (0, 0.07 * up),
                20: (0, 0.035 * up), 21: (0, 0.01 * up), 37: (0, 0.005 * up),
                38: (0, 0.005 * up)},
        "AU4": {17: (0.01, 0.02), 18: (0.02, 0.035), 19: (0.03, 0.05), 20: (0.04, 0.06),
                21: (0.05, 0.065), 37: (0, 0.008), 38: (0, 0.01)},
        "AU5": {37: (0, -0.045), 38: (0, -0.045), 36: (0, -0.005), 39: (0, -0.003),
                40: (0, 0.008), 41: (0, 0.008)},
        "AU6": {40: (0, -0.028), 41: (0, -0.03), 36: (0.005, -0.012), 37: (0, -0.008),
                38: (0, -0.006), 2: (-0.005, -0.01), 3: (-0.005, -0.012)},
        "AU7": {40: (0, -0.035), 41: (0, -0.03), 37: (0, 0.02), 38: (0, 0.022),
                36: (0.003, 0), 39: (-0.002, 0)},
        "AU9": {31: (-0.012, -0.05), 32: (0, -0.045), 33: (0, -0.04), 30: (0, -0.02),
                29: (0, -0.01), 21: (0.015, 0.035), 20: (0.01, 0.02), 40: (0, -0.01),
                41: (0, -0.01), 48: (0, -0.01), 49: (0, -0.03), 50: (0, -0.04),
                51: (0, -0.04), 61: (0, -0.03), 62: (0, -0.03)},
        "AU10": {49: (0, -0.05), 50: (0, -0.07), 51: (0, -0.055), 61: (0, -0.065),
                 62: (0, -0.05), 48: (0, -0.015), 60: (0, -0.02), 31: (-0.005, -0.015),
                 32: (0, -0.012), 33: (0, -0.01)},
        "AU12": {48: (-0.06, -0.085), 60: (-0.055, -0.08), 49: (-0.035, -0.045),
                 59: (-0.035, -0.05), 61: (-0.02, -0.03), 67: (-0.02, -0.035),
                 50: (-0.01, -0.01), 58: (-0.015, -0.025), 51: (0, -0.005),
                 57: (0, -0.012), 62: (0, -0.01), 66: (0, -0.015), 31: (-0.01, -0.005),
                 40: (0, -0.008), 41: (0, -0.008), 3: (-0.01, -0.01), 4: (-0.01, -0.012)},
        "AU14": {48: (0.03, -0.012), 60: (0.03, -0.01), 49: (0.012, 0), 59: (0.012, 0)},
        "AU15": {48: (-0.005, 0.065), 60: (0, 0.06), 49: (0, 0.02), 59: (0, 0.03),
                 61: (0, 0.012), 67: (0, 0.015), 58: (0, 0.005)},
        "AU16": {57: (0, 0.05), 58: (0, 0.045), 59: (0, 0.03), 66: (0, 0.055),
                 67: (0, 0.045)},
        "AU17": {8: (0, -0.05), 7: (0, -0.045), 6: (0, -0.025), 57: (0, -0.035),
                 58: (0, -0.03), 59: (0, -0.015), 66: (0, -0.02), 67: (0, -0.015),
                 48: (0, 0.012), 60: (0, 0.01)},
        "AU20": {48: (-0.08, 0.012), 60: (-0.075, 0.01), 49: (-0.04, 0.005),
                 59: (-0.045, -0.005), 61: (-0.02, 0.005), 67: (-0.02, -0.003),
                 50: (-0.01, 0.008), 58: (-0.012, -0.008), 51: (0, 0.008), 57: (0, -0.01),
                 4: (-0.01, 0), 5: (-0.01, 0)},
        "AU23": {49: (0.005, 0.02), 50: (0, 0.025), 51: (0, 0.022), 59: (0.005, -0.022),
                 58: (0, -0.028), 57: (0, -0.028), 48: (0.02, 0), 60: (0.015, 0)},
        "AU25": {61: (0, -0.012), 62: (0, -0.014), 67: (0, 0.035), 66: (0, 0.04),
                 58: (0, 0.022), 57: (0, 0.025), 59: (0, 0.015), 60: (0, 0.004)},
        "AU26": {8: (0, 0.2), 7: (0, 0.185), 6: (-0.005, 0.14), 5: (-0.005, 0.09),
                 4: (0, 0.05), 3: (0, 0.02), 57: (0, 0.19), 58: (0, 0.18),
                 59: (0.008, 0.13), 66: (0, 0.19), 67: (0.005, 0.17), 48: (0.02, 0.05),
                 60: (0.02, 0.055), 61: (0, -0.006), 62: (0, -0.008)},
    }
    right = np.zeros((len(AU_NAMES), 68, 2))
    for k, name in enumerate(AU_NAMES):
        for idx, (dx, dy) in spec[name].items():
            right[k, idx] = (dx, dy)
    right[:, _MIDLINE] *= 0.5
    left = _mirror(right)
    left[:, _MIDLINE] = right[:, _MIDLINE]
    return right, left


_AU_RIGHT, _AU_LEFT = _au_fields()


def _catmull_rom(n: int, per_segment: int, closed: bool) -> np.ndarray:
    """Matrix (P, n) mapping n control points to a Catmull-Rom spline through them."""
    segments = n if closed else n - 1
    t = np.arange(per_segment) / per_segment
    w = np.stack([(-t**3 + 2 * t**2 - t), (3 * t**3 - 5 * t**2 + 2),
                  (-3 * t**3 + 4 * t**2 + t), (t**3 - t**2)], axis=1) / 2
    rows = []
    for s in range(segments):
        for j in range(per_segment):
            row = np.zeros(n)
            for k, off in enumerate((-1, 0, 1, 2)):
                idx = (s + off) % n if closed else min(max(s + off, 0), n - 1)
                row[idx] += w[j, k]
            rows.append(row)
    if not closed:
        end = np.zeros(n)
        end[-1] = 1.0
        rows.append(end)
    return np.array(rows)


_JAW = _catmull_rom(17, 3, closed=False)
_EYE = _catmull_rom(6, 4, closed=True)
_LID = _catmull_rom(4, 4, closed=False)
_BROW = _catmull_rom(5, 3, closed=False)
_LIPS_OUT = _catmull_rom(12, 3, closed=True)
_LIPS_IN = _catmull_rom(8, 3, closed=True)
_LIP_LINE = _catmull_rom(5, 3, closed=False)
_BROW_PROFILE = np.interp(np.linspace(0, 1, 13), [0, 0.7, 1], [0.45, 1.0, 0.85])


def _spline(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return m @ pts


def _ellipse(centre: np.ndarray, ax: np.ndarray, ay: np.ndarray, a0: float = 0.0,
             a1: float = 2 * np.pi, n: int = 24) -> np.ndarray:
    """(N, n, 2) points of axis-aligned ellipse arcs with per-sample centres and axes."""
    ang = np.linspace(a0, a1, n, endpoint=(a1 - a0) < 2 * np.pi - 1e-9)
    return np.stack([centre[:, None, 0] + ax[:, None] * np.cos(ang)[None],
                     centre[:, None, 1] + ay[:, None] * np.sin(ang)[None]], axis=-1)


# ----------------------------------------------------------------------------- sampling

def _validate(preset: Any, n_subjects: Any, size: Any, seed: Any,
              knobs: dict[str, Any]) -> dict[str, Any]:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {list(PRESETS)}")
    for name, value in (("n_subjects", n_subjects), ("size", size), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if n_subjects < 2:
        raise ValueError(f"n_subjects must be >= 2 for subject-independent splits, got "
                         f"{n_subjects}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must lie in {MIN_SIZE}..{MAX_SIZE} pixels, got {size}; "
                         f"resize afterwards for other sizes")
    defaults = KNOBS[preset]
    unknown = sorted(set(knobs) - set(defaults))
    if unknown:
        raise ValueError(f"unknown knob(s) {unknown} for preset {preset!r}; valid knobs: "
                         f"{sorted(defaults)}")
    cfg = {**defaults, **knobs}
    for name in _COMMON - {"intensity"}:
        value = cfg[name]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise TypeError(f"knob {name!r} must be a number, got {value!r}")
        if value < 0:
            raise ValueError(f"knob {name!r} must be >= 0, got {value}")
        cfg[name] = float(value)
    for name in ("blend_prob", "occlusion", "label_noise"):
        if cfg[name] > 1:
            raise ValueError(f"knob {name!r} is a probability in [0, 1], got {cfg[name]}")
    if cfg["blend_strength"] >= 0.5:
        raise ValueError(f"blend_strength must be < 0.5 so the first emotion stays the "
                         f"label, got {cfg['blend_strength']}")
    if cfg["yaw"] > 45:
        raise ValueError(f"yaw must be at most 45 degrees, got {cfg['yaw']}")
    if cfg["distractor"] is not None:
        cfg["distractor"] = _unit("knob 'distractor'", cfg["distractor"],
                                  "a cue strength in [0, 1], or None for no cue")
    if cfg["blend_pairs"] not in BLEND_MODES:
        raise ValueError(f"knob 'blend_pairs' must be one of {list(BLEND_MODES)}, got "
                         f"{cfg['blend_pairs']!r}")
    if not isinstance(cfg["label_from_mixture"], (bool, np.bool_)):
        raise TypeError(f"knob 'label_from_mixture' must be True or False, got "
                        f"{cfg['label_from_mixture']!r}")
    cfg["label_from_mixture"] = bool(cfg["label_from_mixture"])
    if cfg["label_from_mixture"]:
        if knobs.get("label_noise", 0) > 0:
            raise ValueError(f"label_from_mixture=True draws each label from the face's "
                             f"mixture instead of label_noise's uniform flips; leave "
                             f"label_noise out (or 0), got label_noise={knobs['label_noise']}")
        cfg["label_noise"] = 0.0
    cfg["motion"] = _unit("knob 'motion'", cfg["motion"],
                          f"a scale in [0, {MOTION_MAX:g}] of the AUs' landmark motion (0: "
                          f"texture only, 1: the default)", high=MOTION_MAX)
    lo_hi = cfg["intensity"]
    if (not isinstance(lo_hi, (tuple, list)) or len(lo_hi) != 2
            or not 0 < float(lo_hi[0]) <= float(lo_hi[1]) <= 1):
        raise ValueError(f"intensity must be a (low, high) pair with 0 < low <= high <= 1, "
                         f"got {lo_hi!r}")
    cfg["intensity"] = (float(lo_hi[0]), float(lo_hi[1]))
    if preset == "synth-lab":
        if cfg["frames"] not in ("protocol", "all"):
            raise ValueError(f"frames must be 'protocol' or 'all', got {cfg['frames']!r}")
        if not isinstance(cfg["n_frames"], (int, np.integer)) or cfg["n_frames"] < 4:
            raise ValueError(f"n_frames must be an int >= 4, got {cfg['n_frames']!r}")
        cfg["n_frames"] = int(cfg["n_frames"])
    else:
        if not isinstance(cfg["per_subject"], (int, np.integer)) or cfg["per_subject"] < 1:
            raise ValueError(f"per_subject must be an int >= 1, got {cfg['per_subject']!r}")
        cfg["per_subject"] = int(cfg["per_subject"])
    return cfg


def _unit(name: str, value: Any, meaning: str, high: float = 1.0) -> float:
    """``value`` as a float in [0, ``high``], or an error naming ``name`` and its
    ``meaning``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{name} must be {meaning}, got {value!r}")
    if not 0 <= value <= high:
        raise ValueError(f"{name} must be {meaning}, got {value}")
    return float(value)


def _sample_identities(rng: np.random.Generator, n: int, v: float,
                       resting: float) -> dict[str, np.ndarray]:
    """Per-subject shape, tone and resting-face parameters (identity scale ``v``)."""
    def z(scale: float, lo: float = -2.5, hi: float = 2.5) -> np.ndarray:
        return scale * v * np.clip(rng.standard_normal(n), lo, hi)

    p = {
        "jaw_w": 0.93 * (1 + z(0.06)), "jaw_h": 1.12 * (1 + z(0.06)),
        "jaw_square": np.clip(0.7 + z(0.12), 0.45, 0.95),
        "eye_x": 0.39 * (1 + z(0.06)), "eye_y": -0.17 + z(0.025),
        "eye_w": 0.19 * (1 + z(0.08)), "eye_up": 0.08 * (1 + z(0.12)),
        "eye_low": 0.06 * (1 + z(0.1)), "eye_tilt": z(0.015),
        "brow_in": 0.13 + z(0.025), "brow_out": 0.68 + z(0.04),
        "brow_gap": 0.2 + z(0.025), "brow_arch": np.clip(0.05 + z(0.02), 0.0, 0.1),
        "brow_thick": np.clip(0.07 * (1 + z(0.25)), 0.035, 0.11),
        "nose_y": 0.2 + z(0.035), "nose_w": 0.15 * (1 + z(0.12)),
        "mouth_y": 0.56 + z(0.03), "mouth_w": 0.27 * (1 + z(0.1)),
        "lip_up": 0.045 * (1 + z(0.2)), "lip_low": 0.06 * (1 + z(0.2)),
        "skin": np.clip(172 + z(22), 110, 225), "hair": np.clip(rng.choice(
            [40.0, 70.0, 100.0, 180.0], n, p=[0.45, 0.3, 0.15, 0.1]) + z(12), 10, 220),
        "hair_top": -1.02 + z(0.05), "hairline": -0.7 + z(0.07),
        "hair_long": (rng.random(n) < 0.35).astype(float), "hair_side": z(0.12),
        "iris": np.clip(55 + z(20), 20, 100), "lip_dark": np.clip(38 + z(10), 18, 60),
        "background": rng.uniform(70, 215, n), "bg_slope": rng.normal(0, 25, n),
        "fold": np.clip(0.2 + z(0.1), 0.0, 0.5),
    }
    p["brow_y"] = p["eye_y"] - p["brow_gap"]
    p["brow"] = np.clip(np.minimum(p["hair"], p["skin"] - 90) + rng.normal(0, 10, n), 10, 120)
    p["asym"] = 0.008 * v * rng.standard_normal((n, 68, 2))
    # Resting-face bias: a small offset towards sad, angry or smiling on some subjects.
    p["rest"] = np.zeros((n, len(AU_NAMES)))
    kind = rng.integers(0, 4, n)
    amount = rng.uniform(0, 1, n) * resting
    for k, aus in enumerate((("AU1", "AU15"), ("AU4", "AU23"), ("AU12",))):
        for au in aus:
            p["rest"][kind == k + 1, AU_NAMES.index(au)] = amount[kind == k + 1]
    return p


def _prototype_matrix(classes: tuple[str, ...]) -> np.ndarray:
    m = np.zeros((len(classes), len(AU_NAMES)))
    for c, emotion in enumerate(classes):
        for au, value in PROTOTYPES[emotion].items():
            m[c, AU_NAMES.index(au)] = value
    return m


def blend_partners(classes: tuple[str, ...], blend_pairs: str = "facs"
                   ) -> dict[str, tuple[str, ...]]:
    """The second emotions a face of each class may blend with, in class order.

    ``"uniform"``: every other class but neutral. ``"facs"``: the class's partners in
    :data:`BLEND_PAIRS`. Neutral is never a second emotion (it adds no action unit).
    """
    if blend_pairs not in BLEND_MODES:
        raise ValueError(f"blend_pairs must be one of {list(BLEND_MODES)}, got {blend_pairs!r}")
    unknown = sorted(set(classes) - set(PROTOTYPES))
    if unknown:
        raise ValueError(f"classes {unknown} have no AU prototype; expected names from "
                         f"{list(PROTOTYPES)}")
    linked = {frozenset(pair) for pair in BLEND_PAIRS}
    return {e: tuple(b for b in classes if b not in (e, "neutral")
                     and (blend_pairs == "uniform" or frozenset((e, b)) in linked))
            for e in classes}


def _expressions(rng: np.random.Generator, labels: np.ndarray, classes: tuple[str, ...],
                 cfg: dict[str, Any]) -> dict[str, np.ndarray]:
    """Peak AU intensities per side, mixtures and intensities for the given primary labels."""
    n, c = len(labels), len(classes)
    protos = _prototype_matrix(classes)
    partners = np.zeros((c, c), np.int64)
    count = np.zeros(c, np.int64)
    for k, others in enumerate(blend_partners(classes, cfg["blend_pairs"]).values()):
        count[k] = len(others)
        partners[k, :count[k]] = [classes.index(b) for b in others]
    peak = rng.uniform(*cfg["intensity"], n)
    blend = (rng.random(n) < cfg["blend_prob"]) & (count[labels] > 0)
    weight = cfg["blend_strength"] * rng.uniform(0.25, 1.0, n) * blend
    # Second emotion: uniform over the label's blend partners.
    pick = np.floor(rng.random(n) * count[labels]).astype(np.int64)
    second = partners[labels, pick]
    jitter = np.exp(cfg["au_jitter"] * rng.standard_normal((n, len(AU_NAMES))))
    side = np.where(rng.random(n) < 0.5, -1, 1)
    ratio = weight / (1 - weight)
    p1, p2 = protos[labels], protos[second] * ratio[:, None]
    uni = np.zeros((c, len(AU_NAMES)), bool)
    for emotion, aus in UNILATERAL.items():
        if emotion in classes:
            uni[classes.index(emotion), [AU_NAMES.index(a) for a in aus]] = True
    u1, u2 = uni[labels], uni[second] & (ratio[:, None] > 0)
    right = np.maximum(np.where(u1 & (side[:, None] == 1), 0, p1),
                       np.where(u2 & (side[:, None] == 1), 0, p2))
    left = np.maximum(np.where(u1 & (side[:, None] == -1), 0, p1),
                      np.where(u2 & (side[:, None] == -1), 0, p2))
    scale = peak[:, None] * jitter
    mixture = np.zeros((n, c))
    mixture[np.arange(n), labels] = 1 - weight
    mixture[np.arange(n), second] += weight
    has_uni = (u1 | u2).any(1)
    return {"right": np.clip(right * scale, 0, 1), "left": np.clip(left * scale, 0, 1),
            "mixture": mixture, "peak": peak, "side": np.where(has_uni, side, 0)}


def _class_weights(preset: str, classes: tuple[str, ...], imbalance: float) -> np.ndarray:
    counts = _CKPLUS_SEQUENCES if preset == "synth-lab" else _RAFDB_COUNTS
    w = np.array([counts[e] for e in classes if e in counts], float)
    return (w / w.max()) ** imbalance


def _sample_table(rng: np.random.Generator, preset: str, n_subjects: int,
                  classes: tuple[str, ...], cfg: dict[str, Any]) -> dict[str, np.ndarray]:
    """Which (subject, label, intensity ramp) each image shows."""
    if preset == "synth-wild":
        n = n_subjects * cfg["per_subject"]
        p = _class_weights(preset, classes, cfg["imbalance"])
        labels = rng.choice(len(classes), n, p=p / p.sum())
        return {"subject": np.repeat(np.arange(n_subjects), cfg["per_subject"]),
                "label": labels, "ramp": np.ones(n), "sequence": np.arange(n),
                "frame": np.zeros(n, int), "n_frames": np.ones(n, int), "primary": labels}
    emotions = [i for i, e in enumerate(classes) if e != "neutral"]
    keep = _class_weights(preset, classes, cfg["imbalance"])
    seq_subject, seq_emotion = np.meshgrid(np.arange(n_subjects), emotions, indexing="ij")
    seq_subject, seq_emotion = seq_subject.ravel(), seq_emotion.ravel()
    kept = rng.random(len(seq_subject)) < keep[seq_emotion - 1]
    kept[np.unique(seq_subject, return_index=True)[1]] = True     # every subject appears
    seq_subject, seq_emotion = seq_subject[kept], seq_emotion[kept]
    nf = cfg["n_frames"]
    frames = np.arange(nf) if cfg["frames"] == "all" else np.array([0, nf - 3, nf - 2, nf - 1])
    t = frames / (nf - 1)
    ramp = t * t * (3 - 2 * t)
    n_seq, k = len(seq_subject), len(frames)
    label = np.repeat(seq_emotion, k)
    label[np.tile(frames == 0, n_seq)] = 0
    return {"subject": np.repeat(seq_subject, k), "label": label,
            "ramp": np.tile(ramp, n_seq), "sequence": np.repeat(np.arange(n_seq), k),
            "frame": np.tile(frames, n_seq), "n_frames": np.full(n_seq * k, nf),
            "primary": np.repeat(seq_emotion, k)}


# ----------------------------------------------------------------------------- shapes

# Extra depth (canonical units) of the nose landmarks above the head surface, for yaw.
_NOSE_DEPTH = np.zeros(68)
_NOSE_DEPTH[27:36] = [0.08, 0.15, 0.22, 0.3, 0.1, 0.14, 0.17, 0.14, 0.1]


def _yaw(points: np.ndarray, angle: np.ndarray, bump: np.ndarray | float = 0.0) -> np.ndarray:
    """Rotate (N, K, 2) canonical points about the vertical head axis by ``angle`` (N,) rad.

    Depth is an ellipsoidal head surface (plus ``bump`` for the nose) under orthographic
    projection, so the far side of the face is foreshortened and the near side widens.
    """
    x = points[..., 0]
    z = 0.9 * np.sqrt(np.clip(1.0 - x**2, 0.0, None)) + bump
    out = points.copy()
    out[..., 0] = x * np.cos(angle)[:, None] + z * np.sin(angle)[:, None]
    return out


def _poses(rng: np.random.Generator, n: int, size: int,
           cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Canonical -> pixel affine matrices (N, 2, 3) and yaw angles (N,) in radians."""
    z = np.clip(rng.standard_normal((n, 4)), -2.5, 2.5) * cfg["pose"]
    scale = _FACE_SCALE * size * np.exp(0.08 * z[:, 0])
    rot = np.deg2rad(10.0) * z[:, 1]
    yaw = np.deg2rad(cfg["yaw"]) * rng.uniform(-1.0, 1.0, n)
    a = np.empty((n, 2, 3))
    a[:, 0, 0], a[:, 0, 1] = scale * np.cos(rot), -scale * np.sin(rot)
    a[:, 1, 0], a[:, 1, 1] = scale * np.sin(rot), scale * np.cos(rot)
    centre = (size - 1) / 2 + 0.05 * size * z[:, 2:4]
    a[:, :, 2] = centre - a[:, :, 1] * _FACE_CENTRE_Y
    return a, yaw


def _apply(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, K, 2) points through (N, 2, 3) affine matrices."""
    x, y = points[..., 0], points[..., 1]
    a = affine[:, :, :, None]
    return np.stack([a[:, 0, 0] * x + a[:, 0, 1] * y + a[:, 0, 2],
                     a[:, 1, 0] * x + a[:, 1, 1] * y + a[:, 1, 2]], -1)


def _shapes(lm: np.ndarray, idp: dict[str, np.ndarray], subject: np.ndarray,
            hand: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Canonical (N, K, 2) polygons and polylines of every drawn part and mask region."""
    n = len(lm)
    g = {k: v[subject] for k, v in idp.items() if v.ndim == 1}
    jaw_w = g["jaw_w"]
    sh: dict[str, np.ndarray] = {}
    bump: dict[str, float] = {}
    top = g["hair_top"]
    # Hair (back), shoulders, neck, ears, face.
    cy = np.full(n, -0.3)
    back = _ellipse(np.stack([0.06 * g["hair_side"], cy], 1), 1.13 * jaw_w, cy - top + 0.04,
                    np.pi, 2 * np.pi, 17)
    low = 0.75 * g["hair_long"]
    tail = np.stack([np.stack([1.1 * jaw_w, low - 0.2], 1), np.stack([0.9 * jaw_w, low], 1),
                     np.stack([-0.9 * jaw_w, low], 1), np.stack([-1.1 * jaw_w, low - 0.2], 1)], 1)
    sh["hair_back"] = np.concatenate([back, tail], 1)
    sh["shoulders"] = _ellipse(np.zeros((n, 2)) + [0.0, 1.85], 1.7 * jaw_w, np.full(n, 0.55))
    neck = np.array([[-0.34, 0.45], [0.34, 0.45], [0.42, 1.6], [-0.42, 1.6]])
    sh["neck"] = neck[None] * np.stack([jaw_w, np.ones(n)], 1)[:, None]
    for side, sgn in (("r", -1.0), ("l", 1.0)):
        sh[f"ear_{side}"] = _ellipse(np.stack([sgn * 1.0 * jaw_w, np.full(n, -0.07)], 1),
                                     np.full(n, 0.11), np.full(n, 0.2), n=12)
    jaw = _spline(_JAW, lm[:, :17])
    forehead = _ellipse(np.stack([np.zeros(n), lm[:, 16, 1]], 1), np.abs(lm[:, 16, 0]),
                        lm[:, 16, 1] - top - 0.06, 0.0, -np.pi, 16)
    sh["face"] = np.concatenate([jaw, forehead[:, 1:-1]], 1)
    hx = np.linspace(-1.0, 1.0, 9)[None]
    hairline = np.stack([hx * 1.02 * jaw_w[:, None],
                         g["hairline"][:, None] + 0.28 * hx**2
                         + 0.12 * g["hair_side"][:, None] * hx], -1)
    sh["fringe"] = np.concatenate([hairline, back[:, ::-1]], 1)
    # Eyes.
    for side, sl in (("r", slice(36, 42)), ("l", slice(42, 48))):
        eye = lm[:, sl]
        upper = _spline(_LID, eye[:, [0, 1, 2, 3]] if side == "r" else eye[:, [3, 2, 1, 0]])
        lower = _spline(_LID, eye[:, [3, 4, 5, 0]] if side == "r" else eye[:, [0, 5, 4, 3]])
        t = np.linspace(0, 1, upper.shape[1])[None]
        crease_h = (0.55 * g["eye_up"][:, None] + 0.025) * np.sin(np.pi * t) ** 0.7 + 0.008
        crease = upper - np.stack([np.zeros_like(crease_h), crease_h], -1)
        sh[f"sclera_{side}"] = _spline(_EYE, eye)
        sh[f"lid_{side}"] = np.concatenate([upper, crease[:, ::-1]], 1)
        sh[f"crease_{side}"] = crease[:, 2:-2]
        sh[f"margin_up_{side}"] = upper
        sh[f"margin_low_{side}"] = lower
        low_h = 0.065 * np.sin(np.pi * t) ** 0.7 + 0.006
        sh[f"lowlid_{side}"] = np.concatenate(
            [lower, lower[:, ::-1] + np.stack([np.zeros_like(low_h), low_h], -1)], 1)
        centre = 0.5 * (eye[:, 0] + eye[:, 3]) + [0.0, -0.005]
        sh[f"iris_{side}"] = centre[:, None] + [[0.0, 0.0], [_IRIS, 0.0], [0.0, _IRIS]]
        sh[f"socket_{side}"] = _ellipse(centre + [0.0, -0.07], 1.3 * g["eye_w"],
                                        np.full(n, 0.11), n=16)
        sgn = -1.0 if side == "r" else 1.0
        corner = eye[:, 0] if side == "r" else eye[:, 3]
        sh[f"crow_{side}"] = np.stack([
            np.stack([corner + [sgn * 0.035, -0.02 + 0.025 * k],
                      corner + [sgn * 0.1, -0.05 + 0.05 * k]], 1) for k in range(3)], 1)
        sh[f"bag_{side}"] = lower[:, 3:-3] + [0.0, 0.035]
    # Brows.
    for side, idx in (("r", [17, 18, 19, 20, 21]), ("l", [26, 25, 24, 23, 22])):
        mid = _spline(_BROW, lm[:, idx])
        half = 0.5 * g["brow_thick"][:, None] * _BROW_PROFILE[None]
        off = np.stack([np.zeros_like(half), half], -1)
        sh[f"brow_{side}"] = np.concatenate([mid - off, (mid + off)[:, ::-1]], 1)
    # Forehead lines (parallel to the brows), glabella lines.
    for k, dy in enumerate((0.1, 0.17, 0.24)):
        raised = lm[:, 17:27] - [0.0, dy]
        raised[..., 0] *= 1.04
        sh[f"fh{k}_c"] = raised[:, [3, 4, 5, 6]]
        sh[f"fh{k}_r"] = raised[:, [0, 1, 2, 3]] + [0.0, 0.01]
        sh[f"fh{k}_l"] = raised[:, [6, 7, 8, 9]] + [0.0, 0.01]
    for side, i, sgn in (("r", 21, 1.0), ("l", 22, -1.0)):
        base = lm[:, i] + [sgn * 0.035, -0.02]
        sh[f"glabella_{side}"] = np.stack([base, base + [sgn * 0.008, 0.09]], 1)
    # Nose.
    sh["nose_shade"] = np.stack([lm[:, 27] + [-0.03, 0.03], lm[:, 28] + [-0.045, 0],
                                 lm[:, 29] + [-0.06, 0], lm[:, 31] + [0.0, -0.04],
                                 lm[:, 32] + [0.0, -0.01], lm[:, 29] + [-0.02, 0],
                                 lm[:, 28] + [-0.015, 0]], 1)
    sh["nose_base"] = _spline(_LIP_LINE, lm[:, 31:36])
    sh["nostril_r"] = _ellipse(0.5 * (lm[:, 31] + lm[:, 32]) + [0.0, -0.008],
                               np.full(n, 0.032), np.full(n, 0.016), n=10)
    sh["nostril_l"] = _ellipse(0.5 * (lm[:, 34] + lm[:, 35]) + [0.0, -0.008],
                               np.full(n, 0.032), np.full(n, 0.016), n=10)
    sh["nose_wrinkle"] = np.stack([
        np.stack([lm[:, 27] + [-0.06, 0.03 + 0.035 * k], lm[:, 27] + [0.0, 0.02 + 0.035 * k],
                  lm[:, 27] + [0.06, 0.03 + 0.035 * k]], 1) for k in range(3)], 1)
    for name in ("nose_shade", "nose_base", "nostril_r", "nostril_l", "nose_wrinkle"):
        bump[name] = 0.15
    # Folds around the mouth.
    for side, ala, corner, sgn in (("r", 31, 48, -1.0), ("l", 35, 54, 1.0)):
        ctrl = np.stack([lm[:, ala] + [sgn * 0.04, -0.015],
                         0.5 * (lm[:, ala] + lm[:, corner]) + [sgn * 0.09, 0.0],
                         lm[:, corner] + [sgn * 0.06, 0.07]], 1)
        sh[f"fold_{side}"] = _spline(_catmull_rom(3, 3, closed=False), ctrl)
        sh[f"dimple_{side}"] = np.stack([lm[:, corner] + [sgn * 0.02, -0.035],
                                         lm[:, corner] + [sgn * 0.032, 0.0],
                                         lm[:, corner] + [sgn * 0.022, 0.03]], 1)
    sh["mentolabial"] = np.stack([lm[:, 58] + [0.0, 0.05], lm[:, 57] + [0.0, 0.065],
                                  lm[:, 56] + [0.0, 0.05]], 1)
    sh["chin_lines"] = np.stack([
        np.stack([lm[:, 8] + [sgn * 0.05, -0.15], lm[:, 8] + [sgn * 0.035, -0.08]], 1)
        for sgn in (-1.0, 1.0)], 1)
    # Lips, mouth interior, teeth.
    sh["lips"] = _spline(_LIPS_OUT, lm[:, 48:60])
    sh["mouth_in"] = _spline(_LIPS_IN, lm[:, 60:68])
    up = _spline(_LIP_LINE, lm[:, 60:65])
    down = _spline(_LIP_LINE, lm[:, [60, 67, 66, 65, 64]])
    sh["lip_line"] = up
    gap = np.maximum(lm[:, 66, 1] - lm[:, 62, 1], 1e-3)
    frac = np.minimum(0.45, 0.05 / gap)[:, None, None]      # upper teeth show ~0.05 at most
    sh["teeth"] = np.concatenate([up, (up + frac * (down - up))[:, ::-1]], 1)
    # Occluders: glasses and a hand.
    for side, sl, sgn in (("r", slice(36, 42), -1.0), ("l", slice(42, 48), 1.0)):
        centre = lm[:, sl].mean(1) + [0.0, -0.005]
        sh[f"lens_{side}"] = _ellipse(centre, 1.45 * g["eye_w"], np.full(n, 0.125), n=20)
        sh[f"temple_{side}"] = np.stack([centre + np.stack([sgn * 1.45 * g["eye_w"],
                                                            np.zeros(n)], 1),
                                         np.stack([sgn * 0.97 * jaw_w, centre[:, 1] - 0.02], 1)], 1)
    sh["bridge"] = np.stack([lm[:, 39] + [0.02, -0.03], lm[:, 27] + [0.0, 0.0],
                             lm[:, 42] + [-0.02, -0.03]], 1)
    bump["bridge"] = 0.08
    rot = hand["angle"]
    r = np.stack([np.stack([np.cos(rot), -np.sin(rot)], -1),
                  np.stack([np.sin(rot), np.cos(rot)], -1)], -2)
    palm = _ellipse(np.zeros((n, 2)), np.full(n, 0.28), np.full(n, 0.24), n=16)
    fx = np.array([-0.2, -0.07, 0.06, 0.19])
    fingers = np.stack([np.stack([np.full(n, x), np.full(n, -0.12)], 1) for x in fx], 1)
    tips = fingers + np.array([[0.03, -0.38], [0.0, -0.44], [-0.02, -0.42], [-0.04, -0.33]])
    fingers = np.stack([fingers, tips], 2).reshape(n, 8, 2)          # (base, tip) pairs
    for name, pts in (("palm", palm), ("fingers", fingers)):
        sh[f"hand_{name}"] = np.einsum("nij,nkj->nki", r, pts) + hand["centre"][:, None]
    # Evidence-mask regions.
    brows = lm[:, 17:27]
    sh["m_brows"] = np.concatenate([brows + [0.0, 0.06], (brows - [0.0, 0.3])[:, ::-1]], 1)
    for side, sl in (("r", slice(36, 42)), ("l", slice(42, 48))):
        eye = lm[:, sl]
        c = eye.mean(1, keepdims=True)
        sh[f"m_eyes_{side}"] = c + (eye - c) * [1.6, 2.6]
    sh["m_nose"] = np.stack([lm[:, 27] + [-0.09, -0.05], lm[:, 27] + [0.09, -0.05],
                             lm[:, 35] + [0.06, 0.0], lm[:, 33] + [0.0, 0.05],
                             lm[:, 31] + [-0.06, 0.0]], 1)
    lips = lm[:, 48:60]
    c = lips.mean(1, keepdims=True)
    sh["m_mouth"] = c + (lips - c) * [1.3, 1.7]
    sh["m_chin"] = lm[:, [5, 6, 7, 8, 9, 10, 11, 55, 56, 57, 58, 59]]
    return sh, bump


# ----------------------------------------------------------------------------- rendering

def _backgrounds(rng: np.random.Generator, n_pool: int, size: int) -> np.ndarray:
    """A pool of cluttered backgrounds (n_pool, size, size) uint8: blurred random shapes."""
    pool = np.empty((n_pool, size, size), np.uint8)
    for k in range(n_pool):
        img = np.full((size, size), rng.uniform(40, 220), np.uint8)
        for _ in range(rng.integers(6, 14)):
            kind, grey = rng.integers(0, 3), int(rng.uniform(10, 245))
            p = (rng.uniform(-0.2, 1.2, 4) * size * _ONE).astype(np.int32)
            if kind == 0:
                cv2.rectangle(img, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), grey, -1,
                              _AA, _SUB)
            elif kind == 1:
                cv2.circle(img, (int(p[0]), int(p[1])), int(abs(p[2] - p[0]) // 3), grey, -1,
                           _AA, _SUB)
            else:
                cv2.line(img, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), grey,
                         max(1, int(rng.uniform(0.01, 0.06) * size)), _AA, _SUB)
        pool[k] = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 2.0) * size / 96)
    return pool


def _draw_faces(px: np.ndarray, slices: dict[str, slice], groups: dict[str, int],
                scal: dict[str, np.ndarray], backgrounds: np.ndarray, size: int) -> np.ndarray:
    """Draw every face into its background; ``px`` holds (N, M, 2) fixed-point points."""
    n = len(px)
    out = np.empty((n, size, size), np.uint8)
    t1 = max(1, round(size / 100))
    col = {k: v.tolist() for k, v in scal.items()}
    iris = {}
    for side in "rl":
        c, ex, ey = (px[:, slices[f"iris_{side}"]][:, k] for k in range(3))
        dx, dy = (ex - c).T
        iris[side] = np.stack([c[:, 0], c[:, 1], np.hypot(dx, dy),
                               np.maximum(np.hypot(*(ey - c).T), _ONE),
                               np.degrees(np.arctan2(dy, dx))], 1).tolist()

    for i in range(n):
        p = px[i]

        def pts(name: str) -> np.ndarray:
            arr = p[slices[name]]
            return arr.reshape(-1, groups[name], 2) if name in groups else arr[None]

        img = backgrounds[i].copy()
        skin, hair = col["skin"][i], col["hair"][i]

        def fill(name: str, colour: float) -> None:
            cv2.fillPoly(img, pts(name), colour, _AA, _SUB)

        def line(name: str, colour: float, thick: int = t1, closed: bool = False) -> None:
            cv2.polylines(img, pts(name), closed, colour, thick, _AA, _SUB)

        fill("hair_back", hair)
        fill("shoulders", col["cloth"][i])
        fill("neck", 0.78 * skin)
        fill("ear_r", skin - 12)
        fill("ear_l", skin - 12)
        fill("face", skin)
        fill("socket_r", skin - 9)
        fill("socket_l", skin - 9)
        for k in range(3):
            for side, cue in (("c", "au1"), ("r", "au2_r"), ("l", "au2_l")):
                if col[cue][i] > 0.08:
                    line(f"fh{k}_{side}", skin - 55 * col[cue][i])
        fill("fringe", hair)
        for side in "rl":
            if col[f"au4_{side}"][i] > 0.08:
                line(f"glabella_{side}", skin - 60 * col[f"au4_{side}"][i])
        fill("nose_shade", skin - 14)
        line("nose_base", skin - 30)
        fill("nostril_r", skin - 80)
        fill("nostril_l", skin - 80)
        if col["au9"][i] > 0.08:
            line("nose_wrinkle", skin - 60 * col["au9"][i])
        for side in "rl":
            line(f"fold_{side}", skin - 55 * col[f"fold_{side}"][i])
            if col[f"au14_{side}"][i] > 0.08:
                line(f"dimple_{side}", skin - 60 * col[f"au14_{side}"][i])
        line("mentolabial", skin - 25 - 40 * col["au17"][i])
        if col["au17"][i] > 0.15:
            line("chin_lines", skin - 45 * col["au17"][i])
        for side in "rl":
            fill(f"sclera_{side}", col["sclera"][i])
            cx, cy, ax, ay, angle = iris[side][i]
            c = (int(cx), int(cy))
            cv2.ellipse(img, c, (int(ax), int(ay)), angle, 0, 360, col["iris"][i], -1, _AA,
                        _SUB)
            cv2.ellipse(img, c, (int(0.55 * ax), int(0.55 * ay)), angle, 0, 360, 12, -1, _AA,
                        _SUB)
            if size >= 128:
                off = int(ay) // 2
                cv2.circle(img, (c[0] + off, c[1] - off), int(ay) // 6, 215, -1, _AA, _SUB)
            fill(f"lowlid_{side}", skin - 4)
            fill(f"lid_{side}", skin - 14)
            line(f"crease_{side}", skin - 45)
            line(f"margin_up_{side}", 25, col["lash"][i])
            line(f"margin_low_{side}", skin - 50)
            if col[f"au6_{side}"][i] > 0.08:
                line(f"crow_{side}", skin - 55 * col[f"au6_{side}"][i])
                line(f"bag_{side}", skin - 35 * col[f"au6_{side}"][i])
            fill(f"brow_{side}", col["brow"][i])
        lip = skin - col["lip_dark"][i]
        fill("lips", lip)
        if col["gap"][i] > 0.012:
            fill("mouth_in", 28)
            if col["gap"][i] > 0.03:
                fill("teeth", 205)
        line("lip_line", lip - 45)
        occ = col["occluder"][i]
        if occ in (1, 2):
            if occ == 2:
                fill("lens_r", 22)
                fill("lens_l", 22)
            frame = col["frame"][i]
            for name in ("lens_r", "lens_l"):
                line(name, frame, col["frame_w"][i], closed=True)
            for name in ("bridge", "temple_r", "temple_l"):
                line(name, frame, col["frame_w"][i])
        elif occ == 3:
            hand = col["hand"][i]
            line("hand_fingers", hand - 30, col["finger_w"][i] + 2)
            fill("hand_palm", hand)
            line("hand_fingers", hand, col["finger_w"][i])
        blur = col["blur"][i]
        out[i] = cv2.GaussianBlur(img, (0, 0), blur) if blur > 0 else img
    return out


def _draw_masks(px: np.ndarray, slices: dict[str, slice], regions: np.ndarray,
                size: int) -> np.ndarray:
    """(N, size, size) uint8 masks: 1 inside every region flagged in ``regions`` (N, 5)."""
    masks = np.zeros((len(px), size, size), np.uint8)
    for i in range(len(px)):
        polys = []
        for r, name in enumerate(_REGION_NAMES):
            if regions[i, r]:
                keys = ("m_eyes_r", "m_eyes_l") if name == "eyes" else (f"m_{name}",)
                polys += [px[i, slices[k]] for k in keys]
        for poly in polys:
            cv2.fillPoly(masks[i], [poly], 1, cv2.LINE_8, _SUB)
    return masks


# ----------------------------------------------------------------------------- assembly

def _flatten(shapes: dict[str, np.ndarray], bump: dict[str, float]
             ) -> tuple[np.ndarray, np.ndarray, dict[str, slice], dict[str, int]]:
    """Concatenate named (N, ..., 2) shapes into one (N, M, 2) array with per-column depth."""
    arrays, depth, slices, groups, start = [], [], {}, {}, 0
    for name, arr in shapes.items():
        n = arr.shape[0]
        if arr.ndim == 4:
            groups[name] = arr.shape[2]
        flat = arr.reshape(n, -1, 2)
        arrays.append(flat)
        d = _NOSE_DEPTH if name == "landmarks" else np.full(flat.shape[1], bump.get(name, 0.0))
        depth.append(d)
        slices[name] = slice(start, start + flat.shape[1])
        start += flat.shape[1]
    return np.concatenate(arrays, 1), np.concatenate(depth), slices, groups


def _build(preset: str, n_subjects: int, size: int, seed: int,
           cfg: dict[str, Any]) -> FaceDataset:
    lab = preset == "synth-lab"
    classes = EMOTIONS_8 if lab else EMOTIONS_7
    streams = np.random.SeedSequence([seed, PRESETS.index(preset)]).spawn(8)
    (rng_id, rng_table, rng_expr, rng_pose, rng_look, rng_noise, rng_annotator,
     rng_cue) = map(np.random.default_rng, streams)
    idp = _sample_identities(rng_id, n_subjects, cfg["identity"], cfg["resting_bias"])
    idp["cloth"] = rng_id.uniform(30, 220, n_subjects)
    base = _identity_landmarks(idp) + idp["asym"]
    table = _sample_table(rng_table, preset, n_subjects, classes, cfg)
    subject, seq, ramp = table["subject"], table["sequence"], table["ramp"]
    n = len(subject)
    first = np.unique(seq, return_index=True)[1]
    expr = _expressions(rng_expr, table["primary"][first], classes, cfg)

    # Action units: the expression ramps with the frame; the resting bias is always there.
    expr_r, expr_l = expr["right"][seq] * ramp[:, None], expr["left"][seq] * ramp[:, None]
    rest = idp["rest"][subject]
    au_r, au_l = np.clip(expr_r + rest, 0, 1), np.clip(expr_l + rest, 0, 1)
    aus = np.maximum(au_r, au_l)
    lm = base[subject] + cfg["motion"] * (au_r @ _AU_RIGHT.reshape(len(AU_NAMES), -1)
                                          + au_l @ _AU_LEFT.reshape(len(AU_NAMES), -1)
                                          ).reshape(n, 68, 2)
    mixture = expr["mixture"][seq]
    mixture[ramp == 0] = np.eye(len(classes))[0]
    intensity = expr["peak"][seq] * ramp
    va = np.array([valence_arousal(m, classes, it) for m, it in zip(mixture, intensity)])
    labels = table["label"].copy()

    # Evidence regions of the expression's AUs (neutral: the rest state of brows, eyes, mouth).
    active = np.maximum(expr_r, expr_l) >= MASK_THRESHOLD
    au_region = np.array([[r in AU_REGIONS[a] for r in _REGION_NAMES] for a in AU_NAMES])
    regions = (active[:, :, None] & au_region[None]).any(1)
    neutral = np.array([r in NEUTRAL_REGIONS for r in _REGION_NAMES])
    regions[~active.any(1)] = neutral

    # Pose, occluders and geometry in pixels.
    affine, yaw = _poses(rng_pose, n, size, cfg)
    occluder = np.where(rng_look.random(n) < cfg["occlusion"],
                        rng_look.choice([1, 2, 3], n, p=[0.4, 0.2, 0.4]), 0)
    hand = {"centre": np.stack([rng_look.uniform(-0.45, 0.45, n),
                                rng_look.uniform(0.3, 0.8, n)], 1),
            "angle": rng_look.uniform(-0.7, 0.7, n)}
    shapes, bump = _shapes(lm, idp, subject, hand)
    shapes["landmarks"] = lm
    flat, depth, slices, groups = _flatten(shapes, bump)
    pixels = _apply(affine, _yaw(flat, yaw, depth[None]))
    landmarks = pixels[:, slices["landmarks"]].astype(np.float32)
    fixed = np.round(pixels * _ONE).astype(np.int32)
    scale = np.sqrt(np.abs(np.linalg.det(affine[:, :, :2])))

    # Colours and texture-cue strengths per image.
    def side(a: np.ndarray, au: str) -> np.ndarray:
        return a[:, AU_NAMES.index(au)]

    g = {k: v[subject] for k, v in idp.items() if v.ndim == 1}
    scal = {
        "skin": g["skin"], "hair": g["hair"], "brow": g["brow"], "iris": g["iris"],
        "lip_dark": g["lip_dark"], "cloth": g["cloth"],
        "sclera": np.minimum(g["skin"] + 45, 238),
        "au1": side(aus, "AU1"), "au9": side(aus, "AU9"), "au17": side(aus, "AU17"),
        "gap": lm[:, 66, 1] - lm[:, 62, 1], "occluder": occluder,
        "lash": np.maximum(1, np.round(0.025 * scale)).astype(int),
        "frame": rng_look.uniform(15, 90, n),
        "frame_w": np.maximum(1, np.round(0.025 * scale)).astype(int),
        "hand": np.clip(g["skin"] + rng_look.uniform(-25, 25, n), 60, 235),
        "finger_w": np.maximum(2, np.round(0.1 * scale)).astype(int),
        "blur": 0.3 + 0.25 * size / 96 + cfg["blur"] * 1.5 * size / 96
        * rng_look.random(n) ** 2,
    }
    for s, a in (("r", au_r), ("l", au_l)):
        scal[f"au2_{s}"], scal[f"au4_{s}"] = side(a, "AU2"), side(a, "AU4")
        scal[f"au6_{s}"], scal[f"au14_{s}"] = side(a, "AU6"), side(a, "AU14")
        scal[f"fold_{s}"] = np.minimum(g["fold"] + np.maximum(side(a, "AU10"), side(a, "AU12"))
                                       + 0.5 * side(a, "AU9"), 1.0)

    # Backgrounds: plain with a vertical gradient, mixed with clutter.
    ys = (np.arange(size) / size - 0.5)[None, :, None]
    plain = g["background"][:, None, None] + g["bg_slope"][:, None, None] * ys
    plain = np.broadcast_to(plain, (n, size, size))
    if cfg["clutter"] > 0:
        pool = _backgrounds(rng_look, 32, size)
        pick = pool[rng_look.integers(0, len(pool), n)]
        flip = rng_look.random(n) < 0.5
        pick[flip] = pick[flip, :, ::-1]
        c = min(cfg["clutter"], 1.0)
        plain = (1 - c) * plain + c * pick
    backgrounds = np.clip(np.round(plain), 0, 255).astype(np.uint8)

    images = _draw_faces(fixed, slices, groups, scal, backgrounds, size)
    images = _photometric(rng_noise, images, cfg)
    masks = _draw_masks(fixed, slices, regions, size)

    meta: dict[str, np.ndarray] = {
        "intensity": intensity.astype(np.float32),
        "au_side": expr["side"][seq].astype(np.int8),
        "yaw": np.rad2deg(yaw).astype(np.float32),
        "roll": np.rad2deg(np.arctan2(affine[:, 1, 0], affine[:, 0, 0])).astype(np.float32),
    }
    if lab:
        meta.update(sequence=seq, frame=table["frame"], n_frames=table["n_frames"])
    else:
        meta["occluder"] = occluder.astype(np.int8)
    if not lab or cfg["label_from_mixture"]:
        meta["clean_label"] = labels.copy()
    if cfg["label_from_mixture"]:
        labels = _draw_classes(rng_annotator, mixture)
    elif not lab:
        noisy = rng_noise.random(n) < cfg["label_noise"]
        shift = rng_noise.integers(1, len(classes), noisy.sum())
        labels[noisy] = (labels[noisy] + shift) % len(classes)
    ds = FaceDataset(
        images=images, labels=labels, subjects=subject, classes=classes, name=preset,
        landmarks=landmarks, aus=aus.astype(np.float32), au_names=AU_NAMES,
        mixtures=mixture.astype(np.float32), valence_arousal=va.astype(np.float32),
        masks=masks, meta=meta)
    if cfg["distractor"] is None:
        return ds
    return with_cues(ds, sample_cues(labels, cfg["distractor"], len(classes), rng_cue))


def _draw_classes(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One class index per row of ``weights`` (N, C), drawn with the row's weights."""
    cum = np.cumsum(weights, 1)
    u = rng.random(len(weights)) * cum[:, -1]
    return (u[:, None] >= cum).sum(1)


def _photometric(rng: np.random.Generator, images: np.ndarray,
                 cfg: dict[str, Any], chunk: int = 256) -> np.ndarray:
    """Exposure, a linear illumination gradient and Gaussian pixel noise, in place."""
    n, size = len(images), images.shape[1]
    coords = np.arange(size, dtype=np.float32) / size - 0.5
    gain = np.exp(0.25 * cfg["illumination"] * rng.standard_normal(n)).astype(np.float32)
    phi = rng.uniform(0, 2 * np.pi, n)
    strength = cfg["illumination"] * rng.uniform(0, 1, n)
    gx = (strength * np.cos(phi)).astype(np.float32)[:, None, None]
    gy = (strength * np.sin(phi)).astype(np.float32)[:, None, None]
    sd = (cfg["noise"] * 255 * rng.uniform(0.5, 1.0, n)).astype(np.float32)[:, None, None]
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        light = gain[a:b, None, None] * (1 + gx[a:b] * coords[None, None, :]
                                         + gy[a:b] * coords[None, :, None])
        noise = rng.standard_normal((b - a, size, size), dtype=np.float32) * sd[a:b]
        images[a:b] = np.clip(images[a:b] * light + noise + 0.5, 0, 255).astype(np.uint8)
    return images


# ----------------------------------------------------------------------------- distractor cues

_CUE_DARK, _CUE_LIGHT, _CUE_BLANK = 20, 235, 128


def _cue_patterns() -> np.ndarray:
    """(MAX_CUE_CLASSES + 1, 2, 2) cell values: classes 0-3 one light cell on dark, 4-7 one
    dark cell on light (cells in reading order); the last row, indexed by -1, is blank grey."""
    patterns = np.full((MAX_CUE_CLASSES + 1, 4), _CUE_BLANK, np.uint8)
    for k in range(MAX_CUE_CLASSES):
        light = k < 4
        patterns[k] = _CUE_DARK if light else _CUE_LIGHT
        patterns[k, k % 4] = _CUE_LIGHT if light else _CUE_DARK
    return patterns.reshape(-1, 2, 2)


_CUE_PATTERNS = _cue_patterns()


def cue_region(shape: tuple[int, int], corner: int = 0) -> tuple[slice, slice]:
    """(rows, columns) of the cue patch in an image of ``shape`` (height, width) at ``corner``
    (an index into :data:`CUE_CORNERS`): 2 x 2 cells of max(3, round(min(shape) / 16))
    pixels, flush with the corner."""
    if corner not in range(len(CUE_CORNERS)):
        raise ValueError(f"corner must be 0..3 ({', '.join(CUE_CORNERS)}), got {corner!r}")
    h, w = shape
    side = 2 * max(3, round(min(h, w) / 16))
    rows = slice(0, side) if corner < 2 else slice(h - side, h)
    cols = slice(0, side) if corner % 2 == 0 else slice(w - side, w)
    return rows, cols


def _per_image(name: str, value: ArrayLike, n: int, lo: int, hi: int) -> np.ndarray:
    """``value`` (an int or n ints in [lo, hi]) as an (n,) int64 array, or a clear error."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu" or arr.ndim > 1:
        raise TypeError(f"{name} must be an int or a 1-D array of ints, got {arr.dtype} "
                        f"of shape {arr.shape}")
    arr = np.broadcast_to(arr.astype(np.int64), (n,)) if arr.ndim == 0 else arr.astype(np.int64)
    if len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} entries for {n} images")
    if n and (arr.min() < lo or arr.max() > hi):
        raise ValueError(f"{name} must lie in [{lo}, {hi}], got values from {arr.min()} to "
                         f"{arr.max()}")
    return arr


def paint_cues(images: np.ndarray, cues: ArrayLike, corners: ArrayLike = 0) -> np.ndarray:
    """A copy of ``images`` (N, H, W[, 3]) uint8 with each image's cue patch painted.

    ``cues`` (an int or N ints) is the class each patch shows, 0 to
    ``MAX_CUE_CLASSES - 1``, or -1 for a blank grey patch (no class); ``corners`` (an int or
    N ints) indexes :data:`CUE_CORNERS`. Every pixel of the patch is overwritten, so painting
    again replaces an earlier cue in the same corner.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(f"images must be uint8 of shape (N, H, W) or (N, H, W, 3); got "
                         f"{images.dtype} {images.shape}")
    n = len(images)
    cues = _per_image("cues", cues, n, -1, MAX_CUE_CLASSES - 1)
    corners = _per_image("corners", corners, n, 0, len(CUE_CORNERS) - 1)
    shape = images.shape[1:3]
    cell = max(3, round(min(shape) / 16))
    patches = _CUE_PATTERNS[cues].repeat(cell, 1).repeat(cell, 2)
    if images.ndim == 4:
        patches = patches[..., None]
    out = images.copy()
    for corner in np.unique(corners):
        rows, cols = cue_region(shape, int(corner))
        chosen = corners == corner
        out[chosen, rows, cols] = patches[chosen]
    return out


def cue_corners(dataset: FaceDataset) -> np.ndarray:
    """(N,) int8 corner of each image's cue: the first of :data:`CUE_CORNERS` that neither
    its evidence mask nor the convex hull of its landmarks reaches, else the least covered
    (a corner reached only under extreme poses)."""
    n, (h, w) = len(dataset), dataset.image_size
    face = np.zeros((n, h, w), np.uint8) if dataset.masks is None else dataset.masks > 0
    face = face.astype(np.uint8)
    if dataset.landmarks is not None:
        for i in range(n):
            hull = cv2.convexHull(np.round(dataset.landmarks[i] * _ONE).astype(np.int32))
            cv2.fillConvexPoly(face[i], hull, 1, cv2.LINE_8, _SUB)
            cv2.polylines(face[i], [hull], True, 1, 1, cv2.LINE_8, _SUB)
    covered = np.stack([face[(slice(None), *cue_region((h, w), k))].reshape(n, -1).sum(1)
                        for k in range(len(CUE_CORNERS))], 1)
    return np.argmin(covered, 1).astype(np.int8)


def with_cues(dataset: FaceDataset, cues: ArrayLike) -> FaceDataset:
    """A copy of ``dataset`` whose images show cue classes ``cues`` (see :func:`paint_cues`;
    -1 a blank patch), recorded in ``meta["cue"]``; the corners are ``meta["cue_corner"]``
    when present, else :func:`cue_corners`. Masks and landmarks are unchanged."""
    cues = _per_image("cues", cues, len(dataset), -1, MAX_CUE_CLASSES - 1)
    if cues.size and cues.max() >= dataset.n_classes:
        raise ValueError(f"cues must be -1 or a class of {dataset.name} (0.."
                         f"{dataset.n_classes - 1}), got {cues.max()}")
    corners = dataset.meta.get("cue_corner")
    if corners is None:
        corners = cue_corners(dataset)
    meta = {**dataset.meta, "cue": cues.astype(np.int8), "cue_corner": corners}
    return dataclasses.replace(dataset, images=paint_cues(dataset.images, cues, corners),
                               meta=meta)


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer, np.random.Generator)):
        raise TypeError(f"seed must be an int or a numpy Generator, got {seed!r}")
    return np.random.default_rng(seed)


def _classes(labels: ArrayLike, n_classes: int) -> np.ndarray:
    if (isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer))
            or not 2 <= n_classes <= MAX_CUE_CLASSES):
        raise ValueError(f"n_classes must be an int in 2..{MAX_CUE_CLASSES} (one cue pattern "
                         f"per class), got {n_classes!r}")
    labels = np.asarray(labels)
    return _per_image("labels", labels, labels.size, 0, int(n_classes) - 1)


def sample_cues(labels: ArrayLike, strength: float, n_classes: int,
                seed: int | np.random.Generator = 0) -> np.ndarray:
    """(N,) int8 cue classes: each image's label with probability ``strength``, else a class
    drawn uniformly from all ``n_classes`` (so 0 makes cues independent of the labels and 1
    makes every cue show its label)."""
    labels = _classes(labels, n_classes)
    strength = _unit("strength", strength, "a cue strength in [0, 1]")
    rng = _rng(seed)
    keep = rng.random(len(labels)) < strength
    return np.where(keep, labels, rng.integers(0, n_classes, len(labels))).astype(np.int8)


def misleading_cues(labels: ArrayLike, n_classes: int,
                    seed: int | np.random.Generator = 0) -> np.ndarray:
    """(N,) int8 cue classes each different from its label, drawn uniformly from the other
    ``n_classes - 1`` classes: a network that reads the cue gets every image wrong."""
    labels = _classes(labels, n_classes)
    shift = _rng(seed).integers(1, n_classes, len(labels))
    return ((labels + shift) % n_classes).astype(np.int8)


# ----------------------------------------------------------------------------- public API

def _cache_key(preset: str, n_subjects: int, size: int, seed: int, cfg: dict[str, Any]) -> str:
    """Hash of every parameter; mechanism knobs count only when set (:data:`_MECHANISM_OFF`)."""
    knobs = {k: v for k, v in cfg.items()
             if k not in _MECHANISM_OFF or v != _MECHANISM_OFF[k]}
    params = {"version": GENERATOR_VERSION, "preset": preset, "n_subjects": int(n_subjects),
              "size": int(size), "seed": int(seed), **knobs}
    blob = json.dumps(params, sort_keys=True, default=list).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


_ARRAYS = ("images", "labels", "subjects", "landmarks", "aus", "mixtures", "valence_arousal",
           "masks")


def _save(ds: FaceDataset, path: Path) -> None:
    arrays = {k: getattr(ds, k) for k in _ARRAYS}
    arrays.update({f"meta_{k}": v for k, v in ds.meta.items()})
    atomic_savez(path, **arrays)


def _load(path: Path, preset: str) -> FaceDataset:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = {k[5:]: arrays.pop(k) for k in list(arrays) if k.startswith("meta_")}
    classes = EMOTIONS_8 if preset == "synth-lab" else EMOTIONS_7
    return FaceDataset(classes=classes, name=preset, au_names=AU_NAMES, meta=meta, **arrays)


def generate(preset: str = "synth-lab", *, n_subjects: int = 40, size: int = 96, seed: int = 0,
             cache_dir: str | Path | None = None, **knobs: Any) -> FaceDataset:
    """Render a synthetic FER dataset.

    Args:
        preset: ``"synth-lab"`` (CK+-like sequences, 8 classes) or ``"synth-wild"``
            (RAF-DB-like single images, 7 classes).
        n_subjects: number of identities (>= 2).
        size: image height and width in pixels, 48..224.
        seed: random seed; the same arguments give byte-identical data.
        cache_dir: directory for an ``.npz`` cache keyed by a hash of every parameter.
        **knobs: difficulty and mechanism knobs of the preset (see the module docstring
            and :data:`KNOBS`), e.g. ``distractor=0.9``, ``blend_pairs="facs"``,
            ``label_from_mixture=True``, ``motion=0.0``.

    Returns:
        A :class:`~fernb.data.datasets.FaceDataset` with images, labels, subjects, landmarks,
        AU intensities, emotion mixtures, valence/arousal and evidence masks.
    """
    cfg = _validate(preset, n_subjects, size, seed, knobs)
    path = None
    if cache_dir is not None:
        key = _cache_key(preset, n_subjects, size, seed, cfg)
        path = Path(cache_dir) / f"{preset}-{key}.npz"
        if path.exists():
            return _load(path, preset)
    ds = _build(preset, int(n_subjects), int(size), int(seed), cfg)
    if path is not None:
        _save(ds, path)
    return ds


@register_dataset("synth-lab")
def load_synth_lab(root: str | Path | None = None, **kwargs: Any) -> FaceDataset:
    """Registry loader of ``synth-lab``; ``root`` is the cache directory."""
    return generate("synth-lab", cache_dir=root, **kwargs)


@register_dataset("synth-wild")
def load_synth_wild(root: str | Path | None = None, **kwargs: Any) -> FaceDataset:
    """Registry loader of ``synth-wild``; ``root`` is the cache directory."""
    return generate("synth-wild", cache_dir=root, **kwargs)


_README = """\
{name}: {n} grayscale face images ({h}x{w}), classes {classes}.
Read it back with `-p dataset folder -p data_root THIS_FOLDER` (any chapter), check it with
`fernb data check folder --root THIS_FOLDER`, or load_dataset("folder", root=...).

images/<row>.png     the images (8-bit grayscale PNG)
labels.csv           one row per image, the `folder` dataset's columns:
  path               path of the image relative to this folder
  label              emotion name ({classes})
  subject            subject (identity) id; split by it for subject-independent evaluation
  x0, y0 ... x67, y67  68 iBUG 300-W landmarks in pixels (x right, y down, pixel centres
                     at integer coordinates)
  valence, arousal   circumplex position in [-1, 1]
  p_<emotion>        ground-truth emotion mixture (sums to 1)
  AU<k>              FACS action-unit intensities in [0, 1] (not read back)
  other columns      per-image metadata ({meta}) (not read back)
"""


def export(dataset: FaceDataset, out_dir: str | Path) -> Path:
    """Write ``dataset`` in the ``folder`` layout: ``images/<row>.png``, ``labels.csv`` and
    ``README.txt`` (see :func:`fernb.data.real.folder`, which reads it back).

    Everything is written into a temporary folder beside ``out_dir``, which is renamed to
    ``out_dir`` at the end: an interrupted export leaves nothing half-written. Columns absent
    from the dataset (e.g. landmarks of a real set without them) are left out. Returns
    ``out_dir``.

    Raises:
        FileExistsError: ``out_dir`` exists and is not empty.
    """
    import pandas as pd

    if not isinstance(dataset, FaceDataset):
        raise TypeError(f"export expects a FaceDataset, got {type(dataset).__name__}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not empty; choose another --out "
                              f"or delete it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        n = len(dataset)
        width = max(6, len(str(n)))
        files = [f"images/{i:0{width}d}.png" for i in range(n)]
        (tmp / "images").mkdir()
        for i, rel in enumerate(files):
            image = dataset.images[i]
            if image.ndim == 3:
                image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
            if not cv2.imwrite(str(tmp / rel), image):
                raise OSError(f"could not write {tmp / rel}")
        cols: dict[str, Any] = {"path": files, "label": np.asarray(dataset.classes)[dataset.labels],
                                "subject": dataset.subjects}
        if dataset.split is not None:
            cols["split"] = dataset.split
        if dataset.landmarks is not None:
            for k in range(dataset.landmarks.shape[1]):
                cols[f"x{k}"], cols[f"y{k}"] = dataset.landmarks[:, k].T
        if dataset.valence_arousal is not None:
            cols["valence"], cols["arousal"] = dataset.valence_arousal.T
        if dataset.mixtures is not None:
            cols.update({f"p_{c}": dataset.mixtures[:, k] for k, c in enumerate(dataset.classes)})
        if dataset.aus is not None:
            cols.update({a: dataset.aus[:, k] for k, a in enumerate(dataset.au_names)})
        meta = {k: v for k, v in dataset.meta.items() if np.ndim(v) == 1}
        cols.update(meta)
        pd.DataFrame(cols).to_csv(tmp / "labels.csv", index=False)
        h, w = dataset.image_size
        (tmp / "README.txt").write_text(_README.format(
            name=dataset.name, n=n, h=h, w=w, classes=", ".join(dataset.classes),
            meta=", ".join(meta) or "none"))
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
