"""Several processes, one device each, on one node or several: ``torchrun -m dfb_ood bench ...``.

torchrun (``torch.distributed.run``) starts one process per device and tells each its place in
the ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` environment variables. The pipeline then:

- trains with DistributedDataParallel, every rank on its slice of the *same* global batch, so a
  run gives the single-process result up to floating-point reduction order;
- splits every forward pass (CAM masks, cached outputs) into contiguous shards, one per rank,
  and gathers them back in dataset order (contiguity is what keeps the order for free);
- lets rank 0 alone write to the run directory and evaluate; the other ranks compute, hand their
  shards over, and wait for rank 0 at the end.

On several nodes the run directory must be on a filesystem that every node shares (rank 0
writes it; every rank reads finished networks, masks and resume checkpoints back from it), and
every node needs the data, as a single process does.

Without those variables (or with a world of one) every helper here is a no-op, so single-process
code paths stay exactly what they were. The state lives in this module because a process has one
process group, set up once by :func:`init` and torn down by :func:`shutdown`.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from dfb_ood.errors import InputError

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
# Collectives between stages wait while rank 0 writes artifacts (masks, previews, checkpoints).
TIMEOUT = timedelta(minutes=30)
# The last wait covers rank 0's whole evaluation (detectors, searches, ODIN passes): allow hours.
FINISH_TIMEOUT = timedelta(hours=24)
# gather_rows_into moves at most this many bytes of each rank's shard per collective step.
GATHER_CHUNK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class World:
    """This process's place among the ranks; ``size`` 1 and ``backend`` None when not distributed."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        """More than one process takes part."""
        return self.size > 1


_state: dict[str, Any] = {"world": World(), "device": torch.device("cpu"), "finish": None, "owned": False}


def launched() -> bool:
    """True inside a torchrun worker (the launcher sets RANK, WORLD_SIZE and LOCAL_RANK)."""
    return all(name in os.environ for name in ENV_VARS)


def _env_int(name: str) -> int:
    try:
        return int(os.environ[name])
    except ValueError:
        raise InputError(f"{name} must be an integer, not {os.environ[name]!r}") from None


def device_for(requested: str | None) -> torch.device:
    """The device this process computes on.

    Alone: ``requested``, else CUDA when present, else the CPU. Under torchrun every rank takes
    ``cuda:<LOCAL_RANK>`` so that the ranks of one node never share a GPU; an explicit GPU index
    would put them all on one device, so it is refused with the way to choose GPUs instead.
    """
    if requested is None:
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        kind = torch.device(requested).type
    if not launched() or _env_int("WORLD_SIZE") <= 1:
        return torch.device(requested) if requested else torch.device(kind)
    if kind != "cuda":
        return torch.device(kind)
    if requested is not None and torch.device(requested).index is not None:
        raise InputError(
            f"--device {requested}: under torchrun each process uses cuda:<LOCAL_RANK>; pass --device cuda "
            "(or leave it out) and choose the GPUs with CUDA_VISIBLE_DEVICES"
        )
    local_rank = _env_int("LOCAL_RANK")
    if local_rank >= torch.cuda.device_count():
        raise InputError(
            f"local rank {local_rank} has no GPU: this node shows {torch.cuda.device_count()}; "
            "start at most that many processes per node (--nproc_per_node)"
        )
    return torch.device("cuda", local_rank)


def init(device: torch.device) -> World:
    """Join the process group once per process (NCCL for CUDA devices, else gloo); idempotent.

    Outside torchrun, or with a world of one, nothing is initialised and single-process code runs
    unchanged. A process group set up by the caller beforehand is used as it is.
    """
    if _state["world"].distributed:
        return _state["world"]
    if not launched() or _env_int("WORLD_SIZE") <= 1:
        return _state["world"]
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL collectives and object broadcasts use the current device
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"
        dist.init_process_group(backend=backend, timeout=TIMEOUT)
        _state["owned"] = True
        atexit.register(shutdown)
    backend = str(dist.get_backend())
    _state["device"] = device if backend == "nccl" else torch.device("cpu")
    _state["world"] = World(
        rank=dist.get_rank(),
        size=dist.get_world_size(),
        local_rank=_env_int("LOCAL_RANK"),
        backend=backend,
    )
    # A CPU group with a long timeout for the final wait, so that slow rank-0 evaluation never
    # trips the (shorter) timeout of the training group.
    _state["finish"] = dist.new_group(backend="gloo", timeout=FINISH_TIMEOUT)
    return _state["world"]


