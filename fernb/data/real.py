"""Readers for the real datasets of the five papers, each in its official release layout, and
for the generic ``folder`` dataset (images plus ``labels.csv``, how users bring their own data
and what ``fernb data synth`` writes).

CK+ (ESR, Ferreira, Wadhawan), JAFFE (Ferreira, Wadhawan), SFEW 2.0 (Ferreira, Wadhawan, Gan),
FER-2013 (Ferreira, Gan), FER+ (ESR), RAF-DB (Gan, Zhou) and AffectNet (ESR, Zhou). Every reader
runs :func:`fernb.data.check.ensure_ok` first, then decodes every image completely (a
truncated file is refused, by path) and preprocesses it (:mod:`fernb.data.transforms`) into
one :class:`~fernb.data.datasets.FaceDataset` with the canonical class order of
:mod:`fernb.labels`. With ``cache_dir`` the preprocessed set is stored as ``.npz``, keyed by a
hash of the dataset name, its root and every preprocessing parameter.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from fernb.data.check import CheckReport, ensure_ok, landmark_columns
from fernb.data.datasets import FaceDataset, register_dataset
from fernb.data.transforms import CROPS, preprocess_face
from fernb.io import atomic_savez
from fernb.labels import EMOTIONS_7, EMOTIONS_8, FERPLUS_COLUMNS, class_set

CACHE_VERSION = 1
_ARRAY_FIELDS = ("images", "labels", "subjects", "landmarks", "mixtures", "valence_arousal",
                 "split")


class UnreadableImage(ValueError):
    """An image file that does not decode completely."""


def read_image(path: str | Path, *, grayscale: bool) -> np.ndarray:
    """Decode an image file completely to (H, W) grayscale or (H, W, 3) RGB uint8.

    Raises:
        UnreadableImage: the file is missing, not an image, or truncated (Pillow decodes
            every pixel; a partly decoded image is never returned).
    """
    try:
        with Image.open(path) as image:
            image.load()
            return np.asarray(image.convert("L" if grayscale else "RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UnreadableImage(f"{path}: {err or type(err).__name__}") from None


def _validate(size: int, crop: str | None = None) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size < 8:
        raise ValueError(f"size must be an int of at least 8 pixels, got {size!r}")
    if crop is not None and crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")


def cache_path(name: str, root: str | Path, params: dict[str, Any], cache_dir: str | Path) -> Path:
    """``cache_dir/<name>-<hash>.npz``, the hash covering name, resolved root and ``params``."""
    blob = json.dumps({"name": name, "root": str(Path(root).expanduser().resolve()),
                       "params": params, "version": CACHE_VERSION}, sort_keys=True, default=str)
    return Path(cache_dir) / f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}.npz"


def save_npz(dataset: FaceDataset, path: str | Path) -> Path:
    """Write a dataset's arrays (no transform) to ``path`` atomically."""
    arrays = {f: getattr(dataset, f) for f in _ARRAY_FIELDS if getattr(dataset, f) is not None}
    arrays |= {f"meta__{k}": v for k, v in dataset.meta.items()}
    arrays |= {"classes": np.array(dataset.classes), "name": np.array(dataset.name),
               "channels": np.array(dataset.channels)}
    return atomic_savez(path, **arrays)


def load_npz(path: str | Path) -> FaceDataset:
    """Read a dataset written by :func:`save_npz`."""
    with np.load(path, allow_pickle=False) as data:
        fields = {f: data[f] for f in _ARRAY_FIELDS if f in data.files}
        meta = {k.removeprefix("meta__"): data[k] for k in data.files if k.startswith("meta__")}
        return FaceDataset(**fields, meta=meta, classes=tuple(str(c) for c in data["classes"]),
                           name=str(data["name"]), channels=int(data["channels"]))


def _cached(name: str, root: str | Path | None, params: dict[str, Any],
            cache_dir: str | Path | None, build: Callable[[CheckReport], FaceDataset]) -> FaceDataset:
    report = ensure_ok(name, root)
    if cache_dir is None:
        return build(report)
    path = cache_path(name, report.root, params, cache_dir)
    if path.exists():
        return load_npz(path)
    dataset = build(report)
    save_npz(dataset, path)
    return dataset


