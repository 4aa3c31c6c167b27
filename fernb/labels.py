"""Canonical emotion classes, per-dataset label codes and the circumplex (valence, arousal).

Every dataset in fernb is mapped to one class order, AffectNet's (also used by ESR's code):
neutral, happiness, sadness, surprise, fear, disgust, anger, contempt. The 7-class set drops
contempt, so a class index means the same emotion in every chapter.
"""
from __future__ import annotations

EMOTIONS_8: tuple[str, ...] = (
    "neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt",
)
EMOTIONS_7: tuple[str, ...] = EMOTIONS_8[:7]

# Approximate circumplex positions in [-1, 1] (Russell; values in shared FACS notes).
CIRCUMPLEX: dict[str, tuple[float, float]] = {
    "neutral": (0.0, 0.0),
    "happiness": (0.8, 0.4),
    "sadness": (-0.7, -0.3),
    "surprise": (0.2, 0.8),
    "fear": (-0.6, 0.7),
    "disgust": (-0.7, 0.3),
    "anger": (-0.6, 0.6),
    "contempt": (-0.5, 0.2),
}

# Native label codes of each dataset -> canonical emotion names.
CKPLUS_CODES = {0: "neutral", 1: "anger", 2: "contempt", 3: "disgust", 4: "fear",
                5: "happiness", 6: "sadness", 7: "surprise"}
FER2013_CODES = {0: "anger", 1: "disgust", 2: "fear", 3: "happiness", 4: "sadness",
                 5: "surprise", 6: "neutral"}
RAFDB_CODES = {1: "surprise", 2: "fear", 3: "disgust", 4: "happiness", 5: "sadness",
               6: "anger", 7: "neutral"}
AFFECTNET_CODES = {0: "neutral", 1: "happiness", 2: "sadness", 3: "surprise", 4: "fear",
                   5: "disgust", 6: "anger", 7: "contempt"}
JAFFE_CODES = {"NE": "neutral", "HA": "happiness", "SA": "sadness", "SU": "surprise",
               "FE": "fear", "DI": "disgust", "AN": "anger"}
SFEW_FOLDERS = {"Neutral": "neutral", "Happy": "happiness", "Sad": "sadness",
                "Surprise": "surprise", "Fear": "fear", "Disgust": "disgust", "Angry": "anger"}
FERPLUS_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                   "contempt")


def class_set(n_classes: int) -> tuple[str, ...]:
    """Return the canonical 7- or 8-class tuple."""
    if n_classes == 8:
        return EMOTIONS_8
    if n_classes == 7:
        return EMOTIONS_7
    raise ValueError(f"n_classes must be 7 or 8, got {n_classes!r}")


def index_of(emotion: str, classes: tuple[str, ...] = EMOTIONS_8) -> int:
    """Index of an emotion name in a class tuple, with a helpful error."""
    try:
        return classes.index(emotion)
    except ValueError:
        raise ValueError(f"unknown emotion {emotion!r}; expected one of {list(classes)}") from None


def valence_arousal(mixture, classes: tuple[str, ...] = EMOTIONS_8, intensity: float = 1.0):
    """Mixture-weighted circumplex position scaled by intensity: returns (valence, arousal)."""
    v = sum(float(w) * CIRCUMPLEX[c][0] for w, c in zip(mixture, classes))
    a = sum(float(w) * CIRCUMPLEX[c][1] for w, c in zip(mixture, classes))
    return v * intensity, a * intensity
