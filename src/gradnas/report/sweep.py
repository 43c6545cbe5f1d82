"""`gradnas sweep`: a grid of searches (methods x lambdas x seeds x any config key), each in its own run
folder, then compare.

Every run is a `gradnas search` subprocess with its output in OUT/<name>/search.log, started by a backend:
``local`` (one at a time, or ``jobs`` at once with cores / jobs threads each) or ``ray`` (each grid point a
Ray task holding ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs, on a local Ray started for the sweep or on
the cluster at ``address``; the run folders must then be on a filesystem every node sees). The sweep is
resumable: run the same command again and finished runs are skipped, interrupted ones resume from their last
checkpoint, the rest start. It ends with `gradnas compare` over every run that has an epoch to show
(OUT/compare.md), on the driver.

Lambda is a MiLeNAS setting: it multiplies the grid for milenas only; other methods run once per seed. Any
other config key is a grid axis too (``grid={"w_optim.lr": [0.01, 0.025]}``, `--grid w_optim.lr=0.01,0.025`),
its values read as `--set` reads them; every point's config is checked before any run starts.
"""
from __future__ import annotations

import copy
import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from tqdm import tqdm

from gradnas.config import SearchConfig, parse_yaml, resume_conflicts
from gradnas.errors import GradnasError
from gradnas.run import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, SUMMARY_FILE
from gradnas.search.loop import check_search_config
from gradnas.search.methods import method_class
from gradnas.trackers import check_tracker_names

logger = logging.getLogger(__name__)
PLAN_DIR, LOG_FILE, SWEEP_FILE = "plan", "search.log", "sweep.json"
BACKENDS = ("local", "ray")
# grid keys that are the shorthands' axes (plan_sweep's methods, lambdas, seeds)
_SHORTHANDS = {"method": "methods", "lambda": "lambdas", "seed": "seeds"}


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


def grid_values(text: str) -> list:
    """``V1,V2,...`` as `gradnas sweep --grid KEY=V1,V2` gives it: the commas between values, not those inside
    brackets (``[6,0],[4,0]`` is two values), each value read as `--set` reads one (YAML: 0.01, true, null,
    [6, 0], a word)."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    values = []
    for raw in (p.strip() for p in parts):
        if not raw:
            raise GradnasError(f"--grid value list {text!r} has an empty value; give V1,V2,... without empty items")
        try:
            values.append(parse_yaml(raw))
        except Exception:  # not YAML: the text itself, as --set takes it
            values.append(raw)
    return values


def parse_grid(assignments) -> dict:
    """`--grid KEY=V1,V2` assignments -> {key: [values]} (a key given twice is refused)."""
    grid = {}
    for assignment in assignments or ():
        key, sep, raw = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise GradnasError(f"--grid {assignment!r}: expected KEY=V1,V2,..., e.g. --grid w_optim.lr=0.01,0.025")
        if key in grid:
            raise GradnasError(f"--grid {key} is given twice; list all its values in one --grid {key}=V1,V2")
        grid[key] = grid_values(raw)
    return grid


def _set_key(d: dict, key: str, value) -> None:
    *sections, last = key.split(".")
    node = d
    for section in sections:
        node = node.setdefault(section, {})
        if not isinstance(node, dict):
            raise GradnasError(f"--grid {key}: {section!r} is not a config section")
    node[last] = copy.deepcopy(value)


def _label(value) -> str:
    """A grid value as a run-name part: numbers as written (0.01, 1e-05), lists joined by 'x', other characters
    than letters, digits, '.', '+' and '_' as '_'."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, (int, float)):
        text = _num(value)
    elif isinstance(value, (list, tuple)):
        text = "x".join(_label(v) for v in value)
    elif value is None:
        text = "null"
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9.+_]", "_", text)