def _faces(paths: Sequence[Path], *, size: int, crop: str, grayscale: bool, clahe: bool,
           margin: float, landmarks: Sequence[np.ndarray | None] | None = None,
           boxes: Sequence[Sequence[float]] | None = None, desc: str = ""
           ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Decode and preprocess images: (N, size, size[, 3]) uint8, (N, K, 2) landmarks or None,
    and the crop each image got. Raises listing every file that does not decode completely."""
    images, points, crops, unreadable = [], [], [], []
    for i, path in enumerate(tqdm(paths, desc=desc, leave=False, disable=len(paths) < 500)):
        try:
            image = read_image(path, grayscale=grayscale)
        except UnreadableImage as err:
            unreadable.append(str(err))
            continue
        face = preprocess_face(image, size=size, crop=crop, grayscale=grayscale, clahe=clahe,
                               margin=margin, landmarks=None if landmarks is None else landmarks[i],
                               box=None if boxes is None else boxes[i])
        images.append(face.image)
        points.append(face.landmarks)
        crops.append(face.crop)
    if unreadable:
        listed = "\n  ".join(unreadable[:10])
        more = f"\n  ... and {len(unreadable) - 10} more" if len(unreadable) > 10 else ""
        raise UnreadableImage(f"{len(unreadable)} image(s) do not decode completely; replace "
                              f"them or remove them from the labels:\n  {listed}{more}")
    lms = None if landmarks is None else np.stack(points).astype(np.float32)
    return np.stack(images), lms, np.array(crops)


def _labels(emotions: pd.Series, classes: tuple[str, ...]) -> np.ndarray:
    return np.array([classes.index(e) for e in emotions], dtype=np.int64)


@register_dataset("ckplus")
def ckplus(root: str | Path | None = None, *, size: int = 96, crop: str = "haar",
           grayscale: bool = True, clahe: bool = False, margin: float = 0.0, n_classes: int = 8,
           cache_dir: str | Path | None = None) -> FaceDataset:
    """Extended Cohn-Kanade (Lucey et al. 2010): the 327 sequences with an emotion label,
    first frame as neutral plus the last three frames with the sequence's emotion (1308 images,
    8 classes; ESR "Methodology", Ferreira Sec. IV-C, Wadhawan Sec. III).

    Subjects come from ``S###``; landmarks (68 points, AAM-tracked) from ``Landmarks/``;
    ``meta`` holds ``sequence``, ``frame`` and ``crop``. ``n_classes=7`` drops contempt.
    """
    _validate(size, crop)
    classes = class_set(n_classes)
    params = dict(size=size, crop=crop, grayscale=grayscale, clahe=clahe, margin=margin,
                  n_classes=n_classes)

    def build(report: CheckReport) -> FaceDataset:
        index = report.index[report.index["emotion"].isin(classes)].reset_index(drop=True)
        marks = [np.loadtxt(p, dtype=np.float32).reshape(68, 2) for p in index["landmarks_path"]]
        images, landmarks, crops = _faces(list(index["path"]), size=size, crop=crop,
                                          grayscale=grayscale, clahe=clahe, margin=margin,
                                          landmarks=marks, desc="ckplus")
        return FaceDataset(images, _labels(index["emotion"], classes), index["subject"].to_numpy(),
                           classes=classes, name="ckplus", landmarks=landmarks,
                           channels=1 if grayscale else 3,
                           meta={"sequence": index["sequence"].to_numpy(str),
                                 "frame": index["frame"].to_numpy(), "crop": crops})
    return _cached("ckplus", root, params, cache_dir, build)


@register_dataset("jaffe")
def jaffe(root: str | Path | None = None, *, size: int = 96, crop: str = "haar",
          grayscale: bool = True, clahe: bool = False, margin: float = 0.0,
          cache_dir: str | Path | None = None) -> FaceDataset:
    """JAFFE (Lyons et al. 1998): 213 images of 10 Japanese women, 7 classes; subject and
    expression from names like ``KA.AN1.39.tiff``; ``meta`` holds ``subject_code`` and ``crop``."""
    _validate(size, crop)
    classes = class_set(7)
    params = dict(size=size, crop=crop, grayscale=grayscale, clahe=clahe, margin=margin)

    def build(report: CheckReport) -> FaceDataset:
        return _from_index("jaffe", report.index, classes, params,
                           meta={"subject_code": report.index["subject_code"].to_numpy(str)})
    return _cached("jaffe", root, params, cache_dir, build)


@register_dataset("sfew")
def sfew(root: str | Path | None = None, *, size: int = 96, crop: str = "haar",
         grayscale: bool = False, clahe: bool = False, margin: float = 0.0,
         cache_dir: str | Path | None = None) -> FaceDataset:
    """SFEW 2.0 (Dhall et al. 2015): movie frames in ``Train/`` and ``Val/`` folders per
    expression, 7 classes; ``split`` is "train" or "val" (the test labels are withheld, so
    the papers report the validation set). No subject ids (-1)."""
    _validate(size, crop)
    classes = class_set(7)
    params = dict(size=size, crop=crop, grayscale=grayscale, clahe=clahe, margin=margin)

    def build(report: CheckReport) -> FaceDataset:
        index = report.index
        return _from_index("sfew", index, classes, params, split=index["split"].to_numpy(str),
                           meta={"file": np.array([p.name for p in index["path"]])})
    return _cached("sfew", root, params, cache_dir, build)


def _from_index(name: str, index: pd.DataFrame, classes: tuple[str, ...],
                params: dict[str, Any], *, meta: dict[str, np.ndarray],
                **fields: Any) -> FaceDataset:
    """Detect, crop and resize the faces of a folder-style dataset's index into a dataset."""
    images, _, crops = _faces(list(index["path"]), desc=name, **params)
    return FaceDataset(images, _labels(index["emotion"], classes), index["subject"].to_numpy(),
                       classes=classes, name=name, channels=1 if params["grayscale"] else 3,
                       meta={**meta, "crop": crops}, **fields)


