"""The model contract (fernb.models) on every model the package builds: logits (B, M, C),
forward = forward_head . forward_features, gradients everywhere, and a Grad-CAM layer per
member that pytorch-grad-cam can explain."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fernb.models
from fernb.explain import gradcam
from fernb.models import Model
from fernb.models.registry import COMPONENTS, MODELS, ModelCase

BATCH = 2


def _inputs(case: ModelCase, batch: int = BATCH) -> torch.Tensor:
    return torch.rand(batch, *case.input_shape, generator=torch.Generator().manual_seed(0))


def _members(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return model.eval()(x[:1]).shape[1]


@pytest.fixture(params=sorted(MODELS))
def case(request: pytest.FixtureRequest) -> ModelCase:
    return MODELS[request.param]


def test_forward_gives_batch_members_classes(case: ModelCase) -> None:
    model = case.build()
    assert isinstance(model, Model)
    with torch.no_grad():
        logits = model.eval()(_inputs(case))
    assert logits.ndim == 3 and logits.shape[0] == BATCH and logits.shape[2] == 3
    assert logits.shape[1] >= 1 and torch.isfinite(logits).all()


def test_forward_head_of_forward_features_is_forward(case: ModelCase) -> None:
    model = case.build().eval()
    x = _inputs(case)
    with torch.no_grad():
        assert torch.equal(model.forward_head(model.forward_features(x)), model(x))


def test_every_trainable_parameter_gets_a_gradient(case: ModelCase) -> None:
    model = case.build().train()
    logits = model(_inputs(case))
    targets = torch.arange(logits.shape[0] * logits.shape[1]) % logits.shape[2]
    F.cross_entropy(logits.flatten(0, 1), targets).backward()
    other = {name for name, p in model.named_parameters()
             if set(name.split(".")) & set(case.other_heads)}
    missing = [name for name, p in model.named_parameters()
               if p.requires_grad and name not in other and p.grad is None]
    assert not missing, f"no gradient reaches {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert all(p.grad is None for name, p in model.named_parameters() if name in other)
    assert not case.other_heads or other, f"{case.other_heads} name no parameters"


def test_cam_layer_of_every_member_is_a_submodule_with_a_feature_map(case: ModelCase) -> None:
    model = case.build().eval()
    x = _inputs(case)
    size = case.input_shape[1]
    modules = list(model.modules())
    for member in range(_members(model, x)):
        for image_size in (size, None):
            layer = model.cam_layer(member, image_size)
            assert any(layer is m for m in modules), (member, image_size)
            shapes = []
            hook = layer.register_forward_hook(lambda _m, _i, out: shapes.append(out.shape))
            with torch.no_grad():
                model(x)
            hook.remove()
            assert shapes and all(len(s) == 4 and s[0] == BATCH for s in shapes)
    with pytest.raises(ValueError, match="member"):
        model.cam_layer(_members(model, x), size)


def test_gradcam_explains_every_member_and_the_ensemble(case: ModelCase) -> None:
    model = case.build()
    x = _inputs(case)
    _, height, width = case.input_shape
    members = _members(model, x)
    for member in range(members):
        maps = gradcam(model, x, model.cam_layer(member, height), member=member)
        assert maps.shape == (BATCH, height, width)
        assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    maps = gradcam(model, x)  # every member's layer, the ensemble's score
    assert maps.shape == (BATCH, height, width) and maps.min() >= 0 and maps.max() <= 1


def _public(kind: typing.Callable[[object], bool]) -> dict[str, object]:
    """Public classes or functions defined in the modules of fernb.models that hold models
    (all but the contract and the registry)."""
    found = {}
    for info in pkgutil.iter_modules(fernb.models.__path__):
        if info.name in ("contract", "registry"):
            continue
        module = importlib.import_module(f"fernb.models.{info.name}")
        for name, obj in inspect.getmembers(module, kind):
            if not name.startswith("_") and obj.__module__ == module.__name__:
                found[f"{module.__name__}.{name}"] = obj
    return found


def _returns_module(function: object) -> bool:
    returned = typing.get_type_hints(function).get("return")
    return inspect.isclass(returned) and issubclass(returned, nn.Module)


def test_the_registry_covers_every_public_model_class_and_builder() -> None:
    classes = {name: cls for name, cls in _public(inspect.isclass).items()
               if issubclass(cls, nn.Module)}
    built = {type(case.build()) for case in MODELS.values()}
    uncovered = [name for name, cls in classes.items()
                 if cls not in built and cls not in COMPONENTS]
    assert not uncovered, f"add a ModelCase (or a COMPONENTS entry) for {uncovered}"
    assert not set(COMPONENTS) & built
    builders = {name for name, fn in _public(inspect.isfunction).items()
                if _returns_module(fn) and fn not in COMPONENTS}
    covered = {f"{case.builder.__module__}.{case.builder.__qualname__}"
               for case in MODELS.values()}
    assert builders, "no builder found; the discovery is broken"
    assert not builders - covered, f"add a ModelCase for {sorted(builders - covered)}"
