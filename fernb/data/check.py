"""Layout check for the real datasets and the generic ``folder`` dataset: is everything where
it should be, and does every image decode?

``check_dataset(name, root)`` parses the dataset's label files into an index table (one row per
image the readers in :mod:`fernb.data.real` will load), lists missing files and folders,
images that do not decode completely (each by path; a truncated PNG or JPEG is caught),
labels that do not match an image, and compares class counts with the published split sizes in
:data:`PUBLISHED_SIZES`. Differing counts are warnings (a subset is a legitimate choice);
everything else is a problem. ``decode=False`` checks file signatures only: the runner uses it
before a chapter starts, so a wrong path fails in seconds, and the reader then decodes every
image and refuses the dataset if one is incomplete.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from fernb.labels import (AFFECTNET_CODES, CKPLUS_CODES, EMOTIONS_8, FER2013_CODES,
                          FERPLUS_COLUMNS, JAFFE_CODES, RAFDB_CODES, SFEW_FOLDERS)

# Published sizes: split -> class -> images ("total" where only the split size is published).
# CK+: Lucey et al. 2010, 327 labelled sequences x (first + last three frames) = 1308 images.
# JAFFE: Lyons et al. 1998, 213 images of 10 subjects. SFEW 2.0: Dhall et al. 2015 (the test
# labels are withheld). FER-2013: Goodfellow et al. 2013, Kaggle fer2013.csv. FER+: Barsoum et
# al. 2016, one fer2013new.csv row per fer2013.csv row (the majority vote then drops some).
# RAF-DB basic: Li et al. 2017. AffectNet manual annotations: Mollahosseini et al. 2019,
# Table 4 (training) and 500 validation images per class.
PUBLISHED_SIZES: dict[str, dict[str, dict[str, int]]] = {
    "ckplus": {"all": {"neutral": 327, "happiness": 207, "sadness": 84, "surprise": 249,
                       "fear": 75, "disgust": 177, "anger": 135, "contempt": 54}},
    "jaffe": {"all": {"neutral": 30, "happiness": 31, "sadness": 31, "surprise": 30,
                      "fear": 32, "disgust": 29, "anger": 30}},
    "sfew": {"train": {"total": 958}, "val": {"total": 436}},
    "fer2013": {
        "train": {"neutral": 4965, "happiness": 7215, "sadness": 4830, "surprise": 3171,
                  "fear": 4097, "disgust": 436, "anger": 3995},
        "val": {"neutral": 607, "happiness": 895, "sadness": 653, "surprise": 415,
                "fear": 496, "disgust": 56, "anger": 467},
        "test": {"neutral": 626, "happiness": 879, "sadness": 594, "surprise": 416,
                 "fear": 528, "disgust": 55, "anger": 491},
    },
    "ferplus": {"train": {"rows": 28709}, "val": {"rows": 3589}, "test": {"rows": 3589}},
    "rafdb": {
        "train": {"neutral": 2524, "happiness": 4772, "sadness": 1982, "surprise": 1290,
                  "fear": 281, "disgust": 717, "anger": 705},
        "test": {"neutral": 680, "happiness": 1185, "sadness": 478, "surprise": 329,
                 "fear": 74, "disgust": 160, "anger": 162},
    },
    "affectnet": {
        "train": {"neutral": 74874, "happiness": 134415, "sadness": 25459, "surprise": 14090,
                  "fear": 6378, "disgust": 3803, "anger": 24882, "contempt": 3750},
        "val": {name: 500 for name in EMOTIONS_8},
    },
}

FER_USAGE = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
AFFECTNET_COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
                     "facial_landmarks", "expression", "valence", "arousal")
_SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
_MAX_LISTED = 10


@dataclass
class CheckReport:
    """Result of :func:`check_dataset`.

    Attributes:
        name: dataset name.
        root: the folder that was checked.
        decode: whether every image was decoded (else file signatures only).
        problems: what must be fixed before the dataset can be read.
        warnings: differences worth knowing (e.g. class counts of a subset).
        summary: ``{split: {"count": n, "classes": {class: [found, published]}}}``.
        index: one row per image the reader will load (columns depend on the dataset).
    """

    name: str
    root: Path
    decode: bool = True
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    index: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        """Human-readable report: status, problems, warnings and per-split class counts."""
        status = "OK" if self.ok else f"FAILED ({len(self.problems)} problem(s))"
        lines = [f"dataset {self.name!r} at {self.root}: {status}"]
        lines += [f"  problem: {p}" for p in self.problems]
        lines += [f"  warning: {w}" for w in self.warnings]
        for split, info in self.summary.items():
            lines.append(f"  {split}: {info['count']} images")
            for cls, (found, published) in info["classes"].items():
                ref = "" if published is None else f" (published {published})"
                lines.append(f"    {cls:<10} {found}{ref}")
        return "\n".join(lines)


def _listing(items: Iterable[Any]) -> str:
    items = [str(i) for i in items]
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


def decode_problem(path: str | Path) -> str | None:
    """Why ``path`` does not decode completely (missing, not an image, truncated), or None.
    Pillow decodes every pixel and raises on a truncated PNG or JPEG, where OpenCV would
    return a partly grey image with only a warning on stderr."""
    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return str(err) or type(err).__name__
    return None


def unreadable_images(paths: Iterable[Path], *, decode: bool = True) -> list[Path]:
    """Files that are missing or empty, lack a PNG/JPEG/TIFF/BMP signature, or (with
    ``decode``) do not decode completely."""
    bad = []
    for path in paths:
        try:
            with open(path, "rb") as fh:
                head = fh.read(4)
        except OSError:
            bad.append(path)
            continue
        if not head.startswith(_SIGNATURES) or (decode and decode_problem(path) is not None):
            bad.append(path)
    return bad


def _require(report: CheckReport, paths: dict[str, Path], hint: str) -> bool:
    missing = [label for label, p in paths.items() if not p.exists()]
    if missing:
        report.problems.append(f"missing {_listing(missing)} under {report.root}; {hint}")
    return not missing


def _check_images(report: CheckReport, paths: Iterable[Path]) -> None:
    bad = unreadable_images(paths, decode=report.decode)
    if bad:
        what = "do not decode completely (missing, not an image, or truncated)" \
            if report.decode else "are not readable images"
        report.problems.append(f"{len(bad)} image(s) {what}: "
                               f"{_listing(p.relative_to(report.root) for p in bad)}")


def _ckplus(report: CheckReport) -> pd.DataFrame:
    root = report.root
    if not _require(report, {d: root / d for d in ("cohn-kanade-images", "Emotion", "Landmarks")},
                    "unpack extended-cohn-kanade-images.zip, Emotion_labels.zip and "
                    "Landmarks.zip into one folder and pass that folder"):
        return pd.DataFrame()
    rows, orphans, bad_codes, short, no_peak = [], [], [], [], []
    for emo_file in sorted((root / "Emotion").glob("S*/*/*_emotion.txt")):
        subject, sequence = emo_file.parent.parent.name, emo_file.parent.name
        rel = emo_file.relative_to(root)
        try:
            code = int(float(emo_file.read_text().split()[0]))
        except (ValueError, IndexError):
            code = -1
        if code not in CKPLUS_CODES or code == 0:
            bad_codes.append(rel)
            continue
        folder = root / "cohn-kanade-images" / subject / sequence
        frames = sorted(folder.glob("*.png"))
        if not frames:
            orphans.append(rel)
            continue
        # The emotion file names the peak frame: S005_001_00000011_emotion.txt -> frame 11.
        peak = folder / emo_file.name.replace("_emotion.txt", ".png")
        if peak not in frames:
            no_peak.append(f"{peak.relative_to(root)} (named by {rel.name})")
            continue
        frames = frames[:frames.index(peak) + 1]
        if len(frames) < 4:
            short.append(f"{subject}/{sequence}")
            continue
        for frame, emotion in zip([frames[0], *frames[-3:]], ["neutral"] + [CKPLUS_CODES[code]] * 3):
            rows.append({"path": frame, "emotion": emotion, "subject": int(subject[1:]),
                         "split": "all", "sequence": f"{subject}_{sequence}",
                         "frame": int(frame.stem.rsplit("_", 1)[-1]),
                         "landmarks_path": root / "Landmarks" / subject / sequence
                         / f"{frame.stem}_landmarks.txt"})
    if bad_codes:
        report.problems.append(f"{len(bad_codes)} emotion file(s) without a code 1-7: "
                               f"{_listing(bad_codes)}")
    if orphans:
        report.problems.append(f"{len(orphans)} emotion file(s) whose image sequence is missing "
                               f"in cohn-kanade-images: {_listing(orphans)}")
    if no_peak:
        report.problems.append(f"{len(no_peak)} peak frame(s) named by an emotion file are "
                               f"missing, so the last three frames cannot be labelled: "
                               f"{_listing(no_peak)}")
    if short:
        report.problems.append(f"{len(short)} sequence(s) with fewer than 4 frames up to the "
                               f"peak: {_listing(short)}")
    index = pd.DataFrame(rows)
    if index.empty:
        report.problems.append("no labelled sequences found (Emotion/S###/###/*_emotion.txt)")
        return index
    no_lm = [p.relative_to(root) for p in index["landmarks_path"] if not p.exists()]
    if no_lm:
        report.problems.append(f"{len(no_lm)} landmark file(s) missing: {_listing(no_lm)}")
    _check_images(report, index["path"])
    return index


_JAFFE_NAME = re.compile(r"^([A-Z]{2})\.([A-Z]{2})\d*\.(\d+)\.tiff?$", re.IGNORECASE)


def _jaffe(report: CheckReport) -> pd.DataFrame:
    root = report.root
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in {".tiff", ".tif"})
    if not files:
        nested = [d for d in root.iterdir() if d.is_dir() and any(d.glob("*.tiff"))]
        hint = f"; the images are in {nested[0]}: pass that folder" if nested else ""
        report.problems.append(f"no JAFFE .tiff images (e.g. KA.AN1.39.tiff) in {root}{hint}")
        return pd.DataFrame()
    rows, unparsed = [], []
    for path in files:
        match = _JAFFE_NAME.match(path.name)
        if match is None or match.group(2).upper() not in JAFFE_CODES:
            unparsed.append(path.name)
            continue
        rows.append({"path": path, "emotion": JAFFE_CODES[match.group(2).upper()],
                     "subject_code": match.group(1).upper(), "split": "all"})
    if unparsed:
        report.problems.append(f"{len(unparsed)} file name(s) not of the form SUBJECT.EXPR#.N.tiff "
                               f"with EXPR in {sorted(JAFFE_CODES)}: {_listing(unparsed)}")
    index = pd.DataFrame(rows)
    if not index.empty:
        codes = sorted(index["subject_code"].unique())
        index["subject"] = index["subject_code"].map({c: i for i, c in enumerate(codes)})
        _check_images(report, index["path"])
    return index


def _sfew(report: CheckReport) -> pd.DataFrame:
    root = report.root
    if not _require(report, {"Train/": root / "Train", "Val/": root / "Val"},
                    "unpack Train.zip and Val.zip of SFEW 2.0 into one folder"):
        return pd.DataFrame()
    rows, unknown = [], []
    for split_dir, split in (("Train", "train"), ("Val", "val")):
        for folder in sorted(p for p in (root / split_dir).iterdir() if p.is_dir()):
            if folder.name not in SFEW_FOLDERS:
                unknown.append(f"{split_dir}/{folder.name}")
                continue
            rows += [{"path": p, "emotion": SFEW_FOLDERS[folder.name], "subject": -1,
                      "split": split} for p in sorted(folder.iterdir())
                     if p.suffix.lower() in _IMAGE_SUFFIXES]
    if unknown:
        report.problems.append(f"unknown expression folder(s) {_listing(unknown)}; expected "
                               f"{sorted(SFEW_FOLDERS)}")
    index = pd.DataFrame(rows)
    if index.empty:
        report.problems.append("no images in Train/<Expression>/ or Val/<Expression>/")
    else:
        _check_images(report, index["path"])
    return index


def read_fer_csv(path: Path) -> pd.DataFrame:
    """Read a FER-2013 style CSV with column names stripped of spaces."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.columns = [c.strip() for c in frame.columns]
    return frame


