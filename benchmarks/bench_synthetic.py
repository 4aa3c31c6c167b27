"""Throughput of the synthetic face generator and of its export to disk (``fernb data
synth``: PNG files plus labels.csv in the ``folder`` layout) on one CPU core, in faces per
second.

    python benchmarks/bench_synthetic.py [--n 2000] [--sizes 48 96 224]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2

from fernb.data.synthetic import KNOBS, PRESETS, export, generate


def faces_per_second(preset: str, size: int, n: int) -> float:
    """Time one uncached ``generate`` call producing about ``n`` faces."""
    per_subject = 4 * 7 if preset == "synth-lab" else KNOBS[preset]["per_subject"]
    n_subjects = max(2, round(n / per_subject))
    generate(preset, n_subjects=2, size=size)                        # warm-up
    start = time.perf_counter()
    ds = generate(preset, n_subjects=n_subjects, size=size)
    return len(ds) / (time.perf_counter() - start)


def export_faces_per_second(size: int, n: int) -> tuple[float, float]:
    """Faces per second of ``export`` and, for reference, of PNG encoding alone."""
    ds = generate("synth-lab", n_subjects=max(2, round(n / 28)), size=size)
    start = time.perf_counter()
    for image in ds.images:
        cv2.imencode(".png", image)
    encode = len(ds) / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        export(ds, Path(tmp) / "out")
        written = len(ds) / (time.perf_counter() - start)
    return written, encode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="faces per measurement")
    parser.add_argument("--sizes", type=int, nargs="+", default=[48, 96, 224])
    args = parser.parse_args()
    cv2.setNumThreads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(f"{'preset':<12}{'size':>6}{'faces/s':>10}")
    for preset in PRESETS:
        for size in args.sizes:
            print(f"{preset:<12}{size:>6}{faces_per_second(preset, size, args.n):>10.0f}")
    print(f"\n{'export':<12}{'size':>6}{'faces/s':>10}{'PNG encode only':>18}")
    for size in args.sizes:
        written, encode = export_faces_per_second(size, args.n)
        print(f"{'synth-lab':<12}{size:>6}{written:>10.0f}{encode:>18.0f}")


if __name__ == "__main__":
    main()
