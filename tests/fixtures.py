"""Writers of tiny fixture datasets in each official release layout and file format.

Each ``write_<name>(root, ...)`` creates the dataset under ``root`` and returns the folder to
pass as the reader's ``root``. Images are small and deterministic; the FER+ votes of
:data:`FERPLUS_VOTES` carry their expected majority labels.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fernb.labels import AFFECTNET_CODES, JAFFE_CODES, RAFDB_CODES, SFEW_FOLDERS

JAFFE_SUBJECTS = ("KA", "KL", "KM", "KR", "MK", "NA", "NM", "TM", "UY", "YM")
FERPLUS_HEADER = ("Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,"
                  "contempt,unknown,NF")
# (votes: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF;
#  expected majority label or None when the row is dropped)
FERPLUS_VOTES: tuple[tuple[tuple[int, ...], str | None], ...] = (
    ((10, 0, 0, 0, 0, 0, 0, 0, 0, 0), "neutral"),
    ((0, 8, 1, 0, 0, 0, 0, 0, 1, 0), "happiness"),
    ((1, 0, 6, 0, 0, 0, 0, 3, 0, 0), "surprise"),
    ((0, 0, 0, 0, 0, 0, 0, 0, 0, 10), None),          # not a face: empty image name
    ((2, 0, 0, 0, 0, 0, 0, 0, 8, 0), None),           # majority unknown
    ((5, 5, 0, 0, 0, 0, 0, 0, 0, 0), None),           # no strict majority
    ((0, 0, 0, 0, 0, 0, 0, 7, 3, 0), "contempt"),
    ((1, 1, 1, 1, 4, 1, 1, 0, 0, 0), "anger"),        # majority only after single votes go
    ((0, 0, 0, 6, 0, 0, 4, 0, 0, 0), "sadness"),
    ((0, 0, 0, 0, 0, 7, 0, 0, 3, 0), "disgust"),
    ((0, 0, 0, 0, 0, 0, 9, 0, 1, 0), "fear"),
)


def _image(rng: np.random.Generator, h: int, w: int, channels: int = 1) -> np.ndarray:
    shape = (h, w) if channels == 1 else (h, w, channels)
    return rng.integers(40, 216, size=shape, dtype=np.uint8)


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}")


def ckplus_landmarks(width: int = 80, height: int = 60) -> np.ndarray:
    """A fixed (68, 2) face-like point set inside a ``width`` x ``height`` frame."""
    t = np.linspace(0.0, 1.0, 68, dtype=np.float32)
    x = width * (0.3 + 0.4 * t)
    y = height * (0.25 + 0.5 * np.abs(np.sin(np.pi * 3 * t)))
    return np.stack([x, y], axis=1)


def write_ckplus(root: str | Path, n_subjects: int = 3, n_sequences: int = 2,
                 n_frames: int = 5) -> Path:
    """CK+ layout: every subject gets ``n_sequences`` labelled sequences (codes cycling 1-7)
    plus one sequence without an emotion file; frames are 80x60 PNGs."""
    root = Path(root)
    rng = np.random.default_rng(0)
    points = ckplus_landmarks()
    for s in range(1, n_subjects + 1):
        subject = f"S{s * 5:03d}"
        for q in range(1, n_sequences + 2):
            seq = f"{q:03d}"
            for f in range(1, n_frames + 1):
                stem = f"{subject}_{seq}_{f:08d}"
                _write(root / "cohn-kanade-images" / subject / seq / f"{stem}.png",
                       _image(rng, 60, 80))
                lm = root / "Landmarks" / subject / seq / f"{stem}_landmarks.txt"
                lm.parent.mkdir(parents=True, exist_ok=True)
                lm.write_text("".join(f"   {x:.7e}   {y:.7e}\n" for x, y in points + f))
            if q <= n_sequences:
                code = 1 + ((s - 1) * n_sequences + q - 1) % 7
                emo = root / "Emotion" / subject / seq / f"{subject}_{seq}_{n_frames:08d}_emotion.txt"
                emo.parent.mkdir(parents=True, exist_ok=True)
                emo.write_text(f"   {code:.7e}\n")
    return root


def write_jaffe(root: str | Path, n_subjects: int = 2) -> Path:
    """JAFFE layout: one 64x64 ``SUBJECT.EXPR1.N.tiff`` per subject and expression."""
    root = Path(root)
    rng = np.random.default_rng(1)
    number = 1
    for subject in JAFFE_SUBJECTS[:n_subjects]:
        for expr in JAFFE_CODES:
            _write(root / f"{subject}.{expr}1.{number}.tiff", _image(rng, 64, 64))
            number += 1
    return root


def write_sfew(root: str | Path, n_train: int = 2, n_val: int = 1) -> Path:
    """SFEW 2.0 layout: ``Train/<Expression>/*.png`` and ``Val/<Expression>/*.png`` (64x64 RGB)."""
    root = Path(root)
    rng = np.random.default_rng(2)
    for split, n in (("Train", n_train), ("Val", n_val)):
        for folder in SFEW_FOLDERS:
            for i in range(n):
                _write(root / split / folder / f"{folder}_{i:03d}.png", _image(rng, 64, 64, 3))
    return root


def _fer_rows(n_per_split: int, rng: np.random.Generator) -> list[str]:
    rows = []
    for usage in ("Training", "PublicTest", "PrivateTest"):
        for i in range(n_per_split):
            pixels = " ".join(str(v) for v in _image(rng, 48, 48).ravel())
            rows.append(f"{i % 7},{pixels},{usage}")
    return rows


def write_fer2013(root: str | Path, n_per_split: int = 7) -> Path:
    """``fer2013.csv`` (emotion, pixels, Usage); codes cycle 0-6 in each of the three splits."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = _fer_rows(n_per_split, np.random.default_rng(3))
    (root / "fer2013.csv").write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    return root


def write_ferplus(root: str | Path) -> Path:
    """``fer2013.csv`` plus ``fer2013new.csv`` with :data:`FERPLUS_VOTES` in every split."""
    root = write_fer2013(root, n_per_split=len(FERPLUS_VOTES))
    lines, number = [FERPLUS_HEADER], 0
    for usage in ("Training", "PublicTest", "PrivateTest"):
        for votes, label in FERPLUS_VOTES:
            name = "" if votes[-1] == 10 else f"fer{number:07d}.png"
            lines.append(",".join([usage, name, *map(str, votes)]))
            number += 1
    (root / "fer2013new.csv").write_text("\n".join(lines) + "\n")
    return root


def rafdb_landmarks5(i: int) -> np.ndarray:
    """The manual 5 landmarks written for RAF-DB fixture image ``i``."""
    return np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], np.float32) + i


def write_rafdb(root: str | Path, n_train: int = 7, n_test: int = 7) -> Path:
    """RAF-DB basic layout: label list, 100x100 aligned JPEGs and manual annotations."""
    root = Path(root)
    rng = np.random.default_rng(4)
    lines, i = [], 0
    for split, n in (("train", n_train), ("test", n_test)):
        for k in range(1, n + 1):
            stem = f"{split}_{k:05d}" if split == "train" else f"{split}_{k:04d}"
            lines.append(f"{stem}.jpg {list(RAFDB_CODES)[(k - 1) % 7]}")
            _write(root / "Image" / "aligned" / f"{stem}_aligned.jpg", _image(rng, 100, 100, 3))
            attri = root / "Annotation" / "manual" / f"{stem}_manu_attri.txt"
            attri.parent.mkdir(parents=True, exist_ok=True)
            marks = "".join(f"{x:.2f}\t{y:.2f}\n" for x, y in rafdb_landmarks5(i))
            attri.write_text(marks + "0\n2\n1\n")
            i += 1
    label = root / "EmoLabel" / "list_patition_label.txt"
    label.parent.mkdir(parents=True, exist_ok=True)
    label.write_text("\n".join(lines) + "\n")
    return root


AFFECTNET_HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,"
                    "facial_landmarks,expression,valence,arousal")


def affectnet_row(i: int, code: int) -> tuple[str, tuple[int, int, int, int], np.ndarray,
                                              float, float]:
    """File, face box, (68, 2) landmarks, valence and arousal of AffectNet fixture row ``i``."""
    box = (10 + i % 3, 8, 40, 40)
    t = np.linspace(0.0, 1.0, 68, dtype=np.float32)
    points = np.stack([box[0] + 5 + 30 * t, box[1] + 5 + 30 * np.abs(np.sin(3 * t))], axis=1)
    valence, arousal = (-2.0, -2.0) if code >= 9 else (round(-0.9 + 0.02 * i, 3),
                                                       round(0.5 - 0.01 * i, 3))
    return f"{100 + i % 2}/img{i:04d}.jpg", box, points, valence, arousal


def write_affectnet(root: str | Path, n_train: int = 2, n_val: int = 1) -> Path:
    """AffectNet manual-annotation layout, 64x64 RGB JPEGs; ``n_train`` / ``n_val`` rows per
    code 0-10 (codes 8-10 are dropped by the reader). ``validation.csv`` has no header row, as
    in some releases."""
    root = Path(root)
    rng = np.random.default_rng(5)
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True, exist_ok=True)
    i = 0
    for name, n, header in (("training.csv", n_train, True), ("validation.csv", n_val, False)):
        lines = [AFFECTNET_HEADER] if header else []
        for code in [*AFFECTNET_CODES, 8, 9, 10]:
            for _ in range(n):
                file, box, points, valence, arousal = affectnet_row(i, code)
                _write(root / "Manually_Annotated_Images" / file, _image(rng, 64, 64, 3))
                marks = ";".join(f"{v:.2f}" for v in points.ravel())
                lines.append(f"{file},{box[0]},{box[1]},{box[2]},{box[3]},{marks},{code},"
                             f"{valence},{arousal}")
                i += 1
        (lists / name).write_text("\n".join(lines) + "\n")
    return root
