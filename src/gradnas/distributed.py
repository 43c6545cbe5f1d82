"""Data parallelism with torch.distributed: one process per device, started by torchrun.

    torchrun --nproc_per_node K -m gradnas search ...     (or train)

Every rank holds the whole model and draws the same global batch (batches depend only on the seed and
the epoch), takes its own 1/K slice of it, and averages every gradient with the other ranks before an
optimizer uses it, so the update is the one a single process would make on the global batch (up to
BatchNorm, whose batch statistics are per rank, as in any data-parallel run). Only rank 0 writes files.

NCCL joins CUDA processes, gloo CPU ones. Without torchrun (or with one process) everything here is a
no-op and the code runs as a plain single process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.distributed as dist

from gradnas.errors import GradnasError


@dataclass(frozen=True)
class World:
    """Where this process stands: its rank, the number of processes, its rank on this machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and shows progress."""
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of n items (sizes differ by at most one)."""
        return slice(self.rank * n // self.size, (self.rank + 1) * n // self.size)


def world() -> World:
    """The current process group's view of this process (a single-process World when none is set up)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return World()


def launched() -> bool:
    """True when torchrun (or another launcher setting its variables) started more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str = "auto") -> World:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT): NCCL when ``device`` means CUDA, gloo otherwise. Without a launcher this
    does nothing and returns the single-process World."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        return world()
    if not dist.is_available():
        raise GradnasError("this torch build has no torch.distributed; run a single process (without torchrun)")
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise GradnasError(f"WORLD_SIZE is set but {', '.join(missing)} is not; start the processes with "
                           "`torchrun --nproc_per_node K -m gradnas ...`")
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        if not torch.cuda.is_available():
            raise GradnasError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
        if device not in ("auto", "cuda"):
            raise GradnasError(f"under torchrun give --device cuda (or auto), not {device!r}: each rank takes the "
                               "GPU of its LOCAL_RANK")
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return world()


def shutdown() -> None:
    """Leave the process group (if this process joined one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(name: str) -> torch.device:
    """The device this process computes on: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``;
    in a multi-process run CUDA means this rank's GPU, cuda:LOCAL_RANK."""
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise GradnasError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise GradnasError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
    w = world()
    if w.size > 1 and device.type == "cuda":
        return torch.device("cuda", w.local_rank)
    return device


def _collective_device(tensors: Sequence[torch.Tensor]) -> torch.device:
    return tensors[0].device if tensors else torch.device("cpu")


def average_(tensors: Sequence[torch.Tensor]) -> None:
    """Replace each tensor by its mean over all ranks, in place. Tensors of one dtype travel in one buffer
    (one all-reduce per dtype, not one per parameter). A no-op on a single process."""
    w = world()
    if w.size == 1:
        return
    groups: dict = {}
    for t in tensors:
        if t is not None:
            groups.setdefault((t.dtype, t.device), []).append(t)
    for group in groups.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(w.size)
        offset = 0
        for t in group:
            n = t.numel()
            t.copy_(flat[offset:offset + n].view(t.shape))
            offset += n


def sum_values(values: Sequence[float], device: torch.device | str = "cpu") -> list:
    """The sums over all ranks of a few numbers (float64: exact for counts), e.g. loss sums and image counts."""
    if world().size == 1:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def broadcast_state(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank, so all start from the same model."""
    if world().size == 1:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def average_buffers(module: torch.nn.Module) -> None:
    """Average the floating-point buffers (BatchNorm running statistics) over ranks.

    Each rank's BN statistics come from its own slice of every batch; averaging them before evaluating or
    saving makes every rank hold the same model (for BN, the mean of the per-rank running means)."""
    average_([b for b in module.buffers() if b.is_floating_point()])


def run_on_main(fn: Callable[[], None]) -> None:
    """Run ``fn`` on rank 0 only; a GradnasError it raises is raised on every rank (the others would
    otherwise wait for rank 0 forever). Every rank continues only after rank 0 is done."""
    w = world()
    if w.size == 1:
        fn()
        return
    message = None
    if w.is_main:
        try:
            fn()
        except GradnasError as exc:
            message = str(exc)
    box = [message]
    dist.broadcast_object_list(box, src=0)
    if box[0] is not None:
        raise GradnasError(box[0])


def from_main(value):
    """Rank 0's ``value`` on every rank (e.g. a run folder named after the time)."""
    if world().size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_divisible(batch_size: int, what: str = "batch_size") -> None:
    """A global batch must split evenly over the ranks (so the averaged gradient is the global mean)."""
    w = world()
    if batch_size % w.size:
        raise GradnasError(f"{what} {batch_size} does not split over {w.size} processes; use a multiple of "
                           f"{w.size} (the global batch is divided evenly among the ranks)")