def world() -> World:
    """This process's :class:`World` (rank 0 of 1 until :func:`init` joins a group)."""
    return _state["world"]


def is_main() -> bool:
    """Rank 0: the one process that writes artifacts, evaluates and prints."""
    return world().rank == 0


def barrier() -> None:
    """Wait for every rank (no-op alone)."""
    if world().distributed:
        dist.barrier()


def finish() -> None:
    """Wait, under a long timeout, until every rank (rank 0 last, after evaluation) gets here."""
    if world().distributed:
        dist.barrier(group=_state["finish"])


def from_main(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a picklable object), so all ranks take the same branch."""
    if not world().distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def average(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over the ranks, as a new tensor on the tensor's device."""
    if not world().distributed:
        return tensor
    reduced = tensor.detach().to(_state["device"], copy=True)
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return (reduced / world().size).to(tensor.device)


def shard_range(n: int, rank: int | None = None, size: int | None = None) -> tuple[int, int]:
    """``(start, stop)`` of a rank's contiguous share of ``n`` rows (sizes differ by at most one).

    Contiguous shards concatenated in rank order are the rows in dataset order, so gathering
    needs no index bookkeeping.
    """
    team = world()
    rank = team.rank if rank is None else rank
    size = team.size if size is None else size
    return n * rank // size, n * (rank + 1) // size


def gather_rows(part: np.ndarray, n: int) -> np.ndarray:
    """All ranks' shards (rows ``shard_range(n)``) concatenated in dataset order, on every rank.

    The whole array lands in every rank's memory: for what every rank needs whole (cached
    features); what only rank 0 writes goes through :func:`gather_rows_into` instead. Shards
    differ in length by one at most; each is padded to the longest for the collective.
    """
    team = world()
    start, stop = shard_range(n)
    if part.shape[0] != stop - start:
        raise InputError(f"rank {team.rank} holds {part.shape[0]} rows; its shard of {n} is {stop - start}")
    if not team.distributed or n == 0:
        return part
    sizes = [b - a for a, b in (shard_range(n, r, team.size) for r in range(team.size))]
    padded = np.zeros((max(sizes), *part.shape[1:]), dtype=part.dtype)
    padded[: part.shape[0]] = part
    tensor = torch.from_numpy(padded).to(_state["device"])
    chunks = [torch.empty_like(tensor) for _ in range(team.size)]
    dist.all_gather(chunks, tensor)
    return np.concatenate([chunk[:size].cpu().numpy() for chunk, size in zip(chunks, sizes)])


