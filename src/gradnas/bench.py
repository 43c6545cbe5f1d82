"""`gradnas bench`: seconds per search step of each method on random data with the real supernet of a space
(darts or nb201) and a relaxation (softmax, sigmoid or gumbel), and (``--train``) seconds per training
step of an evaluation network in each precision / memory format.

Each method or variant runs in a fresh process, so its peak memory is its own: peak RSS of that process
on CPU (it includes the ~0.3 GB of Python + torch), max allocated memory on CUDA. The first steps are
warm-up (oneDNN builds its kernels there) and are not timed.

Every measurement also says whether it can be trusted: the CPU time the machine spent busy during it,
minus the CPU time of the bench itself, over the wall time, is how many cores other processes took
(:func:`others_load`); above ``LOAD_THRESHOLD_CORES`` the row carries a warning. A search-step row also
has its FLOPs (one untimed step counted with torch's FLOP formulas), its GFLOP/s and their share
of the peak GFLOP/s that a large matmul reaches on the same device and threads, measured once per run.
With ``sweep`` every method is timed at each value of one of batch / cells / channels.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from gradnas import malloc
from gradnas.config import SearchConfig
from gradnas.errors import GradnasError
from gradnas.search import accel
from gradnas.search.loop import build_optimizers
from gradnas.relax import make_relaxation
from gradnas.search.methods import ArchOptimizer, METHODS, make_method
from gradnas.space import build_supernet, get_space

# "forward-backward" is the plain baseline the figures start from: one pass, all gradients.
BASELINE = "forward-backward"
# What `gradnas bench` times by default.
BENCH_METHODS = f"{BASELINE},single-level,darts,milenas,darts:2,milenas:2"
# Cores other processes may take during a measurement before its figures count as not comparable.
LOAD_THRESHOLD_CORES = 0.25
# The keys `--sweep KEY=V1,V2,...` may vary (one per run).
SWEEP_KEYS = ("batch", "cells", "channels")
# The matmul that measures the device's peak GFLOP/s: n x n float32, repeated for about PEAK_SECONDS.
PEAK_MATMUL_N = 2048
PEAK_SECONDS = 1.0
# How long `--threads auto` watches the machine to see which cores other processes keep busy.
AUTO_THREADS_WINDOW_S = 0.5


# ------------------------------------------------------------------------------------------ machine load

@dataclass(frozen=True)
class CpuReading:
    """One reading of the CPU counters: ``busy_s`` is the CPU seconds the cores this process may use have
    spent busy since boot (None where /proc/stat cannot be read), ``own_s`` the CPU seconds of this process
    and of its children that have ended, ``wall_s`` a monotonic clock, ``loadavg`` os.getloadavg() or None."""
    busy_s: float | None
    own_s: float
    wall_s: float
    loadavg: tuple | None


def busy_seconds(stat_text: str, cpus=None, ticks_per_s: float = 100.0) -> float:
    """Busy CPU seconds in the text of /proc/stat: user + nice + system + irq + softirq + steal (guest time
    is already inside user; idle and iowait are not busy) of the cores ``cpus`` (their ``cpuN`` lines), or of
    the whole machine (the ``cpu`` line) when ``cpus`` is None. Steal counts: a hypervisor that gives the core
    to another machine takes it from the bench as surely as a local process does."""
    want = None if cpus is None else {f"cpu{c}" for c in cpus}
    total, seen = 0, 0
    for line in stat_text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or (name != "cpu" if want is None else name not in want):
            continue
        f = [int(x) for x in rest.split()]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (f + [0] * 8)[:8]
        total += user + nice + system + irq + softirq + steal
        seen += 1
    if not seen:
        raise ValueError("no cpu line for the cores asked for")
    return total / ticks_per_s


def _my_cpus():
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux: the whole machine
        return None


def read_cpu() -> CpuReading:
    """The counters now (see :class:`CpuReading`)."""
    try:
        with open("/proc/stat") as f:
            busy = busy_seconds(f.read(), _my_cpus(), os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, AttributeError):
        busy = None
    own = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        own += ru.ru_utime + ru.ru_stime
    try:
        loadavg = tuple(round(x, 2) for x in os.getloadavg())
    except (OSError, AttributeError):
        loadavg = None
    return CpuReading(busy, own, time.monotonic(), loadavg)


def others_load(before: CpuReading, after: CpuReading) -> dict:
    """How many cores other processes kept busy between two readings: (busy CPU time of the cores this
    process may use - the CPU time of this process and its children) / wall time, never below 0 (the two
    counters tick at different resolutions). ``readable`` is False where the machine's counters are missing."""
    wall = after.wall_s - before.wall_s
    load = {"readable": before.busy_s is not None and after.busy_s is not None and wall > 0,
            "others_cores": None, "own_cores": None, "window_s": round(wall, 3),
            "loadavg_before": before.loadavg, "loadavg_after": after.loadavg}
    if load["readable"]:
        own = (after.own_s - before.own_s) / wall
        load["own_cores"] = round(own, 3)
        load["others_cores"] = round(max(0.0, (after.busy_s - before.busy_s) / wall - own), 3)
    return load


