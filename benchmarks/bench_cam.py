"""Pseudo-mask throughput against plain forward passes of the same network, in one run.

Multi-scale CAM runs the network on each scale and its mirror image, so a mask costs about
``2 * sum(scale**2)`` forwards in pixels (15 for the default scales 1, 0.5, 1.5, 2); small inputs
use the hardware less well, so the measured ratio is usually lower. Also prints the training
throughput of the network (forward + backward + SGD step), to size the mask stage against the
training stages. Timings are the best of ``--repeats`` runs, which is robust to a busy machine.

    python benchmarks/bench_cam.py [--arch rv2_tiny] [--size 32] [--batch 128] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import os

# Sleeping OpenMP waits, set before torch loads its runtime (see harness/__init__.py for why).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from dfb_ood.networks import DEFAULT_SCALES, create_network, pseudo_masks


def best_time(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Best wall time of ``repeats`` calls after one warm-up call (CUDA synchronised)."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--arch", nargs="+", default=["rv2_tiny", "rv2_small"], help="registered network names"
    )
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--size", type=int, default=32, help="square input side in pixels")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sigma", type=float, default=1.0, help="CAM blur in pixels (0: none)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-train", action="store_true", help="skip the training-step measurement")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"device {device}, {torch.get_num_threads()} threads, batch {args.batch}, {args.size}x{args.size}, "
        f"scales {DEFAULT_SCALES} + flips (pixel cost {2 * sum(s * s for s in DEFAULT_SCALES):.1f} forwards)"
    )
    header = f"{'network':<16}{'forward img/s':>15}{'masks/s':>10}{'fwd per mask':>14}{'train img/s':>13}"
    print(header)
    for arch in args.arch:
        torch.manual_seed(0)
        net = create_network(arch, args.classes).to(device).eval()
        x = torch.randn(args.batch, 3, args.size, args.size, device=device)
        labels = torch.randint(0, args.classes, (args.batch,), device=device)

        def forward(net: torch.nn.Module = net, x: torch.Tensor = x) -> None:
            with torch.no_grad():
                net(x)

        def masks(net: torch.nn.Module = net, x: torch.Tensor = x, labels: torch.Tensor = labels) -> None:
            pseudo_masks(net, x, labels, sigma=args.sigma or None)

        fwd_s = best_time(forward, args.repeats, device)
        mask_s = best_time(masks, args.repeats, device)
        train_col = "-"
        if not args.no_train:
            net.train()
            optimiser = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

            def step(
                net: torch.nn.Module = net,
                x: torch.Tensor = x,
                labels: torch.Tensor = labels,
                optimiser: torch.optim.Optimizer = optimiser,
            ) -> None:
                optimiser.zero_grad(set_to_none=True)
                F.cross_entropy(net(x), labels).backward()
                optimiser.step()

            train_col = f"{args.batch / best_time(step, args.repeats, device):.0f}"
        rates = f"{args.batch / fwd_s:>15.0f}{args.batch / mask_s:>10.0f}{mask_s / fwd_s:>14.1f}"
        print(f"{arch:<16}{rates}{train_col:>13}")


if __name__ == "__main__":
    main()