def _fer_images(pixels: pd.Series, size: int, clahe: bool) -> np.ndarray:
    images = np.stack([np.asarray(p.split(), dtype=np.uint8).reshape(48, 48) for p in pixels])
    faces = [preprocess_face(img, size=size, crop="none", clahe=clahe).image for img in images]
    return np.stack(faces) if len(faces) else np.zeros((0, size, size), dtype=np.uint8)


@register_dataset("fer2013")
def fer2013(root: str | Path | None = None, *, size: int = 96, clahe: bool = False,
            cache_dir: str | Path | None = None) -> FaceDataset:
    """FER-2013 (Goodfellow et al. 2013): ``fer2013.csv`` with 48x48 grayscale pixels, 7 classes;
    ``Usage`` Training / PublicTest / PrivateTest becomes ``split`` train / val / test. Images
    are resized from 48 to ``size`` (pass ``size=48`` for the native resolution)."""
    _validate(size)
    classes = class_set(7)

    def build(report: CheckReport) -> FaceDataset:
        index = report.index
        return FaceDataset(_fer_images(index["pixels"], size, clahe),
                           _labels(index["emotion"], classes), index["subject"].to_numpy(),
                           classes=classes, name="fer2013", split=index["split"].to_numpy(str))
    return _cached("fer2013", root, dict(size=size, clahe=clahe), cache_dir, build)


