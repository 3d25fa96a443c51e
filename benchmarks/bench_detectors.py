"""Scoring throughput of every registered detector on cached outputs.

Synthetic cached outputs (a DFB net's: K class logits + a background logit, pooled features and
the head) stand in for a real network; the work a detector does depends only on their shapes.
Prints fit time and scoring samples/s per detector. ODIN is scored on cached outputs without its
input perturbation (noise 0); with a perturbation its cost is a forward+backward pass per image.

    python benchmarks/bench_detectors.py [--n 100000] [--train 10000] [--classes 10] [--dim 128]
"""

from __future__ import annotations

import os

# Sleeping OpenMP waits, set before torch loads its runtime (see harness/__init__.py for why).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import time
import warnings

import numpy as np
import torch

from dfb_ood.harness.detectors import build_detector
from dfb_ood.postprocessors import registry
from dfb_ood.postprocessors.base import Outputs


def synthetic_outputs(
    n: int, k: int, d: int, rng: np.random.Generator, weight: np.ndarray, bias: np.ndarray
) -> Outputs:
    labels = rng.integers(0, k, size=n)
    centres = rng.normal(size=(k, d))
    features = np.abs(centres[labels] + 0.7 * rng.normal(size=(n, d))).astype(np.float32)
    logits = features @ weight.T + bias
    return Outputs(logits=logits, features=features, labels=labels, weight=weight, bias=bias, background=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="samples to score")
    parser.add_argument("--train", type=int, default=10_000, help="ID-train samples to fit on")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--dim", type=int, default=128)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(args.classes + 1, args.dim)).astype(np.float32)
    bias = rng.normal(size=args.classes + 1).astype(np.float32)
    train = synthetic_outputs(args.train, args.classes, args.dim, rng, weight, bias)
    val = synthetic_outputs(2_000, args.classes, args.dim, rng, weight, bias)
    test = synthetic_outputs(args.n, args.classes, args.dim, rng, weight, bias)
    train_fg, test_fg = train.split_background()[0], test.split_background()[0]
    print(
        f"torch threads {torch.get_num_threads()}; N={args.n:,} scored, {args.train:,} train, "
        f"K={args.classes}, D={args.dim}"
    )
    print(f"{'detector':<14}{'fit s':>9}{'score s':>10}{'samples/s':>14}")
    total = 0.0
    for name in registry.available():
        overrides = {"noise": 0.0} if name.startswith("odin") else {}
        detector = build_detector(name, **overrides)
        base_only = "_dfb" not in name and name != "bg"
        fit_on, score_on = (train_fg, test_fg) if base_only else (train, test)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            detector.fit(fit_on, None if base_only else val)
            fitted = time.perf_counter()
            scores = detector.score(score_on)
            done = time.perf_counter()
        assert scores.shape == (args.n,) and np.all(np.isfinite(scores)), name
        total += done - fitted
        print(f"{name:<14}{fitted - start:>9.3f}{done - fitted:>10.3f}{args.n / (done - fitted):>14,.0f}")
    print(f"all {len(registry.available())} detectors: {total:.2f} s of scoring for {args.n:,} samples each")


if __name__ == "__main__":
    main()
