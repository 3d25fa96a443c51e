"""One detector vs every registered detector: what a whole leaderboard costs on top of one pass.

Runs a small network over the built-in ``shapes`` sets once (the "fresh" cost: forward passes)
and then scores either MSP alone or every registered detector except the ODIN family (which
needs its own perturbed pass) from the same cached outputs. Prints wall times and the ratios
all/one on cached outputs and on fresh ones (forward + scoring). Target: fresh all <= 1.3x one.

    python benchmarks/bench_leaderboard.py [--network rv2_tiny] [--device cpu]
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

from dfb_ood.harness.data.shapes import SHAPES_SETS, generate_set
from dfb_ood.harness.evaluate import SetOutputs, evaluate_detectors
from dfb_ood.harness.outputs import forward_outputs, head_arrays
from dfb_ood.networks import create_network, from_classifier
from dfb_ood.postprocessors import registry
from dfb_ood.postprocessors.base import Outputs

MEAN = STD = (0.5, 0.5, 0.5)


def passes(net, sets: dict[str, tuple[torch.Tensor, np.ndarray]], device: torch.device) -> SetOutputs:
    head = head_arrays(net)
    loaded = {}
    for name, (images, labels) in sets.items():
        logits, features = forward_outputs(net, images, mean=MEAN, std=STD, size=32, device=device)
        loaded[name] = Outputs(
            logits=logits,
            features=features,
            labels=labels,
            weight=head[0],
            bias=head[1],
            background=net.background,
        )
    ood = {n: o for n, o in loaded.items() if n not in ("train", "val", "test", "ood_val")}
    ids = {key: loaded[key] for key in ("train", "test", "val", "ood_val")}
    return SetOutputs(**ids, ood=ood, groups={n: "far" for n in ood})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="rv2_tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    classifier = create_network(args.network, 6)
    dfb = from_classifier(classifier)
    sets = {}
    for name in SHAPES_SETS:
        images, labels = generate_set(name)
        sets[name] = (torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels)
    count = sum(len(labels) for _, labels in sets.values())
    start = time.perf_counter()
    outputs = {"classifier": passes(classifier, sets, device), "dfb": passes(dfb, sets, device)}
    forward_s = time.perf_counter() - start
    everything = [n for n in registry.available() if not n.startswith("odin")]
    timings = {}
    for label, names in (("one (msp)", ["msp"]), (f"all ({len(everything)})", everything)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            evaluate_detectors(names, outputs)
            timings[label] = time.perf_counter() - start
    one, every = timings.values()
    threads = torch.get_num_threads()
    print(f"device {device}, {args.network}, {count:,} images through 2 networks; torch threads {threads}")
    print(f"forward passes (both networks, all sets): {forward_s:.2f} s")
    for label, seconds in timings.items():
        print(f"scoring {label:<10}: {seconds:.3f} s cached, {forward_s + seconds:.2f} s fresh")
    print(
        f"ratio all/one: cached {every / one:.1f}x, fresh {(forward_s + every) / (forward_s + one):.2f}x "
        "(target fresh <= 1.3x)"
    )


if __name__ == "__main__":
    main()
