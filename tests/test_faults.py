"""Fault injection: stops by signal mid-epoch, SIGKILL at random moments and during a checkpoint write,
and the resumed runs end bit for bit where an uninterrupted run ends (search and training)."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from gradnas.checkpoint import load_checkpoint
from gradnas.search.loop import Search
from gradnas.signals import Interrupted
from gradnas.train.loop import Training

from test_search import FMNIST, tiny_config as search_config
from test_train import GENO, folder, jpeg_folder, tiny_config as train_config, _private_cache  # noqa: F401


def _metrics(run_dir):
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        line.pop("epoch_time")
    return lines


def _same_state(a: dict, b: dict, path=""):
    """Every tensor and number of two (nested) state dicts equal, bit for bit."""
    assert type(a) is type(b), path
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _same_state(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same_state(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    else:
        assert a == b, path


def _signal_at(obj, attr, calls, signum):
    """Wrap obj.attr so that its ``calls``-th call sends ``signum`` to this process while it runs."""
    inner, count = getattr(obj, attr), [0]

    def wrapped(*args, **kwargs):
        count[0] += 1
        if count[0] == calls:
            os.kill(os.getpid(), signum)
        return inner(*args, **kwargs)
    setattr(obj, attr, wrapped)


# -------------------------------------------------------------------------------- signals, in process

@pytest.mark.parametrize("kind", ["milenas-darts", "gdas-nb201"])
def test_search_signal_mid_epoch_checkpoints_that_step_and_resumes_exactly(tmp_path, kind):
    if kind == "milenas-darts":
        cfg = search_config(epochs=2)
    else:  # the Gumbel noise generator's position must survive the stop too
        cfg = search_config(method="darts", relax="gumbel", space="nb201", epochs=2,
                            nb201={"cells_per_stage": 1, "channels": 4})
    full = Search(cfg, tmp_path / "full", progress=False)
    full.run()
    steps = len(full.algorithm.batches)
    assert steps == 3

    stopped = Search(cfg, tmp_path / "run", progress=False)
    _signal_at(stopped.algorithm.method, "step", steps + 2, signal.SIGTERM)  # during the 2nd step of epoch 2
    with pytest.raises(Interrupted, match=r"(?s)SIGTERM in epoch 2/2 after step 2/3.*gradnas search --resume") as exc:
        stopped.run(stop_on_signal=True)
    assert exc.value.exit_code == 128 + signal.SIGTERM
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (1, 2)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are given back

    resumed = Search(cfg, tmp_path / "run", resume=True, progress=False)
    assert (resumed.epoch, resumed.step) == (1, 2)
    assert resumed.run()["genotype"] == full.model.genotype().to_string()
    _same_state(full.state_dict(), resumed.state_dict())  # weights, alphas, optimizers, schedule
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "run")


def test_search_signal_on_the_last_step_stops_at_the_epoch_boundary(tmp_path):
    cfg = search_config(epochs=2)
    stopped = Search(cfg, tmp_path, progress=False)
    _signal_at(stopped.algorithm.method, "step", 3, signal.SIGINT)  # the last step of epoch 1
    with pytest.raises(Interrupted, match="SIGINT after epoch 1/2; its checkpoint is saved"):
        stopped.run(stop_on_signal=True)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (1, 0) and "partial" not in state
    assert len(_metrics(tmp_path)) == 1


def test_second_signal_stops_at_once(tmp_path):
    cfg = search_config(epochs=1)
    run = Search(cfg, tmp_path, progress=False)
    inner = run.algorithm.method.step

    def twice(*args):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        return inner(*args)
    run.algorithm.method.step = twice
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN in a shell's background job
    with pytest.raises(KeyboardInterrupt):
        run.run(stop_on_signal=True)
    assert not (tmp_path / "checkpoint.pt").exists()  # stopped before any checkpoint: nothing half-written
    assert signal.getsignal(signal.SIGINT) is before  # the previous handler is back


def test_a_double_sigterm_exits_143_like_a_sigterm(tmp_path, capsys):
    from gradnas.cli.common import drive
    run = Search(search_config(epochs=1), tmp_path, progress=False)
    inner = run.algorithm.method.step

    def twice(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        return inner(*args)
    run.algorithm.method.step = twice
    assert drive(run, resumed=False, say=print) == 128 + signal.SIGTERM  # was 130, as for Ctrl-C
    err = capsys.readouterr().err
    assert "interrupted (SIGTERM)" in err and "nothing is saved yet" in err and f"--resume {tmp_path}" in err


@pytest.mark.parametrize("streamed", [False, True])
def test_training_signal_mid_epoch_resumes_exactly(tmp_path, folder, jpeg_folder, streamed):  # noqa: F811
    cfg = train_config(jpeg_folder if streamed else folder, streamed=streamed, epochs=2)
    full = Training(cfg, GENO, tmp_path / "full", progress=False)
    full.run()
    steps = full.data.steps
    assert steps >= 2

    stopped = Training(cfg, GENO, tmp_path / "run", progress=False)
    _signal_at(stopped.trainer, "_loss", steps + 1, signal.SIGINT)  # epoch 2, step 1 (cutout, drop path drawn)
    with pytest.raises(Interrupted, match=rf"(?s)SIGINT in epoch 2/2 after step 1/{steps}.*gradnas train --resume"):
        stopped.run(stop_on_signal=True)
    resumed = Training(cfg, GENO, tmp_path / "run", resume=True, progress=False)
    assert (resumed.epoch, resumed.step) == (1, 1)
    resumed.run()
    _same_state(full.state_dict(), resumed.state_dict())
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "run")


# -------------------------------------------------------------------------------- real processes

CLI_SEARCH = ["search", "--dataset", "fashion-mnist", "--data-dir", FMNIST, "--epochs", "3", "--batch-size", "16",
              "--cells", "3", "--channels", "4", "--set", "supernet.nodes=2", "--set", "data.subset=384",
              "--set", "data.eval_batches=2", "--seed", "5", "--threads", "1", "--quiet", "--device", "cpu"]


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def _start(args, *, driver=None):
    cmd = [sys.executable, "-m", "gradnas", *args] if driver is None else [sys.executable, "-c", driver, *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())


def _finish(args):
    proc = _start(args)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return out, err


def _final(run_dir):
    state = load_checkpoint(run_dir / "checkpoint.pt")
    return {k: state[k] for k in ("epoch", "step", "model", "w_optim", "a_optim", "scheduler", "best_valid_acc")}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: one uninterrupted search, and how long it took."""
    run = tmp_path_factory.mktemp("ref") / "run"
    t0 = time.time()
    _finish([*CLI_SEARCH, "--out", str(run)])
    return run, time.time() - t0