@register_dataset("ferplus")
def ferplus(root: str | Path | None = None, *, size: int = 96, clahe: bool = False,
            n_classes: int = 8, cache_dir: str | Path | None = None) -> FaceDataset:
    """FER+ (Barsoum et al. 2016): the FER-2013 pixels of ``fer2013.csv`` relabelled by ten
    annotators in ``fer2013new.csv`` (matched by row order, as the FER+ README specifies).

    Labels are the majority vote of :func:`fernb.data.check.ferplus_votes` (rows whose majority
    is unknown, not-a-face, or no strict majority are dropped, as the FER+ and ESR code do);
    ``mixtures`` are the eight emotion vote counts normalised to sum to one, in canonical class
    order. ``n_classes=7`` drops contempt rows and renormalises the mixtures without it.
    """
    _validate(size)
    classes = class_set(n_classes)
    order = [FERPLUS_COLUMNS.index(c) for c in classes]

    def build(report: CheckReport) -> FaceDataset:
        index = report.index[report.index["emotion"].isin(classes)].reset_index(drop=True)
        votes = np.stack(index["mixture"]) if len(index) else np.zeros((0, 8), np.float32)
        mixtures = votes[:, order]
        mixtures = mixtures / mixtures.sum(axis=1, keepdims=True).clip(min=1e-12)
        return FaceDataset(_fer_images(index["pixels"], size, clahe),
                           _labels(index["emotion"], classes), index["subject"].to_numpy(),
                           classes=classes, name="ferplus", mixtures=mixtures.astype(np.float32),
                           split=index["split"].to_numpy(str),
                           meta={"image_name": index["image_name"].to_numpy(str)})
    params = dict(size=size, clahe=clahe, n_classes=n_classes)
    return _cached("ferplus", root, params, cache_dir, build)


def _read_landmarks5(path: Path) -> np.ndarray:
    lines = path.read_text().split("\n")[:5]
    return np.array([[float(v) for v in line.split()[:2]] for line in lines], dtype=np.float32)


@register_dataset("rafdb")
def rafdb(root: str | Path | None = None, *, size: int = 96, grayscale: bool = False,
          clahe: bool = False, cache_dir: str | Path | None = None) -> FaceDataset:
    """RAF-DB basic (Li et al. 2017): the 100x100 aligned faces ``Image/aligned/*_aligned.jpg``
    labelled by ``EmoLabel/list_patition_label.txt``, 7 classes, ``split`` train / test.

    ``meta["landmarks5"]`` (N, 5, 2) holds the manual eye centres, nose tip and mouth corners of
    ``Annotation/manual`` in the pixels of the *original* image (the aligned faces are a
    similarity warp of it); it is left out when those files are absent.
    """
    _validate(size)
    classes = class_set(7)

    def build(report: CheckReport) -> FaceDataset:
        index = report.index
        images, _, _ = _faces(list(index["path"]), size=size, crop="none", grayscale=grayscale,
                              clahe=clahe, margin=0.0, desc="rafdb")
        meta = {"image_name": index["image_name"].to_numpy(str)}
        if all(p.exists() for p in index["landmarks_path"]):
            meta["landmarks5"] = np.stack([_read_landmarks5(p) for p in index["landmarks_path"]])
        return FaceDataset(images, _labels(index["emotion"], classes), index["subject"].to_numpy(),
                           classes=classes, name="rafdb", split=index["split"].to_numpy(str),
                           channels=1 if grayscale else 3, meta=meta)
    params = dict(size=size, grayscale=grayscale, clahe=clahe)
    return _cached("rafdb", root, params, cache_dir, build)


