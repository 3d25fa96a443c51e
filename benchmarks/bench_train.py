"""Images/s of a dense (K+1, per-pixel) training step vs a classifier step of the same network.

The dense loss is computed from low-resolution logits upsampled once (the 1x1 head runs at feature
resolution), so a dense step should cost close to a classifier step. Both steps include the
batched on-device augmentation the training loop uses. Target: dense <= 1.15x classifier time.
On CUDA the steps run under bf16 autocast with channels-last, as in training.

    python benchmarks/bench_train.py [--network rv2_tiny] [--size 32] [--batch 128] [--device cpu]
"""

from __future__ import annotations

import os

# Sleeping OpenMP waits, set before torch loads its runtime (see harness/__init__.py for why).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import time

import torch
import torch.nn.functional as F

from dfb_ood.harness.augment import IGNORE_INDEX, BatchAugmenter
from dfb_ood.networks import create_network, from_classifier


def timed_steps(step, repeats: int, device: torch.device) -> float:
    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="rv2_tiny")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    classifier = create_network(args.network, 10).to(device)
    dense = from_classifier(classifier).to(device)
    if cuda:
        classifier.to(memory_format=torch.channels_last)
        dense.to(memory_format=torch.channels_last)
    images = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8)
    labels = torch.randint(0, 10, (args.batch,))
    masks = torch.randint(0, 11, (args.batch, args.size, args.size), dtype=torch.uint8)
    augment = BatchAugmenter((0.5,) * 3, (0.5,) * 3, device, input_size=args.size, pad=2)
    generator = torch.Generator().manual_seed(0)
    optimisers = {
        net: torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9) for net in (classifier, dense)
    }

    def classifier_step() -> None:
        batch = augment.classifier(images, generator)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(classifier(batch), labels.to(device))
        optimisers[classifier].zero_grad(set_to_none=True)
        loss.backward()
        optimisers[classifier].step()

    def dense_step() -> None:
        batch, target = augment.dense(images, masks, generator)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(dense.dense(batch), target, ignore_index=IGNORE_INDEX)
        optimisers[dense].zero_grad(set_to_none=True)
        loss.backward()
        optimisers[dense].step()

    cls_s = timed_steps(classifier_step, args.repeats, device)
    dense_s = timed_steps(dense_step, args.repeats, device)
    print(
        f"device {device}, {args.network}, batch {args.batch} of {args.size}x{args.size}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"classifier step: {args.batch / cls_s:,.0f} images/s")
    print(f"dense step:      {args.batch / dense_s:,.0f} images/s")
    print(f"dense / classifier time: {dense_s / cls_s:.2f}x (target <= 1.15x)")


if __name__ == "__main__":
    main()