def test_sigkill_at_random_moments_then_resume_ends_where_an_uninterrupted_run_ends(tmp_path, uninterrupted):
    ref, seconds = uninterrupted
    run, rng, kills = tmp_path / "run", random.Random(0), 0
    proc = _start([*CLI_SEARCH, "--out", str(run)])
    for attempt in range(4):  # up to 4 kills, each at a random moment (0.2-0.7 of an uninterrupted run's time)
        try:
            proc.wait(timeout=rng.uniform(0.2, 0.7) * seconds)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            # killed before the run folder was written (imports, data loading): nothing to resume, start again
            proc = _start(["search", "--resume", str(run), "--quiet"] if (run / "config.yaml").exists()
                          else [*CLI_SEARCH, "--out", str(run)])
            continue
        break
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert kills >= 1
    _same_state(_final(ref), _final(run))
    assert (ref / "genotype.json").read_text() == (run / "genotype.json").read_text()
    assert _metrics(ref) == _metrics(run)
    assert json.loads((run / "summary.json").read_text())["finished"] is True


# Runs gradnas with the checkpoint write cut in half on disk (the temporary file truncated as it is synced), or
# a whole one that is never renamed into place, and then SIGKILLs the process: the worst moments for a crash.
KILL_DURING_WRITE = """
import os, signal, sys, torch
import gradnas.checkpoint as ck
mode, nth = os.environ["FAULT_MODE"], int(os.environ["FAULT_NTH"])
real_save, real_replace, real_fsync, count = torch.save, os.replace, os.fsync, [0]
def save(obj, f, *a, **k):
    count[0] += 1
    return real_save(obj, f, *a, **k)
def fsync(fd):
    if count[0] == nth and mode == "torn":
        os.ftruncate(fd, os.fstat(fd).st_size // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    return real_fsync(fd)
def replace(src, dst):
    if count[0] == nth and mode == "unrenamed" and str(dst).endswith("checkpoint.pt"):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst)
ck.torch.save = save
ck.os.replace = replace
ck.os.fsync = fsync
from gradnas.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("mode", ["torn", "unrenamed"])
def test_sigkill_during_a_checkpoint_write_loses_at_most_that_epoch(tmp_path, uninterrupted, mode):
    ref, _ = uninterrupted
    run = tmp_path / "run"
    env = {**_env(), "FAULT_MODE": mode, "FAULT_NTH": "2"}  # the 2nd checkpoint: epoch 1's is whole
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_WRITE, *CLI_SEARCH, "--out", str(run)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1  # the previous one, whole
    assert (run / "checkpoint.pt.tmp").exists()  # the torn or unrenamed write, never read
    _, err = _finish(["search", "--resume", str(run)])  # not --quiet: "resuming ..." is an info line
    assert "resuming" in err and "after epoch 1/3" in err
    _same_state(_final(ref), _final(run))
    assert _metrics(ref) == _metrics(run)


def test_sigterm_stops_cleanly_and_says_how_to_resume(tmp_path, uninterrupted):
    ref, _ = uninterrupted
    run = tmp_path / "run"
    proc = _start([*CLI_SEARCH, "--out", str(run)])
    deadline = time.time() + 120
    while not (run / "checkpoint.pt").exists() and time.time() < deadline:  # into epoch 2
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and f"gradnas search --resume {run}" in err
    assert "Traceback" not in err
    _finish(["search", "--resume", str(run), "--quiet"])
    _same_state(_final(ref), _final(run))
    assert _metrics(ref) == _metrics(run)


def test_sigkill_before_the_first_checkpoint_resumes_from_scratch(tmp_path, uninterrupted):
    ref, _ = uninterrupted
    run = tmp_path / "run"
    proc = _start([*CLI_SEARCH, "--out", str(run)])
    deadline = time.time() + 120
    while not (run / "split.json").exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "checkpoint.pt").exists()
    _, err = _finish(["search", "--resume", str(run), "--quiet"])
    assert "no checkpoint yet" in err
    _same_state(_final(ref), _final(run))


# -------------------------------------------------------------------------------- determinism

@pytest.mark.parametrize("kind", ["milenas-softmax", "darts-gumbel-nb201"])
def test_same_seed_gives_bit_identical_alphas_and_genotype(tmp_path, kind):
    over = {} if kind == "milenas-softmax" else dict(method="darts", relax="gumbel", space="nb201",
                                                      nb201={"cells_per_stage": 1, "channels": 4})
    runs = []
    seeds = (("a", 3), ("b", 3)) if kind == "milenas-softmax" else (("a", 3), ("b", 3), ("c", 4))
    for name, seed in seeds:
        search = Search(search_config(epochs=2, seed=seed, **over), tmp_path / name, progress=False)
        search.run()
        runs.append(([a.detach().clone() for a in search.model.arch_parameters()], search.model.genotype()))
    (alpha_a, geno_a), (alpha_b, geno_b) = runs[:2]
    assert all(torch.equal(x, y) for x, y in zip(alpha_a, alpha_b)) and geno_a == geno_b
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
    if len(runs) > 2:  # the seed does matter (Gumbel samples, data order, initialisation)
        assert not all(torch.equal(x, y) for x, y in zip(alpha_a, runs[2][0]))


def test_same_seed_in_two_processes_is_bit_identical(tmp_path, uninterrupted):
    ref, _ = uninterrupted
    _finish([*CLI_SEARCH, "--out", str(tmp_path / "again")])
    _same_state(_final(ref), _final(tmp_path / "again"))
    assert (ref / "genotype.json").read_text() == (tmp_path / "again" / "genotype.json").read_text()


def test_training_sigkill_at_random_moments_then_resume_is_exact(tmp_path, folder):  # noqa: F811
    from gradnas.cli import DARTS_V2
    args = ["train", "--genotype", DARTS_V2, "--dataset", "imagefolder", "--data-dir", str(folder), "--epochs", "3",
            "--batch-size", "4", "--cells", "3", "--channels", "4", "--threads", "1", "--quiet", "--device", "cpu"]
    t0 = time.time()
    _finish([*args, "--out", str(tmp_path / "ref")])
    seconds = time.time() - t0
    run, rng, kills = tmp_path / "run", random.Random(1), 0
    proc = _start([*args, "--out", str(run)])
    for _ in range(3):
        try:
            proc.wait(timeout=rng.uniform(0.2, 0.7) * seconds)
            break
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            proc = _start(["train", "--resume", str(run), "--quiet"] if (run / "genotype.json").exists()
                          else [*args, "--out", str(run)])
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert kills >= 1
    keys = ("epoch", "step", "model", "optimizer", "scheduler", "best_test_acc")
    a, b = load_checkpoint(tmp_path / "ref" / "checkpoint.pt"), load_checkpoint(run / "checkpoint.pt")
    _same_state({k: a[k] for k in keys}, {k: b[k] for k in keys})
    assert _metrics(tmp_path / "ref") == _metrics(run)
    assert (run / "network.json").read_text() == (tmp_path / "ref" / "network.json").read_text()


def test_a_metrics_line_torn_by_a_crash_is_dropped_on_resume(tmp_path):
    cfg = search_config(epochs=2)
    Search(cfg, tmp_path, progress=False).run(stop_after=1)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "lr": 0.02, "train_lo')  # the crash came in the middle of epoch 2's line
    resumed = Search(cfg, tmp_path, resume=True, progress=False)
    assert [r["epoch"] for r in _metrics(tmp_path)] == [1]
    resumed.run()
    assert [r["epoch"] for r in _metrics(tmp_path)] == [1, 2]
