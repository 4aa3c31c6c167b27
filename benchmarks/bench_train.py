"""Training speed of ``fernb.train.fit`` against bare PyTorch loops on the same model and
tensors, as ratios measured in one run.

For each model (ESR's single network, a ResNet-18 and a VGG16 at the chapters' sizes), every
variant trains the same in-memory images with SGD (momentum 0.9, batch 64): four bare loops
(fp32; channels-last; bf16 autocast; both) and ``fit`` at ``precision="fp32"`` and
``"auto"``. Variants run in turn, round after round, so that a slow moment of the machine
hits all of them; the table gives each variant's median images per second over the rounds,
its ratio to the bare fp32 loop, ``fit``'s ratio to the best bare loop at the same precision,
and the achieved GFLOP/s (a training step counted as three forward passes).

    python benchmarks/bench_train.py [--images 1024] [--rounds 3] [--epochs 2]
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from fernb.complexity import flops
from fernb.device import native_bf16
from fernb.models import single_network
from fernb.models.backbones import resnet18, vgg16
from fernb.train import FitConfig, fit, sgd

BATCH = 64
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, int, int]]] = {
    "ESR single network, 48 px, width 0.5": (lambda: single_network(width=0.5), (1, 48, 48)),
    "ResNet-18, 48 px, width 0.125": (lambda: resnet18(width=0.125, in_chans=3), (3, 48, 48)),
    "VGG16, 48 px, width 0.125": (lambda: vgg16(width=0.125, in_chans=3), (3, 48, 48)),
}


def bare(build: Callable[[], nn.Module], x: torch.Tensor, y: torch.Tensor, epochs: int, *,
         channels_last: bool, bf16: bool) -> float:
    """Images per second of a plain training loop (the fastest epoch after the first)."""
    model = build()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    best = 0.0
    for epoch in range(epochs + 1):
        start = time.perf_counter()
        order = torch.randperm(len(x))
        for i in range(0, len(x), BATCH):
            idx = order[i:i + BATCH]
            xb = x[idx]
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = model(xb)[:, 0]
            loss = F.cross_entropy(out.float(), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if epoch:
            best = max(best, len(x) / (time.perf_counter() - start))
    return best


def with_fit(build: Callable[[], nn.Module], x: torch.Tensor, y: torch.Tensor, epochs: int, *,
             precision: str) -> float:
    """Images per second of ``fit`` (the fastest epoch after the first)."""
    config = FitConfig(epochs=epochs + 1, optimizer=sgd(0.01), batch_size=BATCH, device="cpu",
                       precision=precision)
    history = fit(build(), TensorDataset(x, y), None, config)
    return float((len(x) / history.to_frame()["seconds"].iloc[1:]).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    variants = {
        "bare fp32": lambda b, x, y: bare(b, x, y, args.epochs, channels_last=False, bf16=False),
        "bare channels-last": lambda b, x, y: bare(b, x, y, args.epochs, channels_last=True,
                                                   bf16=False),
        "bare bf16": lambda b, x, y: bare(b, x, y, args.epochs, channels_last=False, bf16=True),
        "bare both": lambda b, x, y: bare(b, x, y, args.epochs, channels_last=True, bf16=True),
        "fit fp32": lambda b, x, y: with_fit(b, x, y, args.epochs, precision="fp32"),
        "fit auto": lambda b, x, y: with_fit(b, x, y, args.epochs, precision="auto"),
    }
    print(f"CPU with native bf16: {native_bf16(torch.device('cpu'))}; "
          f"{torch.get_num_threads()} threads; {args.images} images, batch {BATCH}, "
          f"median of {args.rounds} rounds")
    for name, (build, shape) in MODELS.items():
        x = torch.rand(args.images, *shape)
        y = torch.randint(0, 7, (args.images,))
        rates = pd.DataFrame([{v: run(build, x, y) for v, run in variants.items()}
                              for _ in range(args.rounds)]).median()
        gflop = 3 * flops(build(), shape) / 1e9
        table = pd.DataFrame({"images/s": rates.round(0),
                              "ratio to bare fp32": (rates / rates["bare fp32"]).round(2),
                              "GFLOP/s": (rates * gflop).round(1)})
        best_fp32 = rates[["bare fp32", "bare channels-last"]].max()
        best_bf16 = rates[["bare bf16", "bare both"]].max()
        print(f"\n{name} ({gflop:.3f} GFLOP per training image)")
        print(table.to_string())
        print(f"fit fp32 / best bare fp32 loop: {rates['fit fp32'] / best_fp32:.2f}; "
              f"fit auto / best bare bf16 loop: {rates['fit auto'] / best_bf16:.2f}; "
              f"fit auto / bare fp32: {rates['fit auto'] / rates['bare fp32']:.2f}")


if __name__ == "__main__":
    main()