def load_warning(load: dict, threshold: float = LOAD_THRESHOLD_CORES) -> str | None:
    """The warning a measurement taken under ``load`` (:func:`others_load`) carries, or None when it was quiet."""
    if not load["readable"]:
        return ("the machine's CPU load could not be read (no /proc/stat): whether other processes shared the CPU "
                "is unknown")
    if load["others_cores"] > threshold:
        return (f"other processes used {load['others_cores']:.2f} CPU cores meanwhile (more than {threshold}): "
                "these figures are not comparable; rerun on a quiet machine")
    return None


def auto_threads(available: int, others_cores: float | None) -> int:
    """The thread count `--threads auto` takes: the ``available`` cores minus those other processes keep
    busy (``others_cores``, rounded to whole cores), at least 1; all of them when the load is unknown."""
    if others_cores is None:
        return available
    return max(1, available - round(others_cores))


def resolve_threads(threads) -> tuple:
    """(thread count, why) for ``threads``: None (torch's default), an int from 1 to the cores this process
    may use, or "auto" (:func:`auto_threads` over a short look at the machine)."""
    from gradnas.run import available_cores
    cores = available_cores()
    if threads is None:
        return torch.get_num_threads(), f"torch's default ({cores} core(s) available)"
    if threads == "auto":
        before = read_cpu()
        time.sleep(AUTO_THREADS_WINDOW_S)
        load = others_load(before, read_cpu())
        n = auto_threads(cores, load["others_cores"])
        if load["others_cores"] is None:
            return n, f"auto: {cores} core(s) available; the machine's load could not be read, so all of them"
        return n, (f"auto: {cores} core(s) available, other processes kept {load['others_cores']:.2f} busy over "
                   f"{load['window_s']} s")
    if type(threads) is not int or not 1 <= threads <= cores:
        raise GradnasError(f"bench: --threads {threads!r}: this process may use {cores} CPU core(s); give a number "
                           f"from 1 to {cores}, or auto (the cores that are free now)")
    return threads, "given"


def _measured(fn, spec: dict, *, fresh: bool = True) -> dict:
    """``fn(spec)`` in a fresh spawned process (``fresh``) or in this one, with the machine's load over it
    (for a fresh process: over its whole life, start and imports included)."""
    before = read_cpu()
    if fresh:
        with mp.get_context("spawn").Pool(1) as pool:
            row = pool.apply(fn, (spec,))
            pool.close()
            pool.join()  # the child has ended, so its CPU time is in RUSAGE_CHILDREN of the reading below
    else:
        row = fn(spec)
    load = others_load(before, read_cpu())
    row["load"] = load
    row["load_warning"] = load_warning(load)
    return row


