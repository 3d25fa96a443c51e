"""Everything a run checks before any work starts, so that no mistake costs a training.

A misspelt network, a GPU that is not there, an empty OOD list or a missing image would otherwise
surface minutes or hours in, after the classifier has been trained, and leave a half-made run
folder behind. :func:`preflight` checks them all first and raises one error naming the option,
file or line and the fix; it creates nothing.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dfb_ood.errors import InputError, MissingInputError
from dfb_ood.harness.data.benchmark import Benchmark, SetSpec, check_seed
from dfb_ood.harness.data.check import benchmark_overlaps
from dfb_ood.harness.data.datasets import open_torchvision
from dfb_ood.harness.data.imglist import FileTable
from dfb_ood.harness.data.problems import OverlapWarning
from dfb_ood.harness.data.tables import check_root, file_table
from dfb_ood.harness.errors import SystemResourceError

if TYPE_CHECKING:
    from dfb_ood.harness.recipes import Recipe
    from dfb_ood.harness.settings import BenchSettings

FPR_CONVENTIONS = ("paper", "openood")
FOREGROUNDS = ("dfb", "classifier")


def check_settings(settings: BenchSettings) -> None:
    """Ranges and choices of the options themselves (no file is read)."""
    check_seed(settings.seed, "--seed(s)")
    for option, value in (
        ("--steps", settings.steps),
        ("--batch-size", settings.batch_size),
        ("eval_batch_size", settings.eval_batch_size),
    ):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InputError(f"{option} must be a whole number >= 1, got {value!r}")
    if settings.fpr_convention not in FPR_CONVENTIONS:
        raise InputError(
            f"--fpr-convention must be one of {', '.join(FPR_CONVENTIONS)}, got {settings.fpr_convention!r}"
        )
    if settings.foreground not in FOREGROUNDS:
        raise InputError(f"--foreground must be one of {', '.join(FOREGROUNDS)}, got {settings.foreground!r}")
    if not settings.detectors:
        raise InputError("no detectors requested; pass --post NAME (see `harness list detectors`)")
    if settings.checkpoint is not None and settings.checkpoint.is_dir():
        raise InputError(_checkpoint_folder_message(settings.checkpoint))
    if settings.checkpoint is not None and not settings.checkpoint.is_file():
        raise MissingInputError(f"--checkpoint {settings.checkpoint}: no such file")


def check_network(name: str, recipe: Recipe) -> None:
    """The network exists (``harness list networks``) and has the pretrained weights the recipe asks for."""
    from dfb_ood.networks import network_spec

    spec = network_spec(name)
    backbone = None
    if recipe.network_options:  # built once here, so a wrong option fails before any work
        try:
            backbone = spec.build(**recipe.network_options)
        except (TypeError, ValueError) as error:
            raise InputError(
                f"recipe {recipe.name!r}: network_options {recipe.network_options} do not build network "
                f"{name!r}: {error}"
            ) from None
    if recipe.trainable == "tail":
        backbone = backbone if backbone is not None else spec.build(**recipe.network_options)
        if not (hasattr(backbone, "forward_prefix") and hasattr(backbone, "tail")):
            raise InputError(
                f"recipe {recipe.name!r} trains the last stage (trainable: tail), but network {name!r} "
                "has no separate last stage; use an effnet_lite* network, or trainable: head (or all)"
            )
    wants = [
        what
        for what, asked in (
            ("pretrained: true", recipe.pretrained),
            ("dense.init: pretrained", recipe.dense_init == "pretrained"),
        )
        if asked
    ]
    if wants and spec.hub_repo is None and spec.load_pretrained is None:
        raise InputError(
            f"network {name!r} has no published pretrained weights, but recipe {recipe.name!r} asks for them "
            f"({', '.join(wants)}): choose a network that has them (see `harness list networks`) or a recipe "
            "without them, e.g. cpu-quick"
        )


def check_device(requested: str | None) -> None:
    """``--device`` names a device this machine has."""
    if requested is None:
        return
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise InputError(f"--device {requested!r} is not a device name; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemResourceError(
                f"--device {requested}: this machine has no CUDA device (or PyTorch was built without CUDA); "
                "leave --device out to use the CPU"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SystemResourceError(
                f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                f"cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise SystemResourceError(f"--device {requested}: MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"--device {requested}: the harness runs on cpu, cuda or mps")


def check_set(spec: SetSpec, benchmark: Benchmark, skip_bad: bool) -> FileTable | None:
    """The set can be read: its root exists, its list has entries, every listed file exists and
    has the header of an image.

    Generated sets (``shapes``) cannot be missing. Only image headers are read here (a full decode
    costs as much as loading the set); a file whose pixels are damaged past its header is reported
    when the set is loaded. Returns the file table of a list or folder set (else None).
    """
    if spec.type == "shapes":
        return None
    if spec.type == "arrays":
        from dfb_ood.harness.data.arrays import file_bytes

        file_bytes(spec)  # the file exists, is a regular file and matches its recorded SHA-256
        return None
    check_root(spec, benchmark)
    if spec.type in ("imglist", "folder"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # with --skip-bad, the load reports the skipped entries
            return file_table(spec, benchmark, skip_bad=skip_bad, headers=True)
    if spec.type == "torchvision" and len(open_torchvision(spec)) == 0:
        raise InputError(f"{spec.source}: set {spec.name!r} is empty")
    return None


def check_benchmark_data(benchmark: Benchmark, skip_bad: bool) -> None:
    """Every set of the benchmark is readable, and there is at least one OOD test set.

    An OOD set that lists files of the ID val or test set is announced (:class:`OverlapWarning`,
    naming both sets and the count), not refused: published benchmarks have such overlaps.
    """
    if not benchmark.near and not benchmark.far:
        raise InputError(
            f"{benchmark.source or benchmark.name}: the benchmark has no near or far OOD set to evaluate"
        )
    tables: dict[str, tuple[SetSpec, FileTable]] = {}
    for spec in benchmark.sets():
        try:
            table = check_set(spec, benchmark, skip_bad)
        except FileNotFoundError as error:
            if benchmark.hint and benchmark.hint not in str(error):
                raise MissingInputError(f"{error}; {benchmark.hint}") from None
            raise
        if table is not None:
            tables[spec.name] = (spec, table)
    for overlap in benchmark_overlaps(benchmark, tables):
        warnings.warn(OverlapWarning(f"{benchmark.source or benchmark.name}: {overlap}"), stacklevel=2)


#: What ``--checkpoint`` reads: safetensors, a PyTorch state dict, or BiT's published .npz.
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".npz")


def _checkpoint_folder_message(path: Path) -> str:
    """Why a folder is not a ``--checkpoint``, naming the weights file inside when there is one."""
    try:
        inside = sorted(
            p.name for p in path.iterdir() if p.suffix.lower() in CHECKPOINT_SUFFIXES and p.is_file()
        )
    except OSError:
        inside = []
    wanted = "a weights file (" + ", ".join(CHECKPOINT_SUFFIXES) + "), not a folder"
    if len(inside) == 1:
        return f"--checkpoint {path} is a folder; give {wanted}: --checkpoint {path / inside[0]}"
    if inside:
        shown = ", ".join(inside[:4]) + (", ..." if len(inside) > 4 else "")
        return f"--checkpoint {path} is a folder; give {wanted}, e.g. one of {shown} in it"
    return f"--checkpoint {path} is a folder and holds no weights file; give {wanted}"


def check_checkpoint(
    path: Path | None,
    network: str | None = None,
    num_classes: int | None = None,
    options: dict[str, Any] | None = None,
) -> None:
    """A ``--checkpoint`` can be read as weights and, given the network, fits it as stage 1 loads it.

    With ``network``, the file is fitted to that network built on the ``meta`` device (no memory,
    no weights copied), so keys, shapes and tensor kinds (no int64 or bool weights) are checked
    before the run folder is made, not minutes later in stage 1.
    """
    if path is None:
        return
    if path.is_dir():
        raise InputError(_checkpoint_folder_message(path))
    if path.suffix == ".npz":  # BiT's published format, read by the network itself
        if not zipfile.is_zipfile(path):
            raise InputError(f"--checkpoint {path}: not a readable .npz archive (truncated or not weights?)")
        return
    from dfb_ood.networks import CheckpointError, create_network, load_foreign_state_dict, read_state_dict

    net = None
    if network is not None and num_classes is not None:
        try:
            with torch.device("meta"):
                net = create_network(network, num_classes, **(options or {}))
        except (RuntimeError, NotImplementedError):  # a network that needs real tensors to be built
            net = None  # stage 1 fits the file to the real network and reports the same
    try:
        if net is None:
            read_state_dict(path)
            return
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*meta parameter.*", category=UserWarning)
            load_foreign_state_dict(net, path, head="require")
    except CheckpointError as error:
        raise InputError(str(error)) from None