def _key_labels(keys) -> dict:
    """Each varied grid key's name part: its last component (w_optim.lr -> lr), the whole key with '_' for '.'
    where two varied keys share the last one."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (l if last.count(l) == 1 else k.replace(".", "_")) for k, l in zip(keys, last)}


def plan_sweep(base: dict, out_dir, *, grid=None, methods=None, lambdas=None, seeds=None) -> list:
    """The grid as PlannedRuns, in order: methods, then lambdas (milenas only), then seeds, then the ``grid``
    keys in the order given (``grid``: {dotted config key: [values]}, values as `--set` takes them).

    Unset axes take the base config's value. Names: <method>[-lam<lambda>]-s<seed>, then one part per grid key
    with more than one value (its last key component and the value), e.g. milenas-lam0.1-s0 or
    darts-s0-lr0.01-cutout16. Every point's config is checked (names, types, settings no component reads)
    before anything runs."""
    out_dir = Path(out_dir)
    grid = dict(grid or {})
    shorthand = {"methods": methods, "lambdas": lambdas, "seeds": seeds}
    for key, axis in _SHORTHANDS.items():  # --grid method=... is --methods ...
        if key in grid:
            if shorthand[axis] is not None and len(shorthand[axis]):
                raise GradnasError(f"the grid gives {key} twice (--grid {key}=... and --{axis}); give it once")
            shorthand[axis] = grid.pop(key)
    methods, lambdas, seeds = shorthand["methods"], shorthand["lambdas"], shorthand["seeds"]
    for key, values in grid.items():
        if not isinstance(key, str) or not key or not all(key.split(".")):
            raise GradnasError(f"grid key {key!r}: expected a dotted config key such as w_optim.lr")
        if not isinstance(values, (list, tuple)) or not values:
            raise GradnasError(f"grid key {key}: expected a non-empty list of values, got {values!r}")
    base_cfg = SearchConfig.from_dict(base)  # the shared settings are valid before any grid value is tried
    methods = list(methods) if methods else [base_cfg.method]
    seeds = list(seeds) if seeds is not None and len(seeds) else [base_cfg.seed]
    if lambdas is not None and len(lambdas) and "milenas" not in methods:
        raise GradnasError(f"--lambdas applies to milenas only and the grid's methods are {', '.join(methods)}; "
                           "add milenas to --methods or drop --lambdas")
    varied = [k for k, v in grid.items() if len(v) > 1]
    labels = _key_labels(varied)
    runs, seen = [], {}
    for method in methods:
        lams = (list(lambdas) if lambdas else [base_cfg.lam]) if method == "milenas" else [None]
        for lam in lams:
            for seed in seeds:
                for point in itertools.product(*grid.values()):
                    d = copy.deepcopy(base)
                    for key, value in zip(grid, point):
                        _set_key(d, key, value)
                    d["method"], d["seed"] = method, _seed(seed)
                    if lam is not None:
                        d["lambda"] = float(lam)
                    where = ", ".join(f"{k}={v!r}" for k, v in zip(grid, point))
                    try:
                        cfg = SearchConfig.from_dict(d)
                        # an unknown method fails here, and a grid key no component of this point reads
                        check_search_config(cfg, given=list(grid))
                        check_tracker_names(cfg.log)
                    except GradnasError as exc:
                        if not grid:
                            raise
                        raise GradnasError(f"grid point {method} seed {seed}, {where}: {exc}") from None
                    orders = method_class(method).orders
                    if cfg.order not in orders:
                        raise GradnasError(f"method {method} supports order {' or '.join(map(str, orders))}, and "
                                           f"the sweep asks for order {cfg.order}; sweep it separately")
                    name = f"{method}{'' if lam is None else '-lam' + _num(lam)}-s{seed}" + "".join(
                        f"-{labels[k]}{_label(v)}" for k, v in zip(grid, point) if k in labels)
                    if name in seen:
                        if seen[name] == where:
                            raise GradnasError(f"the grid lists run {name} twice; give each method, lambda, seed "
                                               "and grid value once")
                        raise GradnasError(f"grid points {seen[name]} and {where} would share the run name {name}; "
                                           "give values that differ in letters or digits")
                    seen[name] = where
                    runs.append(PlannedRun(name=name, config=cfg.to_dict(), path=out_dir / name))
    return runs


def _seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, str)) or not str(seed).lstrip("-").isdigit():
        raise GradnasError(f"grid seed {seed!r}: seeds are integers, e.g. --seeds 0,1,2")
    return int(seed)


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
    """The child's command line, ``python -m gradnas search ...`` (a Ray task runs it with its own node's Python)."""
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


def check_backend(backend: str, *, jobs=None, address=None, cpus_per_run=None, gpus_per_run=None) -> None:
    """Refuse a backend setting that would do nothing or cannot work, before any run folder is made; with
    ``ray``, that Ray is installed."""
    if backend not in BACKENDS:
        raise GradnasError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if jobs is not None and (type(jobs) is not int or jobs < 1):
        raise GradnasError(f"--jobs must be an integer >= 1, got {jobs!r}")
    if backend == "local":
        for flag, value in (("--address", address), ("--cpus-per-run", cpus_per_run),
                            ("--gpus-per-run", gpus_per_run)):
            if value is not None:
                raise GradnasError(f"{flag} is a setting of the Ray backend; add --backend ray (or drop {flag}: "
                                   "the local backend runs --jobs searches at once with --threads each)")
        return
    if cpus_per_run is not None and not (isinstance(cpus_per_run, (int, float)) and 0 < cpus_per_run < 1e6):
        raise GradnasError(f"--cpus-per-run must be a number > 0, got {cpus_per_run!r}")
    if gpus_per_run is not None and not (isinstance(gpus_per_run, (int, float)) and 0 <= gpus_per_run < 1e6):
        raise GradnasError(f"--gpus-per-run must be a number >= 0 (a fraction shares a GPU), got {gpus_per_run!r}")
    if address is not None and not (isinstance(address, str) and address.strip()):
        raise GradnasError("--address: give 'auto' (the cluster this machine belongs to), HOST:PORT or ray://HOST:PORT")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise GradnasError("--backend ray needs Ray, which is not installed: pip install 'gradnas[ray]'") from None


def run_sweep(runs: list, out_dir, *, jobs: int | None = None, progress: bool = True, plugins=(),
              backend: str = "local", address: str | None = None, cpus_per_run: float | None = None,
              gpus_per_run: float | None = None) -> dict:
    """Run the planned grid; returns {"done": [...], "failed": [...], "compare": path or None}. Each run
    imports ``plugins`` first, as `gradnas search --plugin` takes them (module names or .py file paths).

    ``backend="local"``: ``jobs`` (default 1) subprocesses at once on this machine. ``backend="ray"``: every
    point a Ray task with ``cpus_per_run`` (default 1) CPUs and ``gpus_per_run`` (default 0) GPUs, at most
    ``jobs`` at once (default: as many as the resources allow); on the Ray this process is already connected
    to, else on the cluster at ``address`` ('auto', 'ray://HOST:PORT'), else on a local Ray started (and shut
    down) for the sweep with this machine's cores. The compare runs here, on the driver."""
    from gradnas.report.compare import compare

    check_backend(backend, jobs=jobs, address=address, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_existing(runs)
    # Threads: the user's setting if the config has one, else the cores shared out among the jobs (local) or
    # the CPUs each Ray task holds.
    if backend == "ray":
        per_run = cpus_per_run or 1
        threads = None if runs and runs[0].config.get("threads") else max(1, int(per_run))
    else:
        jobs = jobs or 1
        threads = None if runs and runs[0].config.get("threads") else max(1, _cores() // jobs)
    plan_dir = out_dir / PLAN_DIR
    plan_dir.mkdir(exist_ok=True)
    for run in runs:
        if threads is not None:
            run.config["threads"] = threads
        (plan_dir / f"{run.name}.yaml").write_text(yaml.safe_dump(run.config, sort_keys=False))
    _write_sweep_file(out_dir, runs, jobs, backend)

    todo = [r for r in runs if r.state != "done"]
    counts = {s: sum(r.state == s for r in runs) for s in ("done", "resume", "start")}
    at_once = (f"{min(jobs, max(len(todo), 1))} at a time" if backend == "local" else
               f"on Ray, {cpus_per_run or 1:g} CPU(s)" + (f" and {gpus_per_run:g} GPU(s)" if gpus_per_run else "")
               + " per run" + (f", at most {jobs} at a time" if jobs else ""))
    logger.info(f"sweep: {len(runs)} runs in {out_dir} ({counts['done']} done, {counts['resume']} to resume, "
          f"{counts['start']} to start), {at_once}"
                + (f", {threads} thread(s) each" if threads else ""))
    bar = tqdm(total=sum(r.epochs for r in runs), initial=sum(min(_epochs_done(r), r.epochs) for r in runs),
               unit="epoch", desc="sweep", disable=None if progress else True, leave=False)

    def show_progress():
        done = sum(min(_epochs_done(r), r.epochs) for r in runs)
        if done != bar.n:
            bar.update(done - bar.n)

    def started(run):
        run.path.mkdir(parents=True, exist_ok=True)
        with open(run.path / LOG_FILE, "a") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {run.state} ===\n")
        logger.info(f"[{run.state}] {run.name}")
        cmd = _command(run, plan_dir / f"{run.name}.yaml", threads, plugins)
        logger.debug("%s: %s", run.name, " ".join(cmd))
        return cmd

    def finished(run, returncode, seconds):
        if returncode == 0:
            run.state = "done"
            logger.info(f"[done] {run.name} in {_duration(seconds)}: {_result_line(run)}")
            return
        failed.append(run)
        try:
            tail = (run.path / LOG_FILE).read_text().strip().splitlines()[-3:]
        except OSError:
            tail = []
        logger.warning(f"[failed] {run.name} (exit {returncode}); last lines of {run.path / LOG_FILE}:\n  "
                       + "\n  ".join(tail))

    failed = []
    try:
        if backend == "ray":
            _run_on_ray(todo, started, finished, show_progress, jobs=jobs, address=address,
                        cpus=cpus_per_run or 1, gpus=gpus_per_run or 0)
        else:
            _run_local(todo, started, finished, show_progress, jobs=jobs)
    finally:
        bar.close()
    _write_sweep_file(out_dir, runs, jobs, backend)
    shown = [r.path for r in runs if _epochs_done(r) > 0]
    compare_path = compare(shown, out_dir)[0] if shown else None
    return {"done": [r.name for r in runs if r.state == "done"], "failed": [r.name for r in failed],
            "compare": compare_path}


def _run_local(todo, started, finished, show_progress, *, jobs: int) -> None:
    """The local backend: a pool of ``jobs`` `gradnas search` subprocesses."""
    running, pending = {}, list(todo)
    try:
        while pending or running:
            while pending and len(running) < jobs:
                run = pending.pop(0)
                cmd = started(run)
                log = open(run.path / LOG_FILE, "a")
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                        env=_child_env())
                running[run.name] = (run, proc, log, time.time())
            time.sleep(0.5)
            for name, (run, proc, log, t0) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[name]
                finished(run, proc.returncode, time.time() - t0)
            show_progress()
    except KeyboardInterrupt:
        for run, proc, log, _ in running.values():
            proc.terminate()  # the search saves nothing mid-epoch; its last checkpoint stays
        for run, proc, log, _ in running.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
        raise


def _ray_task():
    """The Ray task of one grid point: the child command with this node's Python, its output appended to the
    run's search.log; returns the exit status. Defined here, inside a function, so that Ray ships it by value
    (a node needs gradnas installed to run the search, not to unpickle the task)."""
    def run_point(args: list, log_path: str, pythonpath: str) -> int:
        import os as _os
        import subprocess as _subprocess
        import sys as _sys
        env = dict(_os.environ)
        if pythonpath:
            env["PYTHONPATH"] = pythonpath + (_os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with open(log_path, "a") as log:
            proc = _subprocess.Popen([_sys.executable, *args], stdout=log, stderr=_subprocess.STDOUT, env=env)
            try:
                return proc.wait()
            except KeyboardInterrupt:  # ray.cancel: stop the search, whose last checkpoint stays
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except _subprocess.TimeoutExpired:
                    proc.kill()
                raise
    return run_point


def _run_on_ray(todo, started, finished, show_progress, *, jobs, address, cpus, gpus) -> None:
    """The Ray backend: one task per grid point, ``jobs`` (None: all) in flight, polled every half second."""
    import ray
    ours = not ray.is_initialized()
    # ray.init installs its own SIGINT / SIGTERM handlers, which outlive ray.shutdown: given back after the sweep
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if ours else {}
    if ours:
        kwargs = {"address": address} if address else {"num_cpus": _cores()}
        try:
            ray.init(include_dashboard=False, log_to_driver=False, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise GradnasError(f"could not start or reach {where}: {str(exc).splitlines()[0] if str(exc) else exc}; "
                               "check --address (auto: the cluster this machine belongs to, or ray://HOST:PORT)") \
                from None
    task = ray.remote(_ray_task()).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
    src = _child_env().get("PYTHONPATH", "")
    pending, running = list(todo), {}
    try:
        while pending or running:
            while pending and (jobs is None or len(running) < jobs):
                run = pending.pop(0)
                cmd = started(run)
                running[task.remote(cmd[1:], str(run.path / LOG_FILE), src)] = (run, time.time())
            ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            for ref in ready:
                run, t0 = running.pop(ref)
                try:
                    code = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the worker or its node died
                    with open(run.path / LOG_FILE, "a") as log:
                        log.write(f"gradnas sweep: the Ray task failed: {str(exc).splitlines()[0]}\n")
                    code = -1
                finished(run, code, time.time() - t0)
            show_progress()
    except KeyboardInterrupt:
        for ref in running:
            ray.cancel(ref)  # KeyboardInterrupt in the task: it stops its search
        for ref in running:
            try:
                ray.get(ref, timeout=35)
            except Exception:  # cancelled, as asked
                pass
        raise
    finally:
        if ours:
            ray.shutdown()
            for sig, handler in handlers.items():
                if handler is not None:
                    signal.signal(sig, handler)


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


def _write_sweep_file(out_dir: Path, runs: list, jobs, backend: str = "local") -> None:
    """OUT/sweep.json: the backend, the grid's runs and where each stands (start, resume, done)."""
    record = {"backend": backend, "jobs": jobs, "runs": [{"name": r.name, "state": r.state, "path": str(r.path)} for r in runs]}
    tmp = out_dir / (SWEEP_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, out_dir / SWEEP_FILE)
