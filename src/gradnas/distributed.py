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
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
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


TIMEOUT_ENV = "GRADNAS_DIST_TIMEOUT"  # seconds a collective may wait for the other processes
DEFAULT_TIMEOUT = 300.0
_peers: list = []  # (host, pid) of every rank, gathered when the group is joined (which rank was lost)


def dist_timeout(seconds: float | None = None) -> float:
    """The process-group timeout in seconds: ``seconds`` (--dist-timeout), else $GRADNAS_DIST_TIMEOUT, else
    :data:`DEFAULT_TIMEOUT`."""
    source = "--dist-timeout"
    if seconds is None:
        raw = os.environ.get(TIMEOUT_ENV)
        if raw is None:
            return DEFAULT_TIMEOUT
        source = f"${TIMEOUT_ENV}"
        try:
            seconds = float(raw)
        except ValueError:
            raise GradnasError(f"{source}={raw!r} is not a number of seconds; set it to e.g. 300") from None
    if not 0 < seconds < 10**7:
        raise GradnasError(f"{source} {seconds!r}: give the seconds a process may wait for the others, a number > 0 "
                           f"(default {DEFAULT_TIMEOUT:.0f})")
    return float(seconds)


def launch_rank() -> int:
    """This process's rank as the launcher set it (0 without one), also before and after the group exists."""
    try:
        return int(os.environ.get("RANK", "0")) if launched() else 0
    except ValueError:
        return 0


def init_from_env(device: str = "auto", *, timeout: float | None = None) -> World:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT): NCCL when ``device`` means CUDA, gloo otherwise; a collective waits at most
    ``timeout`` seconds (:func:`dist_timeout`) for the others. Without a launcher this does nothing and returns
    the single-process World."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        return world()
    seconds = dist_timeout(timeout)
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
    dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timedelta(seconds=seconds))
    global _timeout
    _timeout = seconds
    peers = [None] * dist.get_world_size()
    dist.all_gather_object(peers, (socket.gethostname(), os.getpid()))
    _peers[:] = peers
    global _store
    try:  # where a rank that stops with an error of its own says so (torchrun's agent keeps the store alive)
        _store = dist.distributed_c10d._get_default_store()
    except (AttributeError, RuntimeError, ValueError):
        _store = None
    return world()


_store = None
_FAILED_KEY = "gradnas/failed/{}"


def mark_stopped() -> None:
    """Tell the other ranks that this one stops on its own (an error it reports itself, or a signal), so that a
    survivor does not call it lost."""
    if _store is not None and world().size > 1:
        try:
            _store.set(_FAILED_KEY.format(world().rank), "1")
        except Exception:  # noqa: BLE001 - the store may be gone with rank 0; then the survivors say more
            pass


def _reported(rank: int) -> bool:
    try:
        return _store is not None and _store.check([_FAILED_KEY.format(rank)])
    except Exception:  # noqa: BLE001
        return False


_timeout = DEFAULT_TIMEOUT
_abandoned = False


def abandon() -> None:
    """This rank stops without the others (an interrupt): the next :func:`shutdown` skips its barrier."""
    global _abandoned
    _abandoned = True


def shutdown(*, clean: bool = True) -> None:
    """Leave the process group (if this process joined one). ``clean`` (every rank got here without an error):
    first wait for all ranks at a barrier, so that no rank tears its connections down while another still
    finishes its last writes and collectives; a rank leaving early made gloo's threads of the others abort
    ("terminate called without an active exception", SIGABRT) after the results were written. After an error
    or interrupt the others may never arrive, so the group is left at once."""
    global _abandoned
    if not (dist.is_available() and dist.is_initialized()):
        return
    clean, _abandoned = clean and not _abandoned, False
    try:
        if clean and world().size > 1:
            dist.barrier()
    except RuntimeError:
        pass  # another rank is gone already; leave anyway
    finally:
        dist.destroy_process_group()
        _peers.clear()


def _dead(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie not yet reaped by torchrun counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def lost_ranks(wait: float = 0.0) -> list:
    """The ranks on this machine whose process has ended (waiting up to ``wait`` seconds for one to show)."""
    me = socket.gethostname()
    deadline = time.monotonic() + wait
    while True:
        lost = [r for r, (host, pid) in enumerate(_peers) if host == me and pid != os.getpid() and _dead(pid)]
        if lost or time.monotonic() >= deadline:
            return lost
        time.sleep(0.1)


def is_comm_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective that failed (a peer gone, a timeout), not an error of gradnas' own."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(k in text for k in (
        "gloo", "nccl", "connection closed", "connection reset", "timed out", "timeout", "broken pipe", "peer"))


def lost_message(exc: BaseException | None, *, where: str, resume: str) -> str | None:
    """The one line of a multi-process run that lost a peer (``exc``: the failed collective, or None after a
    signal), said by the lowest surviving rank of this machine only (None on the others, and None after a
    signal when every process is still there: a plain interrupt). ``where``: e.g. "in epoch 3";
    ``resume``: the sentence on what is saved and the command that continues."""
    w = world()
    lost = lost_ranks(wait=1.0 if exc is not None else 0.3)
    if lost and all(_reported(r) for r in lost):
        # they stopped on their own (an error they said, or the same signal): not lost
        return None if exc is None else ""
    if exc is None and not lost:
        return None
    survivors = [r for r in range(w.size) if r not in lost]
    if survivors and w.rank != min(survivors):
        return ""  # another survivor says it
    if lost:
        what = f"rank {', '.join(map(str, lost))} ended (its process was lost) {where}"
    elif "timed out" in str(exc).lower() or "timeout" in str(exc).lower():
        what = (f"another rank did not answer within the process-group timeout ({_timeout:.0f} s, --dist-timeout or "
                f"${TIMEOUT_ENV}) {where}; it hung or is gone")
    else:
        what = f"lost contact with another rank {where} ({str(exc).strip().splitlines()[0] if exc else ''})"
    return f"{what}; {resume}"


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
        if device.type not in ("cpu", "cuda"):
            raise GradnasError(f"device {name!r} is not one gradnas runs on; use auto, cpu, cuda or cuda:N")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise GradnasError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise GradnasError(f"device {name!r} requested but this machine has {torch.cuda.device_count()} GPU(s) "
                               f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
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
