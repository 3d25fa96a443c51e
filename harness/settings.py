"""The settings of one run, as the CLI collects them and the pipeline, checks and records read them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dfb_ood.harness.evaluate import default_detectors


@dataclass
class BenchSettings:
    """Everything that defines one run (one seed). ``None`` means "the recipe's / benchmark's default"."""

    benchmark: str = "fmnist_mini"
    recipe: str = "frozen"
    network: str | None = None
    seed: int = 0
    device: str | None = None
    data_root: Path | None = None
    checkpoint: Path | None = None
    out: Path | None = None
    detectors: list[str] = field(default_factory=default_detectors)
    fpr_convention: str = "paper"
    foreground: str = "dfb"
    search: bool = False
    steps: int | None = None
    batch_size: int | None = None
    quiet: bool = False
    eval_batch_size: int = 256
    skip_bad: bool = False  # drop missing / undecodable images with a warning instead of failing
    overwrite: bool = False  # replace a run folder's results made with other settings
    classes: int | None = None  # class-subset benchmarks: how many ID classes to draw (id_classes.count)
    class_seed: int | None = None  # ... and the draw's seed (id_classes.seed); both recorded in run.json
    # File-backed sets decoded larger than this (MiB) are streamed through DataLoader workers (by
    # training, masks and evaluation passes) instead of held in memory (None: $HARNESS_IN_MEMORY_MB,
    # else 4096). Not part of the run's identity: both paths give the same weights and outputs.
    in_memory_mb: float | None = None
    data_workers: int | None = None  # decoding processes for streamed sets (None: min(4, CPUs))