def _fer_pixels(report: CheckReport, frame: pd.DataFrame) -> pd.Series:
    counts = frame["pixels"].str.strip().str.split().str.len()
    bad = np.flatnonzero(counts.to_numpy() != 48 * 48)
    if len(bad):
        report.problems.append(f"{len(bad)} unreadable image(s): rows whose pixels are not "
                               f"2304 values (CSV data rows {_listing(bad + 1)})")
    return counts == 48 * 48


def _fer2013(report: CheckReport) -> pd.DataFrame:
    path = report.root / "fer2013.csv"
    if not _require(report, {"fer2013.csv": path}, "download fer2013.csv (Kaggle, ICML 2013 "
                    "challenges in representation learning) into this folder"):
        return pd.DataFrame()
    frame = read_fer_csv(path)
    missing = {"emotion", "pixels", "Usage"} - set(frame.columns)
    if missing:
        report.problems.append(f"fer2013.csv lacks column(s) {sorted(missing)}; found "
                               f"{list(frame.columns)}")
        return pd.DataFrame()
    _fer_pixels(report, frame)
    codes = pd.to_numeric(frame["emotion"], errors="coerce")
    bad = np.flatnonzero(~codes.isin(list(FER2013_CODES)).to_numpy())
    if len(bad):
        report.problems.append(f"{len(bad)} row(s) with an emotion code outside 0-6: "
                               f"{_listing(bad + 1)}")
    usage = frame["Usage"].str.strip()
    if not usage.isin(list(FER_USAGE)).all():
        report.problems.append(f"Usage values {sorted(set(usage) - set(FER_USAGE))} are not "
                               f"one of {list(FER_USAGE)}")
    return pd.DataFrame({"emotion": codes.map(FER2013_CODES), "subject": -1,
                         "split": usage.map(FER_USAGE), "pixels": frame["pixels"]})