def gather_rows_into(
    part: np.ndarray, n: int, out: np.ndarray | None, dst: int = 0, chunk_rows: int | None = None
) -> None:
    """Write all ranks' shards (rows ``shard_range(n)``) into ``out`` on rank ``dst``, in dataset order.

    :func:`gather_rows` hands over each shard whole, so the receiving rank holds every shard in
    memory at once, plus their concatenation: a set's outputs must fit in memory however they are
    written. Here ``out`` is preallocated by rank ``dst`` (a memory map, say; None on the other
    ranks) and the shards travel in steps of at most ``chunk_rows`` rows each (by default as many
    as fit in :data:`GATHER_CHUNK_BYTES`, at least one), each written into ``out`` as it arrives:
    the memory a step takes is bounded by the world size times one step's piece, whatever ``n``.
    ``part`` may itself be a memory map, read a step at a time; when it is ``out``'s own rows
    (rank ``dst`` passed into its share of ``out``) they are not copied onto themselves.

    Every rank takes the same number of steps (the longest shard's). Shards differ in length by
    one at most (:func:`shard_range`), and gloo's gather needs equal shapes, so each step's piece
    is padded to that step's common length; the padding is dropped on arrival. The pieces travel
    on the world's device (the GPU under NCCL, else the CPU).
    """
    team = world()
    start, stop = shard_range(n)
    if part.shape[0] != stop - start:
        raise InputError(f"rank {team.rank} holds {part.shape[0]} rows; its shard of {n} is {stop - start}")
    if team.rank == dst:
        if out is None or out.shape != (n, *part.shape[1:]) or out.dtype != part.dtype:
            got = "None" if out is None else f"{out.dtype} {out.shape}"
            raise InputError(f"gather into {got}: rank {dst} needs {part.dtype} {(n, *part.shape[1:])}")
    elif out is not None:
        raise InputError(f"rank {team.rank} gathers nothing (rank {dst} does): pass out=None")
    if chunk_rows is not None and chunk_rows < 1:
        raise InputError(f"chunk_rows must be at least 1, got {chunk_rows}")
    row_bytes = max(1, int(np.prod(part.shape[1:], dtype=np.int64)) * part.dtype.itemsize)
    step_rows = chunk_rows or max(1, GATHER_CHUNK_BYTES // row_bytes)
    if not team.distributed:
        if out is not None and not _same_rows(part, out[start:stop]):
            for first in range(0, part.shape[0], step_rows):
                out[start + first : start + first + step_rows] = part[first : first + step_rows]
        return
    shards = [shard_range(n, r, team.size) for r in range(team.size)]
    longest = max(b - a for a, b in shards)
    own = out is not None and _same_rows(part, out[start:stop])
    for first in range(0, longest, step_rows):
        rows = min(step_rows, longest - first)
        piece = np.zeros((rows, *part.shape[1:]), dtype=part.dtype)
        mine = part[first : first + rows]
        piece[: mine.shape[0]] = mine
        tensor = torch.from_numpy(piece).to(_state["device"])
        pieces = [torch.empty_like(tensor) for _ in range(team.size)] if team.rank == dst else None
        dist.gather(tensor, pieces, dst=dst)
        if pieces is None or out is None:
            continue
        for rank, ((a, b), received) in enumerate(zip(shards, pieces)):
            count = min(rows, max(0, b - a - first))
            if count and not (rank == team.rank and own):
                out[a + first : a + first + count] = received[:count].cpu().numpy()


def _same_rows(part: np.ndarray, rows: np.ndarray) -> bool:
    """Whether ``part`` is the very memory of ``rows`` (same start, shape and strides)."""
    return (
        part.shape == rows.shape
        and part.strides == rows.strides
        and part.__array_interface__["data"][0] == rows.__array_interface__["data"][0]
    )


def shutdown() -> None:
    """Leave the process group this module joined (so the process exits without NCCL warnings)."""
    if _state["owned"] and dist.is_initialized():
        dist.destroy_process_group()
    _state.update(world=World(), device=torch.device("cpu"), finish=None, owned=False)


# ---------------------------------------------------------------------- --launcher torchrun
def strip_launcher_options(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--launcher X`` and ``--nproc N`` (either spelling), for the relaunched workers."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--launcher", "--nproc"):
            skip = True
            continue
        if arg.startswith(("--launcher=", "--nproc=")):
            continue
        out.append(arg)
    return out


def torchrun_command(argv: Sequence[str], nproc: int) -> list[str]:
    """The command that runs ``python -m dfb_ood <argv>`` as ``nproc`` torchrun workers on this node.

    ``--standalone`` lets torchrun pick a free local port, so two runs on one machine never clash.
    """
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "dfb_ood",
        *strip_launcher_options(argv),
    ]


def relaunch(argv: Sequence[str], nproc: int, run: Callable[[list[str]], int] | None = None) -> int:
    """Run this command again under torchrun with ``nproc`` workers; the launcher's exit code.

    ``run`` executes the command line (``subprocess.call`` unless a test swaps it).
    """
    if nproc < 1:
        raise InputError(f"--nproc must be at least 1, got {nproc}")
    return (run or subprocess.call)(torchrun_command(argv, nproc))
