"""`gradnas sweep`: a grid of searches (methods x lambdas x seeds), each in its own run folder, then compare.

Every run is a `gradnas search` subprocess (one at a time, or ``jobs`` at once with cores / jobs threads
each), with its output in OUT/<name>/search.log. The sweep is resumable: run the same command again and
finished runs are skipped, interrupted ones resume from their last checkpoint, the rest start. It ends
with `gradnas compare` over every run that has an epoch to show (OUT/compare.md).

Lambda is a MiLeNAS setting: it multiplies the grid for milenas only; other methods run once per seed.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from tqdm import tqdm

from gradnas.config import SearchConfig, resume_conflicts
from gradnas.errors import GradnasError
from gradnas.run import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, SUMMARY_FILE
from gradnas.search.loop import check_names
from gradnas.search.methods import method_class

PLAN_DIR, LOG_FILE, SWEEP_FILE = "plan", "search.log", "sweep.json"


@dataclass
class PlannedRun:
    name: str
    config: dict          # resolved search config (SearchConfig.to_dict())
    path: Path
    state: str = "start"  # start | resume | done

    @property
    def epochs(self) -> int:
        return int(self.config["epochs"])


def _num(v) -> str:
    v = float(v)
    return str(int(v)) if v.is_integer() else repr(v)


def plan_sweep(base: dict, out_dir, *, methods=None, lambdas=None, seeds=None) -> list:
    """The grid as PlannedRuns, in order: methods, then lambdas (milenas only), then seeds.

    Unset axes take the base config's value. Names: <method>[-lam<lambda>]-s<seed>, e.g. milenas-lam0.1-s0."""
    out_dir = Path(out_dir)
    base_cfg = SearchConfig.from_dict(base)  # the shared settings are valid before any grid value is tried
    methods = list(methods) if methods else [base_cfg.method]
    seeds = list(seeds) if seeds is not None and len(seeds) else [base_cfg.seed]
    if lambdas is not None and len(lambdas) and "milenas" not in methods:
        raise GradnasError(f"--lambdas applies to milenas only and the grid's methods are {', '.join(methods)}; "
                           "add milenas to --methods or drop --lambdas")
    runs, seen = [], set()
    for method in methods:
        lams = (list(lambdas) if lambdas else [base_cfg.lam]) if method == "milenas" else [None]
        for lam in lams:
            for seed in seeds:
                d = copy.deepcopy(base)
                d["method"], d["seed"] = method, int(seed)
                if lam is not None:
                    d["lambda"] = float(lam)
                cfg = SearchConfig.from_dict(d)
                check_names(cfg)  # an unknown method fails here, before any run starts
                orders = method_class(method).orders
                if cfg.order not in orders:
                    raise GradnasError(f"method {method} supports order {' or '.join(map(str, orders))}, and the "
                                       f"sweep asks for order {cfg.order}; sweep it separately")
                name = f"{method}{'' if lam is None else '-lam' + _num(lam)}-s{seed}"
                if name in seen:
                    raise GradnasError(f"the grid lists run {name} twice; give each method, lambda and seed once")
                seen.add(name)
                runs.append(PlannedRun(name=name, config=cfg.to_dict(), path=out_dir / name))
    return runs


def check_existing(runs: list) -> None:
    """Set each run's state from its folder; refuse folders that hold a different search."""
    for run in runs:
        saved_path = run.path / CONFIG_FILE
        has_ckpt = (run.path / CHECKPOINT_FILE).is_file()
        if not (saved_path.is_file() and has_ckpt):
            run.state = "start"  # nothing finished there yet: (re)start from scratch
            continue
        saved = SearchConfig.from_dict(yaml.safe_load(saved_path.read_text())).to_dict()
        diff = resume_conflicts(saved, run.config)
        if diff:
            key, old, new = diff[0]
            raise GradnasError(f"{run.path} holds a search with {key}={old!r}, but this sweep plans {key}={new!r}; "
                               "run the sweep with the settings it was started with, or choose another --out")
        summary = run.path / SUMMARY_FILE
        finished = summary.is_file() and json.loads(summary.read_text()).get("finished")
        run.state = "done" if finished else "resume"


def _epochs_done(run: PlannedRun) -> int:
    path = run.path / METRICS_FILE
    try:
        return sum(1 for line in path.read_text().splitlines() if line.strip())
    except OSError:
        return 0