def _load_summary(rows: list, peak: dict | None = None) -> str | None:
    """One line for the whole run: how many of its measurements were not quiet, or None."""
    measured = rows + ([peak] if peak else [])
    unread = next((r["load"] for r in measured if not r["load"]["readable"]), None)
    if unread:
        return load_warning(unread)
    busy = [r for r in measured if r["load_warning"]]
    if not busy:
        return None
    worst = max(r["load"]["others_cores"] for r in busy)
    return (f"{len(busy)} of {len(measured)} measurements ran while other processes used up to {worst:.2f} CPU "
            "cores: the figures are not comparable; rerun on a quiet machine")


# ------------------------------------------------------------------------------------------ FLOPs

class _FlopCount(TorchDispatchMode):
    """The FLOPs of the ops run inside it, by torch.utils.flop_counter's formulas (matmuls, convolutions and
    attention, forward and backward; elementwise ops, pooling and BatchNorm count 0): the same count as
    FlopCounterMode, without its per-module tracking hooks, which slow a supernet's many small modules down so
    much that counting one second-order step took far longer than timing all of them."""

    def __init__(self):
        super().__init__()
        from torch.utils.flop_counter import flop_registry
        self.registry, self.flops = flop_registry, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = self.registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        return out


def count_flops(fn, *args) -> int:
    """FLOPs of one call ``fn(*args)`` (see :class:`_FlopCount`)."""
    with _FlopCount() as counter:
        fn(*args)
    return int(counter.flops)


