"""Hyper-parameter search on cached outputs vs re-running the forward pass per grid point.

OpenOOD's parameter search runs inference on ID-val and OOD-val once per grid point. Here the
grid is searched on one cached pass. Both are measured in this run on the built-in ``shapes``
validation sets with a small network: the cached search as ``harness.search`` does it, and the
naive search that recomputes the validation (and, when read, training) outputs for every point.

    python benchmarks/bench_search.py [--network rv2_tiny] [--device cpu]
"""

from __future__ import annotations

import os

# Sleeping OpenMP waits, set before torch loads its runtime (see harness/__init__.py for why).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import time

import torch

from dfb_ood.harness.data.shapes import generate_set
from dfb_ood.harness.detectors import search_grid
from dfb_ood.harness.evaluate import SetOutputs
from dfb_ood.harness.outputs import forward_outputs, head_arrays
from dfb_ood.harness.search import search_detector
from dfb_ood.networks import create_network, from_classifier
from dfb_ood.postprocessors.base import Outputs

MEAN = STD = (0.5, 0.5, 0.5)
DETECTORS = ("vim", "knn", "react", "gen", "vim_dfb", "knn_dfbz", "energy_dfb", "msp_dfbz")


def validation_outputs(net, images: dict, device: torch.device) -> SetOutputs:
    head = head_arrays(net)

    def one(name: str) -> Outputs:
        logits, features = forward_outputs(net, images[name][0], mean=MEAN, std=STD, size=32, device=device)
        return Outputs(logits=logits, features=features, labels=images[name][1], weight=head[0], bias=head[1],
                       background=net.background)  # fmt: skip

    val = one("val")
    return SetOutputs(train=one("train"), test=val, val=val, ood_val=one("ood_val"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="rv2_tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    nets = {"classifier": create_network(args.network, 6)}
    nets["dfb"] = from_classifier(nets["classifier"])
    images = {}
    for name in ("train", "val", "ood_val"):
        array, labels = generate_set(name)
        images[name] = (torch.from_numpy(array).permute(0, 3, 1, 2).contiguous(), labels)
    print(f"device {device}, {args.network}; validation sets: train 3000, val 500, ood_val 500 images")
    print(f"{'detector':<12}{'points':>7}{'cached s':>10}{'re-run s':>10}{'ratio':>8}")
    total_cached = total_naive = 0.0
    for name in DETECTORS:
        network = "dfb" if "_dfb" in name else "classifier"
        points = 1
        for values in search_grid(name).values():
            points *= len(values)
        start = time.perf_counter()
        cached = validation_outputs(nets[network], images, device)
        search_detector(name, cached, network=network)
        cached_s = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(points):  # what a search without an output cache does: a pass per grid point
            validation_outputs(nets[network], images, device)
        naive_s = time.perf_counter() - start + cached_s
        total_cached += cached_s
        total_naive += naive_s
        print(f"{name:<12}{points:>7}{cached_s:>10.2f}{naive_s:>10.2f}{naive_s / cached_s:>7.1f}x")
    print(
        f"all: cached {total_cached:.1f} s vs re-run {total_naive:.1f} s ({total_naive / total_cached:.1f}x)"
    )


if __name__ == "__main__":
    main()
