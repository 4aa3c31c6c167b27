"""Canonical descriptions of settings, and keys derived from them.

:func:`describe` turns what a result depends on (numbers, strings, lists, mappings,
dataclasses such as a chapter's settings or a training configuration, functions, arrays)
into plain JSON data with a stable order; :func:`digest` hashes that description. The run
store (:mod:`fernb.store`) keys every trained model by the digest of its description, and
``fit`` refuses to resume a checkpoint whose description differs.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import numbers
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch


def describe(value: Any) -> Any:
    """``value`` as JSON data: dataclasses as ``{"type": ..., fields...}``, functions and
    classes by their qualified name, ``functools.partial`` with its arguments, arrays and
    tensors by shape and a hash of their bytes, objects with a ``spec()`` method by what it
    returns; floats keep their exact value (``repr``), so 0.1 and 0.1000001 differ."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Enum):
        return f"{type(value).__qualname__}.{value.name}"
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): describe(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((describe(v) for v in value), key=repr)
    if isinstance(value, (np.ndarray, torch.Tensor)):
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        array = np.ascontiguousarray(array)
        return {"array": list(array.shape), "dtype": str(array.dtype),
                "sha256": hashlib.sha256(array.tobytes()).hexdigest()[:16]}
    if isinstance(value, np.generic):
        return describe(value.item())
    if callable(getattr(value, "spec", None)):
        return describe(value.spec())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: describe(getattr(value, f.name)) for f in dataclasses.fields(value)
                  if f.compare}
        return {"type": _name(type(value)), **fields}
    if isinstance(value, functools.partial):
        return {"partial": describe(value.func), "args": describe(value.args),
                "keywords": describe(value.keywords)}
    if isinstance(value, type) or callable(value) and hasattr(value, "__qualname__"):
        return _name(value)
    raise TypeError(f"cannot describe {type(value).__name__} {value!r} for a key: give it a "
                    f"spec() method or make it a dataclass")


def _name(obj: Any) -> str:
    name = f"{obj.__module__}.{obj.__qualname__}"
    if "<lambda>" in name or "<locals>" in name:
        raise TypeError(f"cannot describe {name} for a key: two such functions would share "
                        f"its name; use a module-level function or a dataclass")
    return name


def canonical(value: Any) -> str:
    """The description of ``value`` as compact JSON with sorted keys."""
    return json.dumps(describe(value), sort_keys=True, separators=(",", ":"))


def digest(value: Any, length: int = 16) -> str:
    """A hex digest of ``value``'s description (equal descriptions, equal digests)."""
    return hashlib.sha256(canonical(value).encode()).hexdigest()[:length]
