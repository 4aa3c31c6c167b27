"""Model complexity: trainable parameters, FLOPs, storage and measured throughput.

ESR (Siqueira et al., 2020, Table 1) compares ensembles by trainable parameters; Wadhawan &
Gandhi (2023, Sec. IV-E) add inference FLOPs by their eqs. 7-9 and storage as parameters x 4
bytes; Zhou et al. state that they did not consider complexity. Conventions used throughout:

* A FLOP is one multiplication or one addition, so a multiply-accumulate (MAC) counts 2, as in
  Wadhawan eqs. 7-8 and in :class:`torch.utils.flop_counter.FlopCounterMode`. Halve a count
  to get MACs. Biases, BatchNorm (foldable into the preceding convolution), activations and
  global average pooling are not counted, again as in Wadhawan Sec. IV-E.
* FLOPs are per image: ``input_shape`` is the shape of one sample without the batch
  dimension, e.g. ``(1, 96, 96)`` for ESR's in-the-lab network.
* A megabyte is 2**20 bytes: Wadhawan's 6.3 MB equals 1.65M float32 parameters in that unit.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from numbers import Integral

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fernb.device import resolve_device

BYTES_PER_MB = 2**20
BYTES_PER_VALUE = 4  # float32, as the papers assume

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters, by default only those with ``requires_grad`` (ESR Table 1)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def storage_mb(model: nn.Module) -> float:
    """Megabytes (2**20 bytes) to store the model as float32 (Wadhawan Sec. IV-E).

    Counts every floating-point parameter and buffer (e.g. BatchNorm running statistics, which
    Keras, the authors' framework, lists as non-trainable parameters) at 4 bytes, whatever its
    current dtype; integer buffers such as ``num_batches_tracked`` are not counted.
    """
    values = sum(p.numel() for p in model.parameters())
    values += sum(b.numel() for b in model.buffers() if b.is_floating_point())
    return values * BYTES_PER_VALUE / BYTES_PER_MB


def flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Inference FLOPs of one image counted by :class:`~torch.utils.flop_counter.FlopCounterMode`.

    Args:
        model: any module; it runs once in eval mode on zeros, its modes are restored.
        input_shape: one sample's shape without the batch dimension, e.g. ``(1, 96, 96)``.

    Returns:
        FLOPs with a multiply-add counted as 2 (convolutions and matrix products only).
    """
    x = _dummy_input(model, input_shape)
    with eval_mode(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def flops_per_layer(model: nn.Module, input_shape: Sequence[int]) -> pd.DataFrame:
    """FLOPs of every convolution, linear and max-pooling call by Wadhawan eqs. 7-9.

    * convolution, eq. 7: ``2 * (C_i / groups) * k_h * k_w * C_o * H_o * W_o``;
    * fully connected, eq. 8: ``2 * I * O`` per input row;
    * max pooling, eq. 9: ``(W / stride) * (H / stride) * C_o``, i.e. one op per output value.

    Eq. 7 is printed with the input's ``W x H``; for Wadhawan's 'same', stride-1 convolutions
    that equals the output's, and the output size is what makes the formula exact for 'valid'
    (ESR) and strided convolutions, so the output size is used.

    Args:
        model: any module; it runs once in eval mode on zeros, its modes are restored.
        input_shape: one sample's shape without the batch dimension, e.g. ``(1, 96, 96)``.

    Returns:
        One row per call with columns ``layer`` (qualified module name), ``kind``
        ("conv", "linear" or "maxpool"), ``output_shape`` and ``flops``.
    """
    x = _dummy_input(model, input_shape)
    rows: list[dict] = []

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            per_sample = output.numel() // output.shape[0]
            if isinstance(module, _CONV):
                kind, count = "conv", 2 * module.weight[0].numel() * per_sample
            elif isinstance(module, nn.Linear):
                kind, count = "linear", 2 * module.in_features * per_sample
            else:
                kind, count = "maxpool", per_sample
            rows.append({"layer": name, "kind": kind, "output_shape": tuple(output.shape[1:]),
                         "flops": int(count)})
        return hook

    handles = [module.register_forward_hook(record(name))
               for name, module in model.named_modules()
               if isinstance(module, (*_CONV, nn.Linear, *_POOL))]
    try:
        with eval_mode(model), torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return pd.DataFrame(rows, columns=["layer", "kind", "output_shape", "flops"])


def conv_flops_formula(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Inference FLOPs of one image by Wadhawan eqs. 7-9 (sum of :func:`flops_per_layer`).

    On networks of convolutions and linear layers only, this equals :func:`flops`; max pooling
    (eq. 9) is the term the torch counter leaves out.
    """
    return int(flops_per_layer(model, input_shape)["flops"].sum())


def complexity_table(models: Mapping[str, nn.Module], input_shape: Sequence[int], *,
                     reference: str | None = None) -> pd.DataFrame:
    """One row per model: parameters, FLOPs both ways, storage, and ratios to a reference.

    Args:
        models: name -> model, all taking inputs of ``input_shape``.
        input_shape: one sample's shape without the batch dimension.
        reference: the name the ratio columns divide by; the first model by default. ESR's
            "32% fewer parameters at level 3" is ``1 - params_ratio`` against the traditional
            ensemble.

    Returns:
        DataFrame indexed by name with columns ``params`` (trainable), ``flops`` (torch
        counter), ``flops_formula`` (Wadhawan eqs. 7-9), ``storage_mb`` and
        ``params_ratio``, ``flops_ratio``, ``storage_ratio``.
    """
    if not models:
        raise ValueError("models is empty; pass a dict such as {'ESR-4': esr, 'TE': te}")
    reference = next(iter(models)) if reference is None else reference
    if reference not in models:
        raise ValueError(f"reference {reference!r} is not one of the models: {list(models)}")
    table = pd.DataFrame.from_dict({
        name: {"params": count_parameters(model),
               "flops": flops(model, input_shape),
               "flops_formula": conv_flops_formula(model, input_shape),
               "storage_mb": storage_mb(model)}
        for name, model in models.items()}, orient="index")
    for column, ratio in (("params", "params_ratio"), ("flops", "flops_ratio"),
                          ("storage_mb", "storage_ratio")):
        table[ratio] = table[column] / table.at[reference, column]
    return table


def _stepper(model: nn.Module, input_shape: Sequence[int], batch_size: int, train: bool,
             device: torch.device) -> Callable[[], None]:
    """One inference pass or one training step (forward, cross-entropy backward, SGD) on a
    copy of ``model`` with random inputs."""
    model = copy.deepcopy(model).to(device).train(train)
    params = [p for p in model.parameters() if p.requires_grad]
    if train and not params:
        raise ValueError("train=True needs trainable parameters; the model has none")
    x = torch.randn(batch_size, *_check_shape(input_shape), device=device)
    optimizer = torch.optim.SGD(params, lr=1e-3) if train else None

    def step() -> None:
        if optimizer is None:
            with torch.no_grad():
                model(x)
            return
        logits = model(x)  # (B, M, C) or (B, C)
        target = torch.randint(logits.shape[-1], logits.shape[:-1], device=device)
        loss = F.cross_entropy(logits.flatten(0, -2), target.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _timed(step: Callable[[], None], steps: int, device: torch.device) -> float:
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronize(device)
    return time.perf_counter() - start


def throughput(model: nn.Module, input_shape: Sequence[int], *, batch_size: int, steps: int,
               train: bool = False, device: str | torch.device = "cpu") -> float:
    """Measured images per second on random inputs (after one untimed warm-up step).

    Runs on a copy of the model, so neither its weights nor its modes change. Compare models
    by ratios measured in one run on one machine (:func:`measured_cost` interleaves repeats);
    absolute numbers depend on the hardware.

    Args:
        model: outputs logits (B, M, C) or (B, C).
        input_shape: one sample's shape without the batch dimension.
        batch_size: images per step.
        steps: timed steps.
        train: time forward + cross-entropy backward + SGD step in train mode instead of an
            inference forward pass in eval mode under ``torch.no_grad``.
        device: where to run: "auto" (CUDA when available), "cpu" or "cuda".
    """
    if batch_size < 1 or steps < 1:
        raise ValueError(f"batch_size and steps must be >= 1; got {batch_size} and {steps}")
    device = resolve_device(device)
    step = _stepper(model, input_shape, batch_size, train, device)
    step()
    return batch_size * steps / _timed(step, steps, device)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode, then give every sub-module back its own train/eval mode."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes.items():
            module.training = mode


def _check_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(input_shape)
    if not shape or not all(isinstance(s, Integral) and s > 0 for s in shape):
        raise ValueError(f"input_shape must be positive ints for one sample without the batch "
                         f"dimension, e.g. (1, 96, 96); got {input_shape!r}")
    return tuple(int(s) for s in shape)


def _dummy_input(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    shape = _check_shape(input_shape)
    reference = next(iter(model.parameters()), None)
    if reference is None or not reference.is_floating_point():
        return torch.zeros(1, *shape)
    return torch.zeros(1, *shape, device=reference.device, dtype=reference.dtype)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured_cost(models: Mapping[str, nn.Module], input_shape: Sequence[int], *,
                  reference: str | None = None, batch_size: int = 64, steps: int = 2,
                  repeats: int = 5, device: str | torch.device = "auto") -> pd.DataFrame:
    """Time per image of a training step and of inference, as ratios to ``reference``,
    measured in one process next to the FLOPs and parameter ratios (ESR's claim that shared
    layers cut computational load, checked in seconds rather than in counts).

    Every model is warmed up first; then ``repeats`` rounds each time every model in turn
    (``steps`` steps per model and round), so that a slow moment of the machine hits all
    models alike. Each round gives one ratio per model; the table reports their median and
    spread (the lowest and highest of the rounds).

    Returns:
        DataFrame indexed by name: ``train_time_ratio`` and ``inference_time_ratio``
        (medians), ``train_ratio_range`` and ``inference_ratio_range`` (lowest-highest, as
        text), ``flops_ratio``, ``params_ratio``, the median absolute ``train_img_per_s`` and
        ``inference_img_per_s``, and the same spread as numbers: ``train_ratio_low``,
        ``train_ratio_high``, ``inference_ratio_low`` and ``inference_ratio_high``.
    """
    if batch_size < 1 or steps < 1 or repeats < 1:
        raise ValueError(f"batch_size, steps and repeats must be >= 1; got {batch_size}, "
                         f"{steps} and {repeats}")
    counts = complexity_table(models, input_shape, reference=reference)
    reference = counts.index[0] if reference is None else reference
    device = resolve_device(device)
    table = pd.DataFrame(index=list(models))
    for kind, train, size in (("train", True, batch_size), ("inference", False, 2 * batch_size)):
        steppers = {n: _stepper(m, input_shape, size, train, device) for n, m in models.items()}
        for step in steppers.values():
            step()
        seconds = pd.DataFrame([{n: _timed(step, steps, device) for n, step in steppers.items()}
                                for _ in range(repeats)])  # (repeats, models)
        ratios = seconds.div(seconds[reference], axis=0)
        table[f"{kind}_time_ratio"] = ratios.median()
        table[f"{kind}_ratio_range"] = [f"{lo:.2f}-{hi:.2f}" for lo, hi in
                                        zip(ratios.min(), ratios.max())]
        table[f"{kind}_ratio_low"] = ratios.min()
        table[f"{kind}_ratio_high"] = ratios.max()
        table[f"{kind}_img_per_s"] = (size * steps / seconds).median()
    table["flops_ratio"] = counts["flops_ratio"]
    table["params_ratio"] = counts["params_ratio"]
    return table[["train_time_ratio", "train_ratio_range", "inference_time_ratio",
                  "inference_ratio_range", "flops_ratio", "params_ratio", "train_img_per_s",
                  "inference_img_per_s", "train_ratio_low", "train_ratio_high",
                  "inference_ratio_low", "inference_ratio_high"]]


def count_keras_parameters(model: nn.Module) -> int:
    """Parameters as Keras' ``model.summary()`` totals them (Wadhawan & Gandhi's framework):
    every parameter, trainable or not, plus floating-point buffers such as BatchNorm's moving
    mean and variance, which Keras lists as non-trainable parameters."""
    return (sum(p.numel() for p in model.parameters())
            + sum(b.numel() for b in model.buffers() if b.is_floating_point()))
