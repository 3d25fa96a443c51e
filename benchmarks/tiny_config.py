"""What the battery scripts share: the tiny shapes benchmark and recipe they run (seconds per run
on a CPU) and the record of which code they ran on.

One copy for every script under ``benchmarks/``; the test suite keeps its own benchmark in
``tests/harness/test_pipeline.py`` so that tests never depend on these scripts.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

TINY_BENCHMARK = """\
name: tiny_shapes
num_classes: 6
class_names: [circle, square, triangle, plus, ring, star]
image_size: 16
channels: 3
normalization: {mean: [0.5], std: [0.5]}
transforms:
  test: {resize: 16, crop: 16}
id:
  train: {type: shapes, set: train, count: 192, size: 16}
  val: {type: shapes, set: val, count: 48, size: 16}
  test: {type: shapes, set: test, count: 60, size: 16}
ood:
  val: {type: shapes, set: ood_val, count: 30, size: 16}
  near:
    unseen: {type: shapes, set: near_unseen_shapes, count: 40, size: 16}
  far:
    textures: {type: shapes, set: textures, count: 40, size: 16}
    noise: {type: shapes, set: noise, count: 40, size: 16}
"""


def tiny_recipe(steps: int = 24, checkpoint_every_s: float = 600) -> str:
    """The recipe YAML: ``steps`` per stage, a resume checkpoint every ``checkpoint_every_s``."""
    return f"""\
name: tiny
description: a few steps of the smallest network, for the battery scripts
network: rv2_tiny
optimizer: {{lr: 0.05, momentum: 0.9, weight_decay: 0.0005}}
batch_size: 32
steps: {steps}
warmup_steps: 2
lr_drops: [0.7]
train_transform: {{pad: 2, crop: 16, flip: true}}
eval_size: 16
dense: {{scale: [0.75, 1.5], flip: true}}
cam: {{scales: [1.0, 2.0], flip: true, sigma: 0.0, theta: 0.5, target: label}}
checkpoint_every_s: {checkpoint_every_s}
"""


def code_version() -> dict[str, Any]:
    """The commit the battery ran on, whether the working tree had changes, and any PYTHONPATH."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD") or None,
        "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no")),
        "pythonpath": os.environ.get("PYTHONPATH"),
    }


def machine_environment() -> dict[str, object]:
    """Where a benchmark script ran: CPU, cores, Python, torch and its threads (for its JSON record)."""
    import platform

    import torch

    return {
        "processor": platform.processor() or None,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
