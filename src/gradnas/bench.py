"""`gradnas bench`: seconds per search step of each method on random data with the real supernet of a space
(darts or nb201) and a relaxation (softmax, sigmoid or gumbel).

Each method runs in a fresh process, so its peak memory is its own: peak RSS of that process on CPU
(it includes the ~0.3 GB of Python + torch), max allocated memory on CUDA. The first steps are warm-up
(oneDNN builds its kernels there) and are not timed.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import platform
import resource
import statistics
import time

import torch
import torch.nn.functional as F

from gradnas.config import SearchConfig
from gradnas.errors import GradnasError
from gradnas.search.loop import build_optimizers
from gradnas.relax import make_relaxation
from gradnas.search.methods import METHODS, make_method
from gradnas.space import build_supernet, get_space

# "forward-backward" is the plain baseline the figures start from: one pass, all gradients.
BASELINE = "forward-backward"


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
    if spec["method"] == BASELINE:
        def step(tr, va):
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(tr[0]), tr[1]).backward()
    else:
        method = make_method(spec["method"], model, w_optim=w_optim, a_optim=a_optim, grad_clip=5.0,
                             order=spec["order"], lam=1.0)
        step = method.step
    batches = [(batch(), batch()) for _ in range(spec["warmup"] + spec["steps"])]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i, (tr, va) in enumerate(batches):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        step(tr, va)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= spec["warmup"]:
            times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak_gb, peak_kind = torch.cuda.max_memory_allocated(device) / 2**30, "cuda_max_allocated"
    else:  # ru_maxrss is in KiB on Linux
        peak_gb, peak_kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "rss"
    sec = statistics.mean(times)
    return {"method": spec["method"], "order": spec["order"], "sec_per_step": sec, "sec_min": min(times),
            "images_per_sec": spec["batch"] / sec, "peak_memory_gb": peak_gb, "peak_memory_kind": peak_kind}


def space_config(space: str, *, cells: int | None, channels: int):
    """The space's config with `cells` (darts: cells; nb201: cells per stage; None: the default) and `channels`."""
    if space == "nb201":
        kw = {"cells_per_stage": cells} if cells is not None else {}
    else:
        kw = {"cells": cells} if cells is not None else {}
    return get_space(space).config(channels=channels, **kw)


def run_bench(*, methods, batch: int = 64, steps: int = 3, warmup: int = 2, device: str = "cpu",
              cells: int | None = None, channels: int = 16, size: int = 32, threads: int | None = None,
              space: str = "darts", relax: str = "softmax", progress=print) -> dict:
    space_cfg = space_config(space, cells=cells, channels=channels)  # bad names and sizes fail here, not in a child
    make_relaxation(relax)
    cells = space_cfg.cells_per_stage if space == "nb201" else space_cfg.cells
    for m in methods:
        if m != BASELINE and m.split(":")[0] not in METHODS:
            raise GradnasError(f"bench: unknown method {m!r}; valid: {BASELINE}, {', '.join(sorted(METHODS))} "
                               "(append :2 for second order, e.g. darts:2)")
    if batch < 1 or steps < 1 or warmup < 0:
        raise GradnasError("bench: --batch and --steps must be >= 1, --warmup >= 0")
    threads = threads or torch.get_num_threads()
    ctx = mp.get_context("spawn")
    rows = []
    for m in methods:
        name, _, order = m.partition(":")
        spec = {"method": name, "order": int(order or 1), "batch": batch, "steps": steps, "warmup": warmup,
                "device": device, "cells": cells, "channels": channels, "size": size, "threads": threads,
                "space": space, "relax": relax}
        with ctx.Pool(1) as pool:
            row = pool.apply(_bench_one, (spec,))
        progress(f"{m:18s} {row['sec_per_step']:7.2f} s/step  {row['images_per_sec']:7.1f} img/s  "
                 f"peak {row['peak_memory_gb']:.2f} GB ({row['peak_memory_kind']})")
        rows.append(row)
    return {"settings": {"space": space, "relax": relax, "batch": batch, "steps": steps, "warmup": warmup,
                         "device": device, "cells": cells, "channels": channels, "input": [3, size, size], "classes": 10, "threads": threads,
                         "torch": torch.__version__, "machine": platform.processor() or platform.machine()},
            "results": rows}


def write_bench(result: dict, path) -> None:
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