def ferplus_votes(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FER+ majority vote (Barsoum et al. 2016; the FER+ and ESR reference code).

    Votes of a single annotator are removed as outliers; a row gets the class holding more
    than half of the remaining votes; rows without such a majority, or whose majority is
    ``unknown`` or ``NF`` (not a face), get -1.

    Args:
        votes: (N, 10) vote counts in the fer2013new.csv column order (8 emotions, unknown, NF).
    Returns:
        (N,) column index of the majority (0-7) or -1, and (N, 8) normalised emotion votes.
    """
    votes = np.asarray(votes, dtype=np.float64)
    kept = np.where(votes > 1, votes, 0.0)
    top = kept.argmax(axis=1)
    strict = kept.max(axis=1) > 0.5 * kept.sum(axis=1)
    label = np.where(strict & (top < 8), top, -1)
    emotion = votes[:, :8]
    total = emotion.sum(axis=1, keepdims=True)
    mixture = np.divide(emotion, total, out=np.zeros_like(emotion), where=total > 0)
    return label, mixture.astype(np.float32)


def _ferplus(report: CheckReport) -> pd.DataFrame:
    root = report.root
    if not _require(report, {"fer2013.csv": root / "fer2013.csv",
                             "fer2013new.csv": root / "fer2013new.csv"},
                    "put fer2013.csv (Kaggle) and fer2013new.csv (github.com/microsoft/FERPlus) "
                    "side by side in this folder"):
        return pd.DataFrame()
    fer, new = read_fer_csv(root / "fer2013.csv"), read_fer_csv(root / "fer2013new.csv")
    expected = ["Usage", "Image name", *FERPLUS_COLUMNS, "unknown", "NF"]
    missing = [c for c in expected if c not in new.columns] + \
        [c for c in ("pixels", "Usage") if c not in fer.columns]
    if missing:
        report.problems.append(f"missing column(s) {missing}; fer2013new.csv needs {expected}, "
                               f"fer2013.csv needs pixels and Usage")
        return pd.DataFrame()
    if len(fer) != len(new):
        report.problems.append(f"fer2013new.csv has {len(new)} rows but fer2013.csv has "
                               f"{len(fer)}; FER+ labels match images by row order")
        return pd.DataFrame()
    differ = np.flatnonzero(fer["Usage"].str.strip().to_numpy() != new["Usage"].str.strip().to_numpy())
    if len(differ):
        report.problems.append(f"{len(differ)} row(s) whose Usage differs between the two CSV "
                               f"files (rows {_listing(differ + 1)}): are they the same release?")
    _fer_pixels(report, fer)
    votes = new[[*FERPLUS_COLUMNS, "unknown", "NF"]].apply(pd.to_numeric, errors="coerce")
    if votes.isna().any().any():
        report.problems.append("fer2013new.csv holds vote counts that are not numbers")
        return pd.DataFrame()
    label, mixture = ferplus_votes(votes.to_numpy())
    usage = new["Usage"].str.strip().map(FER_USAGE)
    index = pd.DataFrame({"emotion": [FERPLUS_COLUMNS[i] if i >= 0 else None for i in label],
                          "subject": -1, "split": usage, "pixels": fer["pixels"],
                          "image_name": new["Image name"]})
    index["mixture"] = list(mixture)
    for split, rows in PUBLISHED_SIZES["ferplus"].items():
        n = int((usage == split).sum())
        if n != rows["rows"]:
            report.warnings.append(f"{split}: {n} CSV rows, published {rows['rows']}")
    return index[index["emotion"].notna()].reset_index(drop=True)


def _rafdb(report: CheckReport) -> pd.DataFrame:
    root = report.root
    label_file = root / "EmoLabel" / "list_patition_label.txt"
    if not _require(report, {"EmoLabel/list_patition_label.txt": label_file,
                             "Image/aligned/": root / "Image" / "aligned"},
                    "unpack the RAF-DB basic release (EmoLabel/, Image/aligned/, Annotation/)"):
        return pd.DataFrame()
    rows, bad_lines = [], []
    for number, line in enumerate(label_file.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) not in RAFDB_CODES:
            bad_lines.append(number)
            continue
        stem = Path(parts[0]).stem
        rows.append({"path": root / "Image" / "aligned" / f"{stem}_aligned.jpg",
                     "emotion": RAFDB_CODES[int(parts[1])], "subject": -1,
                     "split": stem.split("_")[0], "image_name": parts[0],
                     "landmarks_path": root / "Annotation" / "manual" / f"{stem}_manu_attri.txt"})
    if bad_lines:
        report.problems.append(f"{len(bad_lines)} line(s) of list_patition_label.txt are not "
                               f"'NAME CODE' with CODE 1-7: lines {_listing(bad_lines)}")
    index = pd.DataFrame(rows)
    if index.empty:
        report.problems.append("list_patition_label.txt lists no images")
        return index
    odd = sorted(set(index["split"]) - {"train", "test"})
    if odd:
        report.problems.append(f"image names must start with train_ or test_, found {odd}")
    missing = [p.relative_to(root) for p in index["path"] if not p.exists()]
    if missing:
        report.problems.append(f"{len(missing)} labelled image(s) missing: {_listing(missing)}")
    else:
        _check_images(report, index["path"])
    listed = {p.name for p in index["path"]}
    extra = [p.name for p in (root / "Image" / "aligned").glob("*.jpg") if p.name not in listed]
    if extra:
        report.warnings.append(f"{len(extra)} aligned image(s) without a label: {_listing(extra)}")
    no_lm = int((~index["landmarks_path"].map(Path.exists)).sum())
    if no_lm:
        report.warnings.append(f"{no_lm} image(s) without Annotation/manual/*_manu_attri.txt: "
                               f"meta['landmarks5'] is left out")
    return index


def read_affectnet_csv(path: Path) -> pd.DataFrame:
    """Read an AffectNet file list; validation.csv is released with or without a header row."""
    with open(path) as fh:
        has_header = fh.readline().startswith(AFFECTNET_COLUMNS[0])
    return pd.read_csv(path, header=0 if has_header else None,
                       names=None if has_header else list(AFFECTNET_COLUMNS),
                       dtype={"subDirectory_filePath": str, "facial_landmarks": str})


def _affectnet(report: CheckReport) -> pd.DataFrame:
    root = report.root
    lists = root / "Manually_Annotated_file_lists"
    if not _require(report, {"Manually_Annotated_file_lists/training.csv": lists / "training.csv",
                             "Manually_Annotated_file_lists/validation.csv": lists / "validation.csv",
                             "Manually_Annotated_Images/": root / "Manually_Annotated_Images"},
                    "unpack the AffectNet manually annotated release into one folder"):
        return pd.DataFrame()
    frames = []
    for split, name in (("train", "training.csv"), ("val", "validation.csv")):
        frame = read_affectnet_csv(lists / name)
        missing = set(AFFECTNET_COLUMNS) - set(frame.columns)
        if missing:
            report.problems.append(f"{name} lacks column(s) {sorted(missing)}")
            return pd.DataFrame()
        frames.append(frame.assign(split=split))
    frame = pd.concat(frames, ignore_index=True)
    frame = frame[frame["expression"].isin(list(AFFECTNET_CODES))].reset_index(drop=True)
    paths = [root / "Manually_Annotated_Images" / p for p in frame["subDirectory_filePath"]]
    exists = np.array([p.exists() for p in paths], dtype=bool)
    if not exists.all():
        report.problems.append(f"{int((~exists).sum())} listed image(s) missing under "
                               f"Manually_Annotated_Images/: "
                               f"{_listing(frame['subDirectory_filePath'][~exists])}")
    else:
        _check_images(report, paths)
    n_points = frame["facial_landmarks"].fillna("").str.count(";") + 1
    bad = frame["subDirectory_filePath"][n_points.to_numpy() != 136]
    if len(bad):
        report.problems.append(f"{len(bad)} row(s) whose facial_landmarks are not 136 "
                               f"';'-separated values: {_listing(bad)}")
    return pd.DataFrame({"path": paths, "emotion": frame["expression"].map(AFFECTNET_CODES),
                         "subject": -1, "split": frame["split"],
                         **{c: frame[c] for c in AFFECTNET_COLUMNS[1:6]},
                         "valence": frame["valence"].astype(float),
                         "arousal": frame["arousal"].astype(float)})


FOLDER_LABELS = "labels.csv"
FOLDER_REQUIRED = ("path", "label", "subject")
FOLDER_SPLITS = ("train", "val", "test")


def landmark_columns(n: int = 68) -> list[str]:
    """The ``folder`` layout's landmark columns: x0, y0, x1, y1, ... (pixels)."""
    return [c for k in range(n) for c in (f"x{k}", f"y{k}")]


def _folder(report: CheckReport) -> pd.DataFrame:
    """Images anywhere under the folder plus ``labels.csv``: path (relative to the folder),
    label (an emotion name of :data:`fernb.labels.EMOTIONS_8`), subject (an integer) and,
    optionally, split (train/val/test), landmarks x0..x67, y0..y67 (pixels of the image) and
    valence, arousal (in [-1, 1])."""
    root = report.root
    csv = root / FOLDER_LABELS
    if not _require(report, {FOLDER_LABELS: csv}, "write a labels.csv with the columns "
                    f"{', '.join(FOLDER_REQUIRED)} (and optionally split, x0..y67, valence, "
                    "arousal) next to the images, or export one with `fernb data synth`"):
        return pd.DataFrame()
    frame = pd.read_csv(csv, dtype={"path": str, "label": str, "split": str})
    missing = [c for c in FOLDER_REQUIRED if c not in frame.columns]
    if missing:
        report.problems.append(f"{FOLDER_LABELS} lacks column(s) {missing}; it has "
                               f"{list(frame.columns)}")
        return pd.DataFrame()
    if frame.empty:
        report.problems.append(f"{FOLDER_LABELS} lists no images")
        return pd.DataFrame()
    rows = frame.index + 2  # CSV line numbers (header is line 1)
    bad_label = ~frame["label"].isin(EMOTIONS_8)
    if bad_label.any():
        report.problems.append(f"{int(bad_label.sum())} label(s) are not one of "
                               f"{list(EMOTIONS_8)}: lines {_listing(rows[bad_label])}")
    subject = pd.to_numeric(frame["subject"], errors="coerce")
    bad_subject = subject.isna() | (subject != subject.round())
    if bad_subject.any():
        report.problems.append(f"{int(bad_subject.sum())} subject value(s) are not integers: "
                               f"lines {_listing(rows[bad_subject])}")
    if "split" in frame.columns:
        bad_split = ~frame["split"].isin(FOLDER_SPLITS)
        if bad_split.any():
            report.problems.append(f"{int(bad_split.sum())} split value(s) are not one of "
                                   f"{list(FOLDER_SPLITS)}: lines {_listing(rows[bad_split])}")
    marks = landmark_columns()
    present = [c for c in marks if c in frame.columns]
    if present and len(present) != len(marks):
        report.problems.append(f"landmark columns must be all of x0, y0 .. x67, y67 or none; "
                               f"{len(present)} of {len(marks)} found")
    elif present and not np.isfinite(frame[marks].to_numpy(dtype=float)).all():
        bad = ~np.isfinite(frame[marks].to_numpy(dtype=float)).all(axis=1)
        report.problems.append(f"{int(bad.sum())} row(s) with missing landmark values: "
                               f"lines {_listing(rows[bad])}")
    affect = [c for c in ("valence", "arousal") if c in frame.columns]
    if len(affect) == 1:
        report.problems.append("give both valence and arousal, or neither")
    elif affect:
        va = frame[["valence", "arousal"]].to_numpy(dtype=float)
        bad = ~(np.isfinite(va) & (np.abs(va) <= 1)).all(axis=1)
        if bad.any():
            report.problems.append(f"{int(bad.sum())} valence/arousal value(s) outside "
                                   f"[-1, 1]: lines {_listing(rows[bad])}")
    paths = [root / p for p in frame["path"]]
    exists = np.array([p.is_file() for p in paths])
    if not exists.all():
        report.problems.append(f"{int((~exists).sum())} listed image(s) missing: "
                               f"{_listing(frame['path'][~exists])}")
    else:
        _check_images(report, paths)
    index = pd.DataFrame({"path": paths, "emotion": frame["label"], "subject": subject,
                          "split": frame["split"] if "split" in frame.columns else "all"})
    return pd.concat([index, frame.drop(columns=[c for c in index if c in frame])], axis=1)


LAYOUTS: dict[str, Callable[[CheckReport], pd.DataFrame]] = {
    "ckplus": _ckplus, "jaffe": _jaffe, "sfew": _sfew, "fer2013": _fer2013,
    "ferplus": _ferplus, "rafdb": _rafdb, "affectnet": _affectnet, "folder": _folder,
}


def _summarise(report: CheckReport) -> None:
    published = PUBLISHED_SIZES.get(report.name, {})
    index = report.index if not report.index.empty else pd.DataFrame(columns=["split", "emotion"])
    order = {"all": 0, "train": 1, "val": 2, "test": 3}
    for split in sorted(set(index["split"]) | set(published), key=lambda s: (order.get(s, 4), s)):
        rows = index[index["split"] == split]
        ref = published.get(split, {})
        counts = rows["emotion"].value_counts().to_dict()
        classes = {c: [int(counts.get(c, 0)), ref.get(c)] for c in EMOTIONS_8
                   if c in counts or c in ref}
        report.summary[split] = {"count": len(rows), "classes": classes}
        total = ref.get("total", sum(v for k, v in ref.items() if k in EMOTIONS_8))
        differ = any(p is not None and f != p for f, p in classes.values())
        if (total and total != len(rows)) or differ:
            report.warnings.append(f"{split}: {len(rows)} images, published {total} (class "
                                   f"counts below); fine for a deliberate subset")


# What each layout needs at its top level, for a root that is not a folder at all.
NEEDS: dict[str, str] = {
    "ckplus": "cohn-kanade-images/, Emotion/ and Landmarks/",
    "jaffe": "the .tiff images (e.g. KA.AN1.39.tiff)",
    "sfew": "Train/ and Val/, one subfolder per expression",
    "fer2013": "fer2013.csv",
    "ferplus": "fer2013.csv and fer2013new.csv",
    "rafdb": "EmoLabel/list_patition_label.txt and Image/aligned/",
    "affectnet": "Manually_Annotated_file_lists/ and Manually_Annotated_Images/",
    "folder": "labels.csv and the images it lists",
}


def check_dataset(name: str, root: str | Path | None, *, decode: bool = True) -> CheckReport:
    """Check a dataset's folder against its layout.

    Args:
        name: one of :data:`LAYOUTS` ("ckplus", "jaffe", "sfew", "fer2013", "ferplus",
            "rafdb", "affectnet", "folder").
        root: the folder holding the unpacked release (see the book page "Running on the
            real datasets" for each expected tree).
        decode: decode every image (slow on large sets); False checks file signatures only.
    Returns:
        A :class:`CheckReport`; ``report.ok`` is False when something must be fixed.
    """
    if name not in LAYOUTS:
        raise ValueError(f"unknown dataset layout {name!r}; expected one of {sorted(LAYOUTS)}")
    if root is None:
        raise ValueError(f"dataset {name!r} needs its folder: pass root=/path/to/{name} "
                         f"(or -p data_root /path/to/{name})")
    report = CheckReport(name=name, root=Path(root).expanduser().resolve(), decode=decode)
    if not report.root.is_dir():
        report.problems.append(f"{report.root} is not a folder; pass the folder that holds "
                               f"{NEEDS[name]}")
        return report
    report.index = LAYOUTS[name](report)
    _summarise(report)
    return report


def ensure_ok(name: str, root: str | Path | None, *, decode: bool = False) -> CheckReport:
    """Run :func:`check_dataset` and raise ``ValueError`` with the formatted report if not ok
    (the readers decode every image themselves and refuse incomplete ones)."""
    report = check_dataset(name, root, decode=decode)
    if not report.ok:
        raise ValueError(f"the {name} layout check failed; fix the problems below "
                         f"(or run `fernb data check {name} --root DIR`):\n{report.format()}")
    return report
