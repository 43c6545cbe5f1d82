"""`gradnas bench`: seconds per search step of each method on random data with the real supernet of a space
(darts or nb201) and a relaxation (softmax, sigmoid or gumbel), and (``--train``) seconds per training
step of an evaluation network in each precision / memory format.

Each method or variant runs in a fresh process, so its peak memory is its own: peak RSS of that process
on CPU (it includes the ~0.3 GB of Python + torch), max allocated memory on CUDA. The first steps are
warm-up (oneDNN builds its kernels there) and are not timed.
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
from gradnas.search.methods import ArchOptimizer, METHODS, make_method
from gradnas.space import build_supernet, get_space

# "forward-backward" is the plain baseline the figures start from: one pass, all gradients.
BASELINE = "forward-backward"
# What `gradnas bench` times by default.
BENCH_METHODS = f"{BASELINE},single-level,darts,milenas,darts:2,milenas:2"


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
    times = _time_steps(step, batches, spec["warmup"], device)
    peak_gb, peak_kind = _peak_memory(device)
    sec = statistics.mean(times)
    return {"method": spec["method"], "order": spec["order"], "sec_per_step": sec, "sec_min": min(times),
            "images_per_sec": spec["batch"] / sec, "peak_memory_gb": peak_gb, "peak_memory_kind": peak_kind}


def space_config(space: str, *, cells: int | None, channels: int):
    """The space's config with `cells` (darts: cells; nb201: cells per stage; None: the default) and `channels`,
    set through the fields its plug-in maps the generic shape flags to (``shape_keys``)."""
    spec = get_space(space)
    shape = {"cells": cells, "channels": channels}
    for flag, value in shape.items():
        if value is not None and flag not in spec.shape_keys:
            raise GradnasError(f"bench: space {space!r} has no {flag} setting; leave --{flag} out")
    return spec.config_class(**{spec.shape_keys[flag]: value for flag, value in shape.items() if value is not None})


def run_bench(*, methods, batch: int = 64, steps: int = 3, warmup: int = 2, device: str = "cpu",
              cells: int | None = None, channels: int = 16, size: int = 32, threads: int | None = None,
              space: str = "darts", relax: str = "softmax", progress=print) -> dict:
    space_cfg = space_config(space, cells=cells, channels=channels)  # bad names and sizes fail here, not in a child
    make_relaxation(relax)
    keys = get_space(space).shape_keys
    cells = getattr(space_cfg, keys["cells"]) if "cells" in keys else None  # the default, when not given
    for m in methods:
        per_batch = sorted(n for n, c in METHODS.items() if issubclass(c, ArchOptimizer))
        if m != BASELINE and m.split(":")[0] not in per_batch:
            raise GradnasError(f"bench: unknown method {m!r}; valid: {BASELINE}, {', '.join(per_batch)} "
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
                    warmup: int = 2, device: str = "cpu", threads: int | None = None, precisions=("fp32", "bf16"),
                    channels_last=(False, True), progress=print) -> dict:
    """Seconds per training step of the evaluation network of ``genotype`` (network section of the train
    ``config``) for every precision x memory format, each in a fresh process."""
    for p in precisions:
        if p not in ("fp32", "bf16"):
            raise GradnasError(f"bench: unknown precision {p!r}; valid: fp32, bf16")
    if batch < 1 or steps < 1 or warmup < 0:
        raise GradnasError("bench: --batch and --steps must be >= 1, --warmup >= 0")
    _check_train_spec(genotype, config, input_shape[0], classes)  # here, not in a child process
    threads = threads or torch.get_num_threads()
    ctx = mp.get_context("spawn")
    rows = []
    for precision in precisions:
        for cl in channels_last:
            variant = precision + ("+channels_last" if cl else "")
            spec = {"variant": variant, "precision": precision, "channels_last": cl, "genotype": genotype,
                    "config": config, "input": list(input_shape), "classes": classes, "batch": batch,
                    "steps": steps, "warmup": warmup, "device": device, "threads": threads}
            with ctx.Pool(1) as pool:
                row = pool.apply(_bench_train_one, (spec,))
            progress(f"{variant:20s} {row['sec_per_step']:7.3f} s/step  {row['images_per_sec']:7.1f} img/s  "
                     f"peak {row['peak_memory_gb']:.2f} GB ({row['peak_memory_kind']})")
            rows.append(row)
    net = config["network"]
    return {"settings": {"mode": "train", "genotype": genotype, "batch": batch, "steps": steps, "warmup": warmup,
                         "device": device, "cells": net["cells"], "channels": net["channels"],
                         "auxiliary_weight": net["auxiliary_weight"], "drop_path": net["drop_path"],
                         "input": list(input_shape), "classes": classes, "threads": threads,
                         "torch": torch.__version__, "machine": platform.processor() or platform.machine()},
            "results": rows}


def write_bench(result: dict, path) -> None:
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
