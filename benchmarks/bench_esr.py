"""Measured cost of ESR-4 at each branching level against the traditional ensemble: time per
image of a training step and of inference, as ratios in one run (median and range over
interleaved repeats, after a warm-up), next to the FLOPs ratio.

    python benchmarks/bench_esr.py [--size 48] [--width 0.25] [--repeats 5] [--device auto]
"""
from __future__ import annotations

import argparse

from fernb.complexity import measured_cost
from fernb.models import ESR, traditional_ensemble


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    models = {"TE": traditional_ensemble(width=args.width)}
    models |= {f"ESR-4 Lvl. {lv}": ESR(arch="lab", level=lv, width=args.width)
               for lv in range(1, 6)}
    table = measured_cost(models, (1, args.size, args.size), reference="TE",
                          batch_size=args.batch_size, steps=args.steps, repeats=args.repeats,
                          device=args.device)
    print(f"{args.size}x{args.size}, width {args.width}, device {args.device}")
    print(table.round(2).to_string())


if __name__ == "__main__":
    main()
