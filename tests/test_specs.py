"""Canonical descriptions and keys: equal settings give equal keys, any change a new one."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from fernb.specs import canonical, describe, digest
from fernb.train import FitConfig, Schedule, adam, sgd


@dataclass(frozen=True)
class Point:
    x: float
    y: int = 0


def scale(value: float, factor: float = 2.0) -> float:
    return value * factor


def test_plain_values_and_mappings_have_a_stable_order():
    assert canonical({"b": 1, "a": [1.5, "x", None, True]}) == \
        '{"a":[1.5,"x",null,true],"b":1}'
    assert digest({"a": 1, "b": 2}) == digest({"b": 2, "a": 1})
    assert digest({"a": 1}) != digest({"a": 1.0})  # an int and a float are different settings
    assert digest(0.1) != digest(0.1000001)


def test_dataclasses_functions_partials_and_arrays():
    assert describe(Point(1.0)) == {"type": "test_specs.Point", "x": 1.0, "y": 0}
    assert describe(scale) == "test_specs.scale"
    assert describe(functools.partial(scale, factor=3.0)) == {
        "partial": "test_specs.scale", "args": [], "keywords": {"factor": 3.0}}
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert describe(a)["array"] == [2, 3] and describe(a) == describe(torch.from_numpy(a))
    assert describe(a) != describe(a + 1)


def test_lambdas_and_unknown_objects_are_refused():
    with pytest.raises(TypeError, match="lambda"):
        describe(lambda x: x)
    with pytest.raises(TypeError, match="spec\\(\\) method"):
        describe(object())


def test_training_configurations_describe_their_optimizer_and_schedule():
    base = FitConfig(epochs=3, optimizer=sgd(0.1), schedule=Schedule("StepLR", step_size=2))
    assert describe(base)["optimizer"] == {"name": "SGD", "lr": 0.1, "momentum": 0.9,
                                           "weight_decay": 0.0}
    assert digest(base) == digest(FitConfig(epochs=3, optimizer=sgd(0.1),
                                            schedule=Schedule("StepLR", step_size=2)))
    assert digest(base) != digest(base.replace(optimizer=adam(0.1)))
    assert digest(base) == digest(base.replace(progress=True))  # a progress bar trains alike
