"""One dataset type for every source (synthetic and real) and a registry of loaders.

A :class:`FaceDataset` holds whole arrays (images, labels, subjects and optional metadata), so
splits are index arrays and a subset is a cheap copy. ``__getitem__`` returns
``(image, target)``: the image as a float tensor (C, H, W) in [0, 1] after the optional
``transform``, the target chosen by ``target`` ("label", "mixtures" or "valence_arousal").
"""
from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from fernb.labels import EMOTIONS_8

TARGETS = ("label", "mixtures", "valence_arousal")


@dataclass
class FaceDataset(Dataset):
    """Face images with canonical labels and per-sample metadata.

    Attributes:
        images: (N, H, W) uint8 grayscale or (N, H, W, 3) uint8 RGB.
        labels: (N,) int64 indices into ``classes``.
        subjects: (N,) int64 subject ids (``-1`` where a dataset has none).
        classes: class names in canonical order (see :mod:`fernb.labels`).
        name: dataset name, e.g. ``"synth-lab"`` or ``"ckplus"``.
        landmarks: (N, 68, 2) float32 pixel (x, y), or None.
        aus: (N, n_aus) float32 action-unit intensities in [0, 1], or None.
        au_names: names of the ``aus`` columns, e.g. ``("AU1", "AU2", ...)``.
        mixtures: (N, C) float32 emotion distributions (rows sum to 1), or None.
        valence_arousal: (N, 2) float32 in [-1, 1], or None.
        masks: (N, H, W) uint8 evidence-region masks (1 = the expression shows here), or None.
        split: (N,) official partition names ("train", "val", "test") or None.
        meta: dict of extra (N,) arrays, e.g. ``{"sequence": ..., "frame": ...}``.
        transform: callable applied to the (C, H, W) float tensor in ``__getitem__``.
        target: what ``__getitem__`` returns as target, one of :data:`TARGETS`.
        channels: 1 or 3; grayscale images are repeated to 3 channels when 3.
    """

    images: np.ndarray
    labels: np.ndarray
    subjects: np.ndarray
    classes: tuple[str, ...] = EMOTIONS_8
    name: str = "unnamed"
    landmarks: np.ndarray | None = None
    aus: np.ndarray | None = None
    au_names: tuple[str, ...] = ()
    mixtures: np.ndarray | None = None
    valence_arousal: np.ndarray | None = None
    masks: np.ndarray | None = None
    split: np.ndarray | None = None
    meta: dict[str, np.ndarray] = field(default_factory=dict)
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    target: str = "label"
    channels: int = 1

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim not in (3, 4):
            raise ValueError(
                f"images must be uint8 of shape (N, H, W) or (N, H, W, 3); got "
                f"{self.images.dtype} {self.images.shape}")
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.subjects = np.asarray(self.subjects, dtype=np.int64)
        for key in ("labels", "subjects", "landmarks", "aus", "mixtures", "valence_arousal",
                    "masks", "split"):
            value = getattr(self, key)
            if value is not None and len(value) != n:
                raise ValueError(f"{key} has {len(value)} rows but there are {n} images")
        for key, value in self.meta.items():
            if len(value) != n:
                raise ValueError(f"meta[{key!r}] has {len(value)} rows but there are {n} images")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise ValueError(f"labels must lie in [0, {len(self.classes) - 1}] for classes "
                             f"{list(self.classes)}")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.target != "label" and getattr(self, self.target) is None:
            raise ValueError(f"target={self.target!r} but this dataset has no {self.target}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.images.shape[1], self.images.shape[2]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def _convert(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W[, 3]) -> float (N, C, H, W) in [0, 1] with ``channels`` channels."""
        imgs = torch.from_numpy(images).float().div_(255.0)
        imgs = imgs.unsqueeze(1) if imgs.ndim == 3 else imgs.permute(0, 3, 1, 2)
        if self.channels == 3 and imgs.shape[1] == 1:
            imgs = imgs.expand(-1, 3, -1, -1).contiguous()
        elif self.channels == 1 and imgs.shape[1] == 3:
            imgs = (imgs * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, True)
        return imgs

    def image_tensor(self, index: int) -> torch.Tensor:
        """The raw image at ``index`` as a float (C, H, W) tensor in [0, 1], no transform."""
        return self._convert(self.images[[index]])[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.image_tensor(index)
        if self.transform is not None:
            img = self.transform(img)
        if self.target == "label":
            return img, torch.tensor(self.labels[index])
        return img, torch.from_numpy(np.asarray(getattr(self, self.target)[index],
                                                dtype=np.float32))

    def tensors(self, indices: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """All (or the indexed) images as one (N, C, H, W) float tensor and their labels."""
        idx = np.arange(len(self)) if indices is None else np.asarray(indices)
        return self._convert(self.images[idx]), torch.from_numpy(self.labels[idx])

    def subset(self, indices: np.ndarray) -> FaceDataset:
        """A new dataset holding only ``indices`` (all arrays and metadata sliced alike)."""
        idx = np.asarray(indices)
        sliced: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                sliced[f.name] = value[idx]
        sliced["meta"] = {k: v[idx] for k, v in self.meta.items()}
        return dataclasses.replace(self, **sliced)

    def with_options(self, **changes: Any) -> FaceDataset:
        """A copy with other ``transform``, ``target`` or ``channels`` (arrays shared)."""
        return dataclasses.replace(self, **changes)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.n_classes)

    def __repr__(self) -> str:
        h, w = self.image_size
        return (f"FaceDataset(name={self.name!r}, n={len(self)}, size={h}x{w}, "
                f"classes={len(self.classes)}, subjects={len(np.unique(self.subjects))})")


_REGISTRY: dict[str, Callable[..., FaceDataset]] = {}


def register_dataset(name: str) -> Callable[[Callable[..., FaceDataset]], Callable[..., FaceDataset]]:
    """Decorator registering a loader ``fn(root=None, **kwargs) -> FaceDataset`` under ``name``."""
    def wrap(fn: Callable[..., FaceDataset]) -> Callable[..., FaceDataset]:
        _REGISTRY[name] = fn
        return fn
    return wrap


def available_datasets() -> list[str]:
    _load_builtin_loaders()
    return sorted(_REGISTRY)


def load_dataset(name: str, root: str | None = None, **kwargs: Any) -> FaceDataset:
    """Load a registered dataset by name, e.g. ``load_dataset("synth-lab", size=48)`` or
    ``load_dataset("ckplus", root="/data/CK+")``."""
    _load_builtin_loaders()
    if name not in _REGISTRY:
        raise KeyError(f"unknown dataset {name!r}; available: {sorted(_REGISTRY)}")
    return _REGISTRY[name](root=root, **kwargs)


def _load_builtin_loaders() -> None:
    import fernb.data.real  # noqa: F401  (registers the real-dataset readers)
    import fernb.data.synthetic  # noqa: F401  (registers synth-lab and synth-wild)


SYNTHETIC = ("synth-lab", "synth-wild")


def chapter_dataset(name: str, data_root: str = "", *, size: int, n_subjects: int = 40,
                    seed: int = 0, cache_dir: str | None = None, **knobs: Any) -> FaceDataset:
    """The dataset a chapter's ``dataset``/``data_root`` parameters ask for.

    Synthetic presets take ``n_subjects``, ``seed`` and the generator's knobs (e.g.
    ``distractor=0.9``, ``blend_pairs="facs"``; :data:`fernb.data.synthetic.KNOBS`); a real
    dataset needs ``data_root`` and is checked (layout, unreadable files, labels) before
    anything else runs. Generated and preprocessed sets are cached in ``cache_dir`` (default
    ``$FERNB_CACHE`` or ``~/.cache/fernb``).
    """
    cache_dir = cache_dir or os.environ.get("FERNB_CACHE", str(Path.home() / ".cache" / "fernb"))
    if name in SYNTHETIC:
        return load_dataset(name, root=cache_dir, n_subjects=n_subjects, size=size, seed=seed,
                            **knobs)
    if knobs:
        raise ValueError(f"generator knobs {sorted(knobs)} apply to the synthetic presets "
                         f"{SYNTHETIC} only, not to dataset {name!r}; leave them out")
    if not data_root:
        raise ValueError(f"dataset {name!r} needs its folder: pass -p data_root /path/to/it "
                         f"(or use one of the synthetic presets {SYNTHETIC})")
    return load_dataset(name, root=data_root, size=size, cache_dir=cache_dir)


@dataclass(frozen=True)
class DataSpec:
    """A chapter's data as plain, comparable settings: enough for a stored job to load the
    same faces again in any process (the run store keys jobs by it, :mod:`fernb.store`).

    ``knobs`` are the synthetic generator's (:data:`fernb.data.synthetic.KNOBS`), as sorted
    (name, value) pairs; ``channels`` converts the images (3 for RGB backbones)."""

    name: str
    root: str = ""
    size: int = 48
    n_subjects: int = 40
    seed: int = 0
    knobs: tuple[tuple[str, Any], ...] = ()
    channels: int | None = None

    @classmethod
    def of(cls, name: str, root: str = "", *, size: int, n_subjects: int = 40, seed: int = 0,
           channels: int | None = None, **knobs: Any) -> DataSpec:
        """The spec of :func:`chapter_dataset`'s arguments."""
        frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                              for k, v in knobs.items()))
        return cls(name, root, size, n_subjects, seed, frozen, channels)

    def load(self) -> FaceDataset:
        """The dataset (loaded once per process, then shared)."""
        return _load_spec(self)


@functools.lru_cache(maxsize=4)
def _load_spec(spec: DataSpec) -> FaceDataset:
    data = chapter_dataset(spec.name, spec.root, size=spec.size, n_subjects=spec.n_subjects,
                           seed=spec.seed, **dict(spec.knobs))
    return data if spec.channels is None else data.with_options(channels=spec.channels)