def _command(run: PlannedRun, plan_file: Path, threads: int | None, plugins=()) -> list:
    cmd = [sys.executable, "-m", "gradnas", "search", "--quiet"]
    for plugin in plugins:  # what the sweep's config names (a method, a dataset) may come from a plugin
        cmd += ["--plugin", plugin]
    if run.state == "resume":
        cmd += ["--resume", str(run.path)]
        if threads is not None:  # where it runs may change on resume (see config.RESUMABLE_KEYS)
            cmd += ["--threads", str(threads)]
    else:
        cmd += ["--config", str(plan_file), "--out", str(run.path)]
    return cmd


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def run_sweep(runs: list, out_dir, *, jobs: int = 1, progress: bool = True, plugins=()) -> dict:
    """Run the planned grid; returns {"done": [...], "failed": [...], "compare": path or None}. Each run
    imports ``plugins`` first, as `gradnas search --plugin` takes them (module names or .py file paths)."""
    from gradnas.report.compare import compare

    out_dir = Path(out_dir)
    if jobs < 1:
        raise GradnasError(f"--jobs must be >= 1, got {jobs}")
    out_dir.mkdir(parents=True, exist_ok=True)
    check_existing(runs)
    # Threads: the user's setting if the config has one, else the cores shared out among the jobs.
    threads = None if runs and runs[0].config.get("threads") else max(1, _cores() // jobs)
    plan_dir = out_dir / PLAN_DIR
    plan_dir.mkdir(exist_ok=True)
    for run in runs:
        if threads is not None:
            run.config["threads"] = threads
        (plan_dir / f"{run.name}.yaml").write_text(yaml.safe_dump(run.config, sort_keys=False))
    _write_sweep_file(out_dir, runs, jobs)

    todo = [r for r in runs if r.state != "done"]
    counts = {s: sum(r.state == s for r in runs) for s in ("done", "resume", "start")}
    print(f"sweep: {len(runs)} runs in {out_dir} ({counts['done']} done, {counts['resume']} to resume, "
          f"{counts['start']} to start), {min(jobs, max(len(todo), 1))} at a time"
          + (f", {threads} thread(s) each" if threads else ""), file=sys.stderr)
    failed, running = [], {}
    bar = tqdm(total=sum(r.epochs for r in runs), initial=sum(min(_epochs_done(r), r.epochs) for r in runs),
               unit="epoch", desc="sweep", disable=not progress, leave=False)
    pending = list(todo)
    try:
        while pending or running:
            while pending and len(running) < jobs:
                run = pending.pop(0)
                run.path.mkdir(parents=True, exist_ok=True)
                log = open(run.path / LOG_FILE, "a")
                log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {run.state} ===\n")
                log.flush()
                cmd = _command(run, plan_dir / f"{run.name}.yaml", threads, plugins)
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_child_env())
                running[run.name] = (run, proc, log, time.time())
                tqdm.write(f"[{run.state}] {run.name}", file=sys.stderr)
            time.sleep(0.5)
            for name, (run, proc, log, t0) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[name]
                if proc.returncode == 0:
                    run.state = "done"
                    tqdm.write(f"[done] {name} in {_duration(time.time() - t0)}: {_result_line(run)}", file=sys.stderr)
                else:
                    failed.append(run)
                    tail = (run.path / LOG_FILE).read_text().strip().splitlines()[-3:]
                    tqdm.write(f"[failed] {name} (exit {proc.returncode}); last lines of {run.path / LOG_FILE}:\n  "
                               + "\n  ".join(tail), file=sys.stderr)
            done = sum(min(_epochs_done(r), r.epochs) for r in runs)
            if done != bar.n:
                bar.update(done - bar.n)
    except KeyboardInterrupt:
        for run, proc, log, _ in running.values():
            proc.terminate()  # the search saves nothing mid-epoch; its last checkpoint stays
        for run, proc, log, _ in running.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
        bar.close()
        raise
    bar.close()
    _write_sweep_file(out_dir, runs, jobs)
    shown = [r.path for r in runs if _epochs_done(r) > 0]
    compare_path = compare(shown, out_dir)[0] if shown else None
    return {"done": [r.name for r in runs if r.state == "done"], "failed": [r.name for r in failed],
            "compare": compare_path}


def _child_env() -> dict:
    # The child must import this very gradnas (a source checkout run with PYTHONPATH, or an install).
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def _result_line(run: PlannedRun) -> str:
    try:
        summary = json.loads((run.path / SUMMARY_FILE).read_text())
        return f"best valid acc {summary['best_valid_acc']:.2f}%"
    except (OSError, KeyError, ValueError):
        return "no summary"


def _write_sweep_file(out_dir: Path, runs: list, jobs: int) -> None:
    """OUT/sweep.json: the grid's runs and where each stands (start, resume, done)."""
    record = {"jobs": jobs, "runs": [{"name": r.name, "state": r.state, "path": str(r.path)} for r in runs]}
    tmp = out_dir / (SWEEP_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, out_dir / SWEEP_FILE)