def _peak_one(spec: dict) -> dict:
    """GFLOP/s of float32 PEAK_MATMUL_N-square matmuls for about ``spec['seconds']`` on the bench's device and
    threads: the peak the steps' GFLOP/s are a share of. Run in the bench's own process (a fresh one would
    cost a torch import for no change in the figure); its thread count is put back after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(spec["threads"])
    try:
        return _peak_matmuls(torch.device(spec["device"]), spec["n"], spec["seconds"])
    finally:
        torch.set_num_threads(previous)


def _peak_matmuls(device, n: int, seconds: float) -> dict:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g).to(device), torch.randn(n, n, generator=g).to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    a @ b  # warm-up
    sync()
    reps, t0 = 0, time.perf_counter()
    while True:
        for _ in range(4 if device.type == "cuda" else 1):  # a GPU matmul takes ~1 ms: fewer syncs
            a @ b
            reps += 1
        sync()
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            break
    return {"matmul": f"{n}x{n} float32", "reps": reps, "seconds": elapsed,
            "gflops_per_sec": 2 * n**3 * reps / elapsed / 1e9}


# ------------------------------------------------------------------------------------------ search steps

def _bench_one(spec: dict) -> dict:
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    relax = spec.get("relax", "softmax")
    space = spec.get("space", "darts")
    model = build_supernet(space, space_config(space, cells=spec["cells"], channels=spec["channels"]), relax,
                           in_channels=3, num_classes=10, seed=0).to(device)
    g = torch.Generator().manual_seed(0)

    def batch():
        x = torch.randn(spec["batch"], 3, spec["size"], spec["size"], generator=g)
        y = torch.randint(0, 10, (spec["batch"],), generator=g)
        return x.to(device), y.to(device)

    # the papers' default optimizers, exactly as a search builds them
    w_optim, a_optim, _ = build_optimizers(SearchConfig(relax=relax), model)
    # the step's forward passes as a search with `compile` / `precision` runs them (gradnas.search.accel)
    compile_mode, precision = spec.get("compile", "off"), spec.get("precision", "fp32")
    net = accel.compile_forward(model, compile_mode)
    if spec["method"] == BASELINE:
        def step(tr, va):
            if hasattr(net, "step_begin"):
                net.step_begin()
            model.zero_grad(set_to_none=True)
            with accel.autocast(device, precision):
                logits = net(tr[0])
            F.cross_entropy(accel.full_precision(logits), tr[1]).backward()
    else:
        method = make_method(spec["method"], model, w_optim=w_optim, a_optim=a_optim, grad_clip=5.0,
                             order=spec["order"], lam=1.0, net=net, precision=precision)

        def step(tr, va):
            method.begin_step()
            return method.step(tr, va)
    # The FLOPs are counted over one untimed step: the first warm-up step, or (no warm-up) one more at the end.
    warmup, steps = spec["warmup"], spec["steps"]
    batches = [(batch(), batch()) for _ in range(max(warmup, 1) + steps)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    flops = None
    if warmup:
        flops = count_flops(step, *batches.pop(0))
        warmup -= 1
    times = _time_steps(step, batches[:warmup + steps], warmup, device)
    peak_gb, peak_kind = _peak_memory(device)
    if flops is None:
        flops = count_flops(step, *batches[-1])  # after the peak memory is read
    sec = statistics.mean(times)
    return {"method": spec["method"], "order": spec["order"], "sec_per_step": sec, "sec_min": min(times),
            "images_per_sec": spec["batch"] / sec, "peak_memory_gb": peak_gb, "peak_memory_kind": peak_kind,
            "batch": spec["batch"], "cells": spec["cells"], "channels": spec["channels"],
            "compile": compile_mode, "precision": precision, "allocator": malloc.loaded(),
            "flops_per_step": flops, "gflops_per_sec": flops / sec / 1e9}


def space_config(space: str, *, cells: int | None, channels: int):
    """The space's config with `cells` (darts: cells; nb201: cells per stage; None: the default) and `channels`,
    set through the fields its plug-in maps the generic shape flags to (``shape_keys``)."""
    spec = get_space(space)
    shape = {"cells": cells, "channels": channels}
    for flag, value in shape.items():
        if value is not None and flag not in spec.shape_keys:
            raise GradnasError(f"bench: space {space!r} has no {flag} setting; leave --{flag} out")
    return spec.config_class(**{spec.shape_keys[flag]: value for flag, value in shape.items() if value is not None})


def parse_sweep(text: str) -> tuple:
    """``KEY=V1,V2,...`` -> (key, [values]): one of SWEEP_KEYS, positive whole numbers, no repeats."""
    key, eq, values = text.partition("=")
    key = key.strip()
    if not eq or key not in SWEEP_KEYS:
        raise GradnasError(f"bench: --sweep {text!r}: give KEY=V1,V2,... with KEY one of {', '.join(SWEEP_KEYS)} "
                           "(e.g. --sweep batch=16,32,64)")
    try:
        numbers = [int(v) for v in values.split(",")]
    except ValueError:
        numbers = []
    if not numbers or min(numbers) < 1 or len(set(numbers)) != len(numbers):
        raise GradnasError(f"bench: --sweep {text!r}: the values of {key} must be distinct whole numbers >= 1, "
                           f"comma-separated (e.g. --sweep {key}=16,32,64)")
    return key, numbers


def method_label(row: dict) -> str:
    """The name a row goes by in ``--methods``: METHOD, or METHOD:2 for second order."""
    return row["method"] + (":2" if row["order"] == 2 else "")


# (numerator, denominator, what is claimed, the test the measured ratio must pass for the claim to hold)
CLAIMED_RATIOS = (
    ("darts:2", "milenas", "MiLeNAS paper: >= 3x", lambda r: r >= 3.0),
    ("milenas:2", "darts:2", "gradnas promise: <= 1.3x", lambda r: r <= 1.3),
)


def step_ratios(rows: list) -> list:
    """The ratios of seconds per step that the papers argue about, for the methods present in ``rows``:
    DARTS-2nd / MiLeNAS-1st (the MiLeNAS paper's claim: at least 3x), MiLeNAS-2nd / DARTS-2nd (gradnas's
    promise: at most 1.3x), then each method over the forward-backward baseline (no claim)."""
    sec = {method_label(r): r["sec_per_step"] for r in rows}
    out = []
    for num, den, claim, test in CLAIMED_RATIOS:
        if num in sec and den in sec:
            value = sec[num] / sec[den]
            out.append({"ratio": f"{num} / {den}", "value": value, "claim": claim, "holds": bool(test(value))})
    if BASELINE in sec:
        for label, s in sec.items():
            if label != BASELINE:
                out.append({"ratio": f"{label} / {BASELINE}", "value": s / sec[BASELINE], "claim": None,
                            "holds": None})
    return out


def format_ratio(r: dict) -> str:
    text = f"{r['ratio']:32s} {r['value']:6.2f}x"
    if r["claim"]:
        text += f"  ({r['claim']}: {'holds' if r['holds'] else 'does NOT hold'} here)"
    return text


def _format_row(label: str, row: dict) -> str:
    text = (f"{label:18s} {row['sec_per_step']:7.2f} s/step  {row['images_per_sec']:7.1f} img/s  "
            f"peak {row['peak_memory_gb']:.2f} GB ({row['peak_memory_kind']})")
    if "gflops_per_sec" in row:
        text += f"  {row['gflops_per_sec']:7.2f} GFLOP/s"
        if row.get("peak_share") is not None:
            text += f" ({100 * row['peak_share']:.1f}% of peak)"
    if row["load_warning"]:
        text += f"\n{'':18s} warning: {row['load_warning']}"
    return text


def sweep_table(key: str, points: list, rows: list) -> str:
    """Seconds per step and peak memory of each method (lines) at each value of the swept ``key`` (columns)."""
    labels = list(dict.fromkeys(method_label(r) for r in rows))
    cell = {(method_label(r), r[key]): f"{r['sec_per_step']:.3g} s {r['peak_memory_gb']:.2f} GB" for r in rows}
    width = max(16, *(len(c) for c in cell.values()))
    lines = [f"{key:18s} " + " ".join(f"{p[key]:>{width}}" for p in points)]
    for label in labels:
        lines.append(f"{label:18s} " + " ".join(f"{cell.get((label, p[key]), '-'):>{width}}" for p in points))
    return "\n".join(lines)


def run_bench(*, methods, batch: int = 64, steps: int = 3, warmup: int = 2, device: str = "cpu",
              cells: int | None = None, channels: int = 16, size: int = 32, threads=None,
              space: str = "darts", relax: str = "softmax", sweep: tuple | None = None,
              peak_seconds: float | None = None, compile: str = "off", precision: str = "fp32",
              progress=print) -> dict:
    """Seconds per search step, peak memory, FLOPs and GFLOP/s of each of ``methods``, each in a fresh
    process, with the machine's load over each; ``sweep`` = (key, values) times them at each value of one of
    SWEEP_KEYS instead of the single ``batch`` / ``cells`` / ``channels``. ``threads``: None, N or "auto"."""
    base = {"batch": batch, "cells": cells, "channels": channels}
    if sweep is not None:
        key, values = sweep
        if key not in SWEEP_KEYS or not values:
            raise GradnasError(f"bench: cannot sweep {key!r}; sweep one of {', '.join(SWEEP_KEYS)}")
        points = [{**base, key: v} for v in values]
    else:
        points = [base]
    keys = get_space(space).shape_keys
    for p in points:
        space_cfg = space_config(space, cells=p["cells"], channels=p["channels"])  # bad names, sizes fail here
        if "cells" in keys:
            p["cells"] = getattr(space_cfg, keys["cells"])  # the default, when not given
    accel.check_compile(compile, relaxation=make_relaxation(relax), device=device)
    accel.check_precision(precision, device)
    for m in methods:
        per_batch = sorted(n for n, c in METHODS.items() if issubclass(c, ArchOptimizer))
        if m != BASELINE and m.split(":")[0] not in per_batch:
            raise GradnasError(f"bench: unknown method {m!r}; valid: {BASELINE}, {', '.join(per_batch)} "
                               "(append :2 for second order, e.g. darts:2)")
    if min(p["batch"] for p in points) < 1 or steps < 1 or warmup < 0:
        raise GradnasError("bench: --batch and --steps must be >= 1, --warmup >= 0")
    threads, threads_reason = resolve_threads(threads)
    peak = _measured(_peak_one, {"threads": threads, "device": device, "n": PEAK_MATMUL_N,
                                 "seconds": PEAK_SECONDS if peak_seconds is None else peak_seconds}, fresh=False)
    progress(f"{'peak':18s} {peak['gflops_per_sec']:7.1f} GFLOP/s ({peak['matmul']} matmuls, {threads} thread(s), "
             f"{device})" + (f"\n{'':18s} warning: {peak['load_warning']}" if peak["load_warning"] else ""))
    rows, point_reports = [], []
    for p in points:
        if sweep is not None:
            progress(f"-- {sweep[0]} {p[sweep[0]]}")
        point_rows = []
        for m in methods:
            name, _, order = m.partition(":")
            spec = {"method": name, "order": int(order or 1), "steps": steps, "warmup": warmup, "device": device,
                    "size": size, "threads": threads, "space": space, "relax": relax, "compile": compile,
                    "precision": precision, **p}
            row = _measured(_bench_one, spec)
            row["peak_share"] = row["gflops_per_sec"] / peak["gflops_per_sec"]
            progress(_format_row(m, row))
            point_rows.append(row)
        ratios = step_ratios(point_rows)
        for r in ratios:
            progress(format_ratio(r))
        point_reports.append({**p, "ratios": ratios})
        rows += point_rows
    if sweep is not None:
        progress(sweep_table(sweep[0], points, rows))
    summary = _load_summary(rows, peak)
    if summary:
        progress(f"warning: {summary}")
    swept = sweep[0] if sweep is not None else None
    settings = {"space": space, "relax": relax, "compile": compile, "precision": precision, "steps": steps,
                "warmup": warmup, "device": device, "allocator": rows[0]["allocator"] if rows else malloc.loaded(),
                **{k: (None if k == swept else points[0][k]) for k in SWEEP_KEYS},
                "input": [3, size, size], "classes": 10, "threads": threads, "threads_reason": threads_reason,
                "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                "sweep": {"key": swept, "values": list(sweep[1])} if swept else None,
                "peak_gflops_per_sec": peak["gflops_per_sec"], "peak": peak,
                "load_threshold_cores": LOAD_THRESHOLD_CORES, "flops_counted": "matmuls and convolutions, forward "
                "and backward (torch.utils.flop_counter formulas); elementwise ops, pooling and BatchNorm count 0"}
    return {"settings": settings, "results": rows, "points": point_reports, "load_warning": summary}


def _time_steps(step, batches, warmup: int, device) -> list:
    times = []
    for i, batch in enumerate(batches):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        step(*batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def _peak_memory(device) -> tuple:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "rss"  # KiB on Linux


def _bench_train_one(spec: dict) -> dict:
    """One training step of the evaluation network, as ``gradnas train`` takes it (forward with the
    auxiliary head, loss, backward, gradient clipping, SGD), in one precision and memory format."""
    from gradnas.space import build_network
    from gradnas.space.genotype import load_genotype
    from gradnas.train.config import TrainConfig
    from gradnas.train.loop import check_network_options

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    cfg = TrainConfig.from_dict(spec["config"])
    genotype = load_genotype(spec["genotype"])
    c, h, w = spec["input"]
    torch.manual_seed(0)
    model = build_network(genotype, cfg.network, in_channels=c, num_classes=spec["classes"]).to(device)
    check_network_options(model, cfg.network, genotype.space)
    memory_format = torch.channels_last if spec["channels_last"] else torch.contiguous_format
    model.to(memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                weight_decay=cfg.optim.weight_decay)
    aux_weight = cfg.network.auxiliary_weight
    if hasattr(model, "drop_path_prob"):
        model.drop_path_prob = cfg.network.drop_path
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(spec["batch"], c, h, w, generator=g).to(device).contiguous(memory_format=memory_format),
                torch.randint(0, spec["classes"], (spec["batch"],), generator=g).to(device))
               for _ in range(spec["warmup"] + spec["steps"])]

    def step(x, y):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec["precision"] == "bf16"):
            if aux_weight > 0:
                logits, aux = model(x, return_aux=True)
                loss = F.cross_entropy(logits.float(), y) + aux_weight * F.cross_entropy(aux.float(), y)
            else:
                loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = _time_steps(step, batches, spec["warmup"], device)
    peak_gb, peak_kind = _peak_memory(device)
    sec = statistics.mean(times)
    return {"variant": spec["variant"], "precision": spec["precision"], "channels_last": spec["channels_last"],
            "sec_per_step": sec, "sec_min": min(times), "images_per_sec": spec["batch"] / sec,
            "peak_memory_gb": peak_gb, "peak_memory_kind": peak_kind}


def _check_train_spec(genotype: str, config: dict, in_channels: int, classes: int) -> None:
    """Build the network on the meta device (no weights) to fail on a bad genotype or setting at once."""
    from gradnas.space import build_network
    from gradnas.space.genotype import load_genotype
    from gradnas.train.config import TrainConfig
    from gradnas.train.loop import check_network_options
    cfg, geno = TrainConfig.from_dict(config), load_genotype(genotype)
    with torch.device("meta"):
        model = build_network(geno, cfg.network, in_channels=in_channels, num_classes=classes)
    check_network_options(model, cfg.network, geno.space)


def run_train_bench(*, genotype: str, config: dict, input_shape: tuple, classes: int, batch: int, steps: int = 3,
                    warmup: int = 2, device: str = "cpu", threads=None, precisions=("fp32", "bf16"),
                    channels_last=(False, True), progress=print) -> dict:
    """Seconds per training step of the evaluation network of ``genotype`` (network section of the train
    ``config``) for every precision x memory format, each in a fresh process."""
    for p in precisions:
        if p not in ("fp32", "bf16"):
            raise GradnasError(f"bench: unknown precision {p!r}; valid: fp32, bf16")
    if batch < 1 or steps < 1 or warmup < 0:
        raise GradnasError("bench: --batch and --steps must be >= 1, --warmup >= 0")
    _check_train_spec(genotype, config, input_shape[0], classes)  # here, not in a child process
    threads, threads_reason = resolve_threads(threads)
    rows = []
    for precision in precisions:
        for cl in channels_last:
            variant = precision + ("+channels_last" if cl else "")
            spec = {"variant": variant, "precision": precision, "channels_last": cl, "genotype": genotype,
                    "config": config, "input": list(input_shape), "classes": classes, "batch": batch,
                    "steps": steps, "warmup": warmup, "device": device, "threads": threads}
            row = _measured(_bench_train_one, spec)
            progress(f"{variant:20s} {row['sec_per_step']:7.3f} s/step  {row['images_per_sec']:7.1f} img/s  "
                     f"peak {row['peak_memory_gb']:.2f} GB ({row['peak_memory_kind']})"
                     + (f"\n{'':20s} warning: {row['load_warning']}" if row["load_warning"] else ""))
            rows.append(row)
    summary = _load_summary(rows)
    if summary:
        progress(f"warning: {summary}")
    net = config["network"]
    return {"settings": {"mode": "train", "genotype": genotype, "batch": batch, "steps": steps, "warmup": warmup,
                         "device": device, "cells": net["cells"], "channels": net["channels"],
                         "auxiliary_weight": net["auxiliary_weight"], "drop_path": net["drop_path"],
                         "input": list(input_shape), "classes": classes, "threads": threads,
                         "threads_reason": threads_reason, "load_threshold_cores": LOAD_THRESHOLD_CORES,
                         "torch": torch.__version__, "machine": platform.processor() or platform.machine()},
            "results": rows, "load_warning": summary}


def write_bench(result: dict, path) -> None:
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
