#!/usr/bin/env python3
"""gradnas bench beside the reference implementations, one process at a time, alternating.

    python scripts/bench-refs.py [--device cpu|cuda] [--batch 64 --batch 256] [--threads N] [--steps 3]
        [--warmup 2] [--rounds 2] [--only darts,nb201] [--milenas-repo DIR] [--xautodl-python PY]
        [--refs DIR] [--out bench-refs.json] [--md bench-refs.md]

For each step below and each --batch, it runs gradnas bench (this checkout, one method per process) and
then the reference harness, --rounds times, and reports the median seconds per step and peak memory of
each side, reference / gradnas, the ratios the papers argue about for both, and the load warnings:
gradnas bench's own, and the same check (gradnas.bench.others_load) around every reference process.

  DARTS space, 8 cells, 16 channels (milenas_step.py, the official MiLeNAS code):
    MiLeNAS-1st (milenas / milenas), DARTS-1st (darts / darts1), DARTS-2nd (darts:2 / darts2),
    forward + backward (forward-backward / fwdbwd), MiLeNAS-2nd (milenas:2; no reference has it)
  NAS-Bench-201, N = 5 cells per stage, C = 16 (xautodl_nb201_step.py, AutoDL-Projects' supernet):
    DARTS-1st (--relax softmax darts / --method darts), GDAS (--relax gumbel darts / --method gdas)

Run it on a quiet machine: other processes distort the figures far more than the differences measured.
The references: --milenas-repo (or $MILENAS_REPO; default /work/refs/milenas) is a checkout of
chaoyanghe/MiLeNAS, --xautodl-python (or $XAUTODL_PYTHON; default /work/refs/xautodl-venv/bin/python) a
python with torch, numpy and xautodl, --refs (or $BENCH_REFS; default ../shared/bench-refs from the repo
root) the folder of the two harnesses. Exit status 2 with one line when one of them is missing.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from gradnas.bench import load_warning, others_load, read_cpu, step_ratios  # noqa: E402
from gradnas.run import available_cores  # noqa: E402

# (group, step, gradnas bench arguments, reference harness, reference arguments, label for the ratios)
DARTS = ["--space", "darts", "--relax", "softmax", "--cells", "8", "--channels", "16"]
NB201 = ["--space", "nb201", "--cells", "5", "--channels", "16"]
STEPS = [
    ("darts", "DARTS space, MiLeNAS-1st", DARTS + ["--methods", "milenas"], "milenas", ["--method", "milenas"],
     "milenas"),
    ("darts", "DARTS space, DARTS-1st", DARTS + ["--methods", "darts"], "milenas", ["--method", "darts1"], "darts"),
    ("darts", "DARTS space, DARTS-2nd", DARTS + ["--methods", "darts:2"], "milenas", ["--method", "darts2"],
     "darts:2"),
    ("darts", "DARTS space, forward + backward", DARTS + ["--methods", "forward-backward"], "milenas",
     ["--method", "fwdbwd"], "forward-backward"),
    ("darts", "DARTS space, MiLeNAS-2nd", DARTS + ["--methods", "milenas:2"], None, None, "milenas:2"),
    ("nb201", "NB-201, DARTS-1st", NB201 + ["--relax", "softmax", "--methods", "darts"], "xautodl",
     ["--method", "darts", "--N", "5", "--C", "16"], None),
    ("nb201", "NB-201, GDAS", NB201 + ["--relax", "gumbel", "--methods", "darts"], "xautodl",
     ["--method", "gdas", "--N", "5", "--C", "16"], None),
]


def fail(message: str):
    print(f"bench-refs: error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda, for every process")
    ap.add_argument("--batch", type=int, action="append", help="batch size; repeat for several (default 64)")
    ap.add_argument("--threads", type=int, help="CPU threads of every process (default: the cores this process "
                                                "may use)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per process")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--rounds", type=int, default=2, help="gradnas-then-reference rounds per step; the median "
                                                          "is reported")
    ap.add_argument("--only", help="comma-separated groups: darts, nb201 (default both)")
    ap.add_argument("--milenas-repo", default=os.environ.get("MILENAS_REPO", "/work/refs/milenas"))
    ap.add_argument("--xautodl-python", default=os.environ.get("XAUTODL_PYTHON",
                                                               "/work/refs/xautodl-venv/bin/python"))
    ap.add_argument("--refs", default=os.environ.get("BENCH_REFS", str(ROOT.parent / "shared" / "bench-refs")),
                    help="the folder of milenas_step.py and xautodl_nb201_step.py")
    ap.add_argument("--python", default=sys.executable, help="the python that runs gradnas and milenas_step.py "
                                                             "(default: this one)")
    ap.add_argument("--out", default="bench-refs.json")
    ap.add_argument("--md", default="bench-refs.md")
    a = ap.parse_args(argv)
    a.batch = a.batch or [64]
    cores = available_cores()
    a.threads = a.threads or cores
    if not 1 <= a.threads <= cores:
        fail(f"--threads {a.threads}: this process may use {cores} core(s); give 1 to {cores}")
    if min(a.batch) < 1 or a.steps < 1 or a.warmup < 0 or a.rounds < 1:
        fail("--batch, --steps and --rounds must be >= 1, --warmup >= 0")
    groups = [g.strip() for g in (a.only or "darts,nb201").split(",") if g.strip()]
    if not groups or any(g not in ("darts", "nb201") for g in groups):
        fail(f"--only {a.only!r}: give darts, nb201 or darts,nb201")
    a.groups = groups
    refs = Path(a.refs)
    a.harness = {"milenas": refs / "milenas_step.py", "xautodl": refs / "xautodl_nb201_step.py"}
    needed = {g for g, *_ in STEPS if g in groups}
    if "darts" in needed:
        if not a.harness["milenas"].is_file():
            fail(f"no {a.harness['milenas']}; give --refs DIR (or $BENCH_REFS) with the two harnesses")
        if not (Path(a.milenas_repo) / "search_algorithm" / "architect.py").is_file():
            fail(f"{a.milenas_repo} is not a checkout of chaoyanghe/MiLeNAS (no search_algorithm/architect.py); "
                 "give --milenas-repo DIR (or $MILENAS_REPO)")
    if "nb201" in needed:
        if not a.harness["xautodl"].is_file():
            fail(f"no {a.harness['xautodl']}; give --refs DIR (or $BENCH_REFS) with the two harnesses")
        if not os.access(a.xautodl_python, os.X_OK):
            fail(f"{a.xautodl_python} is not an executable python; give --xautodl-python PY (or $XAUTODL_PYTHON), "
                 "a python with torch, numpy and xautodl")
    return a


def _run(cmd, env=None) -> tuple:
    """Run one process to its end; (its stdout, the load over it)."""
    before = read_cpu()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    load = others_load(before, read_cpu())  # the child has been waited for: its CPU time is ours
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        fail(f"{' '.join(map(str, cmd))} exited with {proc.returncode}: {tail}")
    return proc.stdout, load


def run_gradnas(a, bench_args, batch: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                                     os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        _run([a.python, "-m", "gradnas", "bench", *bench_args, "--batch", str(batch), "--steps",
              str(a.steps), "--warmup", str(a.warmup), "--device", a.device, "--threads", str(a.threads),
              "--out", str(out)], env)
        result = json.loads(out.read_text())
    (row,) = result["results"]
    return {"sec_per_step": row["sec_per_step"], "peak_memory_gb": row["peak_memory_gb"],
            "gflops_per_sec": row["gflops_per_sec"], "peak_share": row["peak_share"],
            "load_warning": row["load_warning"] or result["settings"]["peak"]["load_warning"],
            "others_cores": row["load"]["others_cores"]}


def run_reference(a, which: str, ref_args, batch: int) -> dict:
    python = a.python if which == "milenas" else a.xautodl_python
    repo = [a.milenas_repo] if which == "milenas" else []
    stdout, load = _run([python, str(a.harness[which]), *repo, *ref_args, "--batch", str(batch), "--steps",
                         str(a.steps), "--warmup", str(a.warmup), "--device", a.device, "--threads", str(a.threads)])
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        fail(f"{a.harness[which]} printed no JSON line")
    row = json.loads(lines[-1])
    return {"sec_per_step": row["sec_per_step"], "peak_memory_gb": row["peak_memory_gb"],
            "load_warning": load_warning(load), "others_cores": load["others_cores"]}


def _median(runs: list) -> dict:
    warnings = [r["load_warning"] for r in runs if r["load_warning"]]
    out = {"sec_per_step": statistics.median(r["sec_per_step"] for r in runs),
           "peak_memory_gb": max(r["peak_memory_gb"] for r in runs),
           "rounds": [r["sec_per_step"] for r in runs], "load_warning": warnings[0] if warnings else None,
           "others_cores": max((r["others_cores"] for r in runs if r["others_cores"] is not None), default=None)}
    if "gflops_per_sec" in runs[0]:
        out["gflops_per_sec"] = statistics.median(r["gflops_per_sec"] for r in runs)
        out["peak_share"] = statistics.median(r["peak_share"] for r in runs)
    return out


def _load_cell(*sides) -> str:
    """quiet, or what was not: the most cores others took, or that the load could not be read."""
    sides = [x for x in sides if x]
    if not any(x["load_warning"] for x in sides):
        return "quiet"
    cores = [x["others_cores"] for x in sides if x["others_cores"] is not None]
    if len(cores) < len(sides):
        return "load unknown (no /proc/stat)"
    return f"NOT QUIET: others took up to {max(cores):.2f} cores"


def markdown(settings: dict, rows: list, ratios: dict) -> str:
    lines = [f"gradnas bench beside the references: device {settings['device']}, {settings['threads']} thread(s), "
             f"{settings['steps']} timed steps after {settings['warmup']} warm-up, median of {settings['rounds']} "
             "alternating round(s).", "",
             "| step | batch | reference s/step, peak GB | gradnas s/step, peak GB | reference / gradnas | load |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        g, ref = r["gradnas"], r["reference"]
        ref_text = f"{ref['sec_per_step']:.3g}, {ref['peak_memory_gb']:.2f}" if ref else "-"
        ratio = f"{r['reference_over_gradnas']:.2f}x" if ref else "-"
        lines.append(f"| {r['step']} | {r['batch']} | {ref_text} | {g['sec_per_step']:.3g}, "
                     f"{g['peak_memory_gb']:.2f} | {ratio} | {_load_cell(g, ref)} |")
    for batch, by_impl in ratios.items():
        for impl, found in by_impl.items():
            claimed = [x for x in found if x["claim"]]
            if claimed:
                lines += ["", f"{impl}, batch {batch}:"] + [
                    f"- {x['ratio']} = {x['value']:.2f}x ({x['claim']}: {'holds' if x['holds'] else 'does NOT hold'})"
                    for x in claimed]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    a = parse_args(argv)
    settings = {"device": a.device, "threads": a.threads, "steps": a.steps, "warmup": a.warmup, "rounds": a.rounds,
                "batches": a.batch, "milenas_repo": a.milenas_repo, "xautodl_python": a.xautodl_python}
    rows, ratios = [], {}
    for batch in a.batch:
        for group, step, bench_args, which, ref_args, label in STEPS:
            if group not in a.groups:
                continue
            ours, theirs = [], []
            for _ in range(a.rounds):  # one process at a time: gradnas, then the reference
                ours.append(run_gradnas(a, bench_args, batch))
                if which:
                    theirs.append(run_reference(a, which, ref_args, batch))
            row = {"step": step, "batch": batch, "label": label, "gradnas": _median(ours),
                   "reference": _median(theirs) if theirs else None,
                   "reference_impl": {"milenas": "milenas-official", "xautodl": "xautodl"}.get(which)}
            if theirs:
                row["reference_over_gradnas"] = row["reference"]["sec_per_step"] / row["gradnas"]["sec_per_step"]
            g = row["gradnas"]
            print(f"{step:34s} batch {batch:4d}  gradnas {g['sec_per_step']:.3g} s"
                  + (f"  reference {row['reference']['sec_per_step']:.3g} s  ratio {row['reference_over_gradnas']:.2f}x"
                     if theirs else "")
                  + ("  (not quiet)" if g["load_warning"] or (theirs and row["reference"]["load_warning"]) else ""),
                  flush=True)
            rows.append(row)
        labelled = [r for r in rows if r["batch"] == batch and r["label"]]
        method = lambda label: {"method": label.split(":")[0], "order": 2 if label.endswith(":2") else 1}  # noqa: E731
        ratios[batch] = {
            "gradnas": step_ratios([{**method(r["label"]), "sec_per_step": r["gradnas"]["sec_per_step"]}
                                    for r in labelled]),
            "milenas-official": step_ratios([{**method(r["label"]), "sec_per_step": r["reference"]["sec_per_step"]}
                                             for r in labelled if r["reference"]])}
    warned = [w for r in rows for w in (r["gradnas"]["load_warning"], r["reference"] and r["reference"]["load_warning"])
              if w]
    result = {"settings": settings, "rows": rows, "ratios": {str(b): v for b, v in ratios.items()},
              "load_warning": (f"{len(warned)} measurement(s) were not quiet, e.g.: {warned[0]}" if warned else None)}
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    Path(a.md).write_text(markdown(settings, rows, ratios))
    if warned:
        print(f"warning: {result['load_warning']}")
    print(f"written {a.out} and {a.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
