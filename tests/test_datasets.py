"""The one dataset type: validation, targets, channels, subsets."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fernb.data.datasets import FaceDataset


def make(n: int = 6, rgb: bool = False, **kwargs) -> FaceDataset:
    rng = np.random.default_rng(0)
    shape = (n, 8, 8, 3) if rgb else (n, 8, 8)
    return FaceDataset(images=rng.integers(0, 256, shape, dtype=np.uint8),
                       labels=np.arange(n) % 3, subjects=np.arange(n) // 2,
                       classes=("neutral", "happiness", "sadness"), **kwargs)


def test_getitem_and_tensors_agree_in_both_channel_modes() -> None:
    for rgb in (False, True):
        for channels in (1, 3):
            ds = make(rgb=rgb, channels=channels)
            batch, labels = ds.tensors()
            assert batch.shape == (6, channels, 8, 8)
            for i in (0, 5, -1):
                torch.testing.assert_close(ds[i][0], batch[i])
            assert labels.tolist() == [0, 1, 2, 0, 1, 2]


def test_soft_and_affect_targets() -> None:
    mix = np.full((6, 3), 1 / 3, dtype=np.float32)
    ds = make(mixtures=mix, valence_arousal=np.zeros((6, 2), np.float32))
    assert ds.with_options(target="mixtures")[0][1].shape == (3,)
    assert ds.with_options(target="valence_arousal")[0][1].shape == (2,)
    with pytest.raises(ValueError, match="has no mixtures"):
        make(target="mixtures")


def test_subset_slices_every_array_and_meta() -> None:
    ds = make(landmarks=np.zeros((6, 68, 2), np.float32), meta={"frame": np.arange(6)})
    sub = ds.subset(np.array([4, 1]))
    assert sub.labels.tolist() == [1, 1] and sub.meta["frame"].tolist() == [4, 1]
    assert sub.landmarks.shape == (2, 68, 2) and len(sub) == 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(labels=np.array([0, 1, 5, 0, 1, 2])), "labels must lie"),
    (dict(subjects=np.arange(5)), "subjects has 5 rows"),
    (dict(target="nope"), "target must be one of"),
    (dict(channels=2), "channels must be 1 or 3"),
])
def test_bad_input_is_named(kwargs, match) -> None:
    base = dict(images=np.zeros((6, 8, 8), np.uint8), labels=np.arange(6) % 3,
                subjects=np.arange(6), classes=("neutral", "happiness", "sadness"))
    with pytest.raises(ValueError, match=match):
        FaceDataset(**{**base, **kwargs})


def test_a_data_spec_loads_the_same_faces_once_per_process() -> None:
    from fernb.data.datasets import DataSpec
    from fernb.specs import digest
    spec = DataSpec.of("synth-lab", size=48, n_subjects=4, seed=1, distractor=0.9)
    assert spec == DataSpec.of("synth-lab", size=48, n_subjects=4, seed=1, distractor=0.9)
    assert digest(spec) != digest(DataSpec.of("synth-lab", size=48, n_subjects=4, seed=1))
    data = spec.load()
    assert spec.load() is data and len(data) == 4 * 28 and "cue" in data.meta
    assert DataSpec.of("synth-lab", size=48, n_subjects=4, channels=3).load().channels == 3
