"""`gradnas doctor`: what this machine gives gradnas, so that a user can diagnose a setup by themselves.

Each check returns a :class:`Check`: a name, a status (``ok``, ``warn``: works with less, ``missing``: a
feature cannot run) and one line of detail, with the fix where something is off. Nothing is downloaded or
changed; the only files written are removed probe files in the folders a run would write to.
"""
from __future__ import annotations

import importlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok", "warn" or "missing"
    detail: str


def _torch() -> list:
    import torch
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
    checks = [Check("torch", "ok", f"{torch.__version__} ({build})")]
    if torch.cuda.is_available():
        names = [f"cuda:{i} {torch.cuda.get_device_name(i)} "
                 f"({torch.cuda.get_device_properties(i).total_memory / 2**30:.0f} GiB)"
                 for i in range(torch.cuda.device_count())]
        checks.append(Check("device", "ok", "; ".join(names) + " (--device auto uses cuda:0)"))
    else:
        why = ("this torch has no CUDA" if not torch.version.cuda else "no GPU visible (check the driver and "
               "CUDA_VISIBLE_DEVICES)")
        checks.append(Check("device", "ok", f"cpu only: {why}; searches run on the CPU"))
    cores = os.cpu_count() or 1
    threads = torch.get_num_threads()
    omp = os.environ.get("OMP_NUM_THREADS")
    status = "ok" if threads <= cores else "warn"
    hint = "" if status == "ok" else "; more threads than cores slows every op: set --threads or OMP_NUM_THREADS"
    checks.append(Check("threads", status, f"torch uses {threads} of {cores} cores"
                                           f"{f' (OMP_NUM_THREADS={omp})' if omp else ''}{hint}"))
    checks.append(_allocator())
    return checks


def _allocator() -> Check:
    from gradnas import malloc
    if malloc.loaded() == "jemalloc":
        return Check("allocator", "ok", "jemalloc (the lowest peak memory of a CPU search, some time in page faults; "
                                        "gradnas.malloc)")
    path = malloc.find_jemalloc()
    how = (f"{malloc.ENV}=jemalloc runs the gradnas command on jemalloc ({path})" if path else
           f"apt-get install libjemalloc2, then {malloc.ENV}=jemalloc")
    return Check("allocator", "ok", f"the system's malloc; for the lowest peak memory of a CPU search, {how}")


def _packages() -> list:
    checks = []
    for module, dist, needed_for in (("numpy", "numpy", "everything"), ("PIL", "Pillow", "image folders"),
                                     ("yaml", "PyYAML", "configs"), ("tqdm", "tqdm", "progress bars"),
                                     ("matplotlib", "matplotlib", "plots (gradnas plot/report)"),
                                     ("graphviz", "graphviz", "cell drawings (gradnas draw)")):
        try:
            version = getattr(importlib.import_module(module), "__version__", "installed")
            checks.append(Check(dist, "ok", str(version)))
        except ImportError:
            checks.append(Check(dist, "missing", f"needed for {needed_for}: pip install {dist}"))
    dot = shutil.which("dot")
    if dot:
        try:
            out = subprocess.run([dot, "-V"], capture_output=True, text=True, timeout=10)
            version = (out.stderr or out.stdout).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            version = "present but did not answer -V"
        checks.append(Check("dot", "ok", f"{dot}: {version}"))
    else:
        checks.append(Check("dot", "warn", "Graphviz's dot is not on PATH: `gradnas draw` writes .dot sources but no "
                                           "images (apt-get install graphviz)"))
    return checks


def _data() -> list:
    from gradnas.data.sources import CIFAR_DEFAULTS, FASHION_DEFAULT_DIR
    checks = []
    fm = FASHION_DEFAULT_DIR
    files = sorted(p.name for p in fm.glob("*-ubyte*")) if fm.is_dir() else []
    if len(files) >= 4:
        checks.append(Check("fashion-mnist", "ok", f"{fm} ({len(files)} IDX files); the default search uses it"))
    else:
        checks.append(Check("fashion-mnist", "missing", f"not in {fm}: the default `gradnas search` needs it; "
                                                        "apt-get install dataset-fashion-mnist, or --data-dir DIR"))
    found = [p for p in CIFAR_DEFAULTS if p.exists()]
    if found:
        checks.append(Check("cifar10", "ok", f"{found[0].resolve()} (found from {Path.cwd()})"))
    else:
        looked = ", ".join(p.as_posix() for p in CIFAR_DEFAULTS)
        checks.append(Check("cifar10", "warn", f"no default copy ({looked}, relative to {Path.cwd()}); give "
                                               "--data-dir a cifar-10-batches-py folder, the JPEG archive or a folder"))
    try:
        from gradnas.benchmark.nb201 import load_table
        checks.append(Check("nb201 table", "ok", f"{len(load_table())} cells (NAS-Bench-201 lookup)"))
    except Exception as exc:  # noqa: BLE001 - reported, not raised: this is the diagnosis
        checks.append(Check("nb201 table", "missing", f"{exc}; reinstall gradnas (pip install -e .)"))
    return checks


def _writable(name: str, folder: Path, fix: str) -> Check:
    target = folder
    while not target.exists() and target != target.parent:  # the folder a run would create: its parent
        target = target.parent
    try:
        with tempfile.NamedTemporaryFile(dir=target, prefix=".gradnas-doctor-"):
            pass
    except OSError as exc:
        return Check(name, "missing", f"{folder}: cannot write ({exc.strerror}); {fix}")
    free = shutil.disk_usage(target).free / 2**30
    status = "ok" if free >= 1 else "warn"
    return Check(name, status, f"{folder} writable, {free:.1f} GiB free"
                               f"{'' if status == 'ok' else '; checkpoints need room: free some space'}")


def run_checks() -> list[Check]:
    """Every check, in the order `gradnas doctor` prints them."""
    import gradnas
    from gradnas.data.cache import default_cache_dir
    checks = [Check("gradnas", "ok", f"{gradnas.__version__} at {Path(gradnas.__file__).parent}"),
              Check("python", "ok", f"{platform.python_version()} ({sys.executable}) on {platform.platform()}")]
    checks += _torch() + _packages() + _data()
    checks.append(_writable("runs folder", Path("runs").resolve(), "run from a writable folder or pass --out"))
    checks.append(_writable("data cache", default_cache_dir(), "set GRADNAS_CACHE to a writable folder"))
    return checks


def as_dicts(checks: list[Check]) -> list[dict]:
    return [asdict(c) for c in checks]