@register_dataset("affectnet")
def affectnet(root: str | Path | None = None, *, size: int = 96, n_classes: int = 8,
              grayscale: bool = False, clahe: bool = False, margin: float = 0.0,
              max_per_class: int | None = None, seed: int = 0,
              cache_dir: str | Path | None = None) -> FaceDataset:
    """AffectNet (Mollahosseini et al. 2019), manually annotated part: ``training.csv`` as
    "train" and ``validation.csv`` as "val" (the papers' test set; the real test set is
    unreleased). Codes 8-10 (none, uncertain, no-face) are dropped, and contempt too for
    ``n_classes=7`` (AffectNet-7 / -8 of Zhou et al.). Each image is cropped to its face box,
    the 68 landmarks carried through the crop; ``valence_arousal`` comes from the CSV.

    Args:
        max_per_class: keep at most this many images per class and split, drawn at random
            with ``seed`` (ESR's code loads at most 5000 per class); None keeps all.
    """
    _validate(size)
    classes = class_set(n_classes)
    if max_per_class is not None and max_per_class < 1:
        raise ValueError(f"max_per_class must be a positive int or None, got {max_per_class!r}")
    params = dict(size=size, n_classes=n_classes, grayscale=grayscale, clahe=clahe,
                  margin=margin, max_per_class=max_per_class, seed=seed)

    def build(report: CheckReport) -> FaceDataset:
        index = report.index[report.index["emotion"].isin(classes)]
        if max_per_class is not None:
            shuffled = index.sample(frac=1.0, random_state=seed)
            keep = shuffled.groupby(["split", "emotion"]).cumcount() < max_per_class
            index = shuffled[keep].sort_index()
        index = index.reset_index(drop=True)
        marks = [np.asarray(s.split(";"), dtype=np.float32).reshape(68, 2)
                 for s in index["facial_landmarks"]]
        boxes = index[["face_x", "face_y", "face_width", "face_height"]].to_numpy(float)
        images, landmarks, _ = _faces(list(index["path"]), size=size, crop="box",
                                      grayscale=grayscale, clahe=clahe, margin=margin,
                                      landmarks=marks, boxes=boxes, desc="affectnet")
        return FaceDataset(images, _labels(index["emotion"], classes), index["subject"].to_numpy(),
                           classes=classes, name="affectnet", landmarks=landmarks,
                           valence_arousal=index[["valence", "arousal"]].to_numpy(np.float32),
                           split=index["split"].to_numpy(str), channels=1 if grayscale else 3,
                           meta={"file": np.array([str(p.relative_to(report.root))
                                                   for p in index["path"]])})
    return _cached("affectnet", root, params, cache_dir, build)


@register_dataset("folder")
def folder(root: str | Path | None = None, *, size: int = 96, crop: str = "none",
           grayscale: bool = True, clahe: bool = False, margin: float = 0.0,
           cache_dir: str | Path | None = None) -> FaceDataset:
    """Your own data: a folder of images with ``labels.csv`` (:func:`fernb.data.check._folder`
    documents the columns: path, label, subject; optional split, landmarks x0..y67, valence
    and arousal, and mixtures p_<emotion>). ``fernb data synth`` writes exactly this.

    Classes are the canonical 8 when any label is contempt, else the canonical 7, so a class
    index means the same emotion as in every other dataset. Images are resized to ``size``
    (``crop="haar"`` detects the face first), landmarks carried along.
    """
    _validate(size, crop)
    params = dict(size=size, crop=crop, grayscale=grayscale, clahe=clahe, margin=margin)

    def build(report: CheckReport) -> FaceDataset:
        index = report.index
        classes = EMOTIONS_8 if (index["emotion"] == "contempt").any() else EMOTIONS_7
        marks = landmark_columns()
        has_marks = all(c in index.columns for c in marks)
        points = ([row.reshape(68, 2) for row in index[marks].to_numpy(np.float32)]
                  if has_marks else None)
        images, landmarks, crops = _faces(list(index["path"]), landmarks=points, desc="folder",
                                          **params)
        fields: dict[str, Any] = {}
        if "split" in index.columns and set(index["split"]) != {"all"}:
            fields["split"] = index["split"].to_numpy(str)
        if {"valence", "arousal"} <= set(index.columns):
            fields["valence_arousal"] = index[["valence", "arousal"]].to_numpy(np.float32)
        mixture = [f"p_{c}" for c in classes]
        if all(c in index.columns for c in mixture):
            fields["mixtures"] = index[mixture].to_numpy(np.float32)
        return FaceDataset(images, _labels(index["emotion"], classes),
                           index["subject"].to_numpy(np.int64), classes=classes, name="folder",
                           landmarks=landmarks, channels=1 if grayscale else 3,
                           meta={"file": np.array([str(p.relative_to(report.root))
                                                   for p in index["path"]]), "crop": crops},
                           **fields)
    return _cached("folder", root, params, cache_dir, build)


READERS: dict[str, Callable[..., FaceDataset]] = {
    "ckplus": ckplus, "jaffe": jaffe, "sfew": sfew, "fer2013": fer2013, "ferplus": ferplus,
    "rafdb": rafdb, "affectnet": affectnet, "folder": folder,
}
__all__ = ["READERS", "cache_path", "load_npz", "read_image", "save_npz", *READERS]
