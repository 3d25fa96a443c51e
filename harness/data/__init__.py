"""Data: benchmark definitions, datasets for each set, transforms, and data checks.

The public names are re-exported here; see ``docs/benchmarks.md`` for the YAML schema.
"""

from dfb_ood.harness.data.benchmark import (
    Benchmark,
    SetSpec,
    available_benchmarks,
    default_data_root,
    load_benchmark,
)
from dfb_ood.harness.data.cache import CacheWarning
from dfb_ood.harness.data.check import SetReport, check_benchmark
from dfb_ood.harness.data.datasets import ArrayDataset, MaskedArrayDataset, build_dataset, load_arrays
from dfb_ood.harness.data.problems import DataWarning
from dfb_ood.harness.data.transforms import test_transform

__all__ = [
    "ArrayDataset",
    "Benchmark",
    "CacheWarning",
    "DataWarning",
    "MaskedArrayDataset",
    "SetReport",
    "SetSpec",
    "available_benchmarks",
    "build_dataset",
    "check_benchmark",
    "default_data_root",
    "load_arrays",
    "load_benchmark",
    "test_transform",
]
