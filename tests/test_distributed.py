"""Data parallelism on CPU: 2 gloo processes against 1 process with the same global batch.

A 2-process step sees each half of the global batch with its own BatchNorm statistics and averages the
two gradients. A 1-process run whose supernet runs the two halves of every batch separately computes
exactly that (up to float rounding), so it is matched tightly. A plain 1-process run (BN statistics over
the whole batch) computes slightly different gradients; Adam's near-sign-sized steps turn that into
alphas that differ most where the gradient is near zero. Measured over the 4 steps of batch 64 below
(seeds 5, 6, 7): alpha moves 0.025-0.031 on average, the 1- and 2-process changes differ by 11-14% of
that on average and point the same way (cosine 0.970-0.981); the test allows 25% and cosine 0.93.
"""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from gradnas import distributed
from gradnas.checkpoint import load_checkpoint
from gradnas.config import SearchConfig
from gradnas.search import gradient as search_gradient
from gradnas.search.loop import Search
from gradnas.train.config import TrainConfig
from gradnas.train import loop as train_loop
from gradnas.train.loop import Training

from test_darts_network import random_genotype
from test_train import make_folder

GENO = random_genotype(0, steps=2)


def search_config(data_dir):
    # arch lr 0.01 (not 3e-4) so that alpha moves far enough in 4 steps for the comparison to mean something
    return {"method": "milenas", "epochs": 2, "batch_size": 64, "seed": 5, "device": "cpu", "threads": 1,
            "data": {"dataset": "imagefolder", "data_dir": str(data_dir), "subset": 256, "eval_batches": 1},
            "supernet": {"cells": 3, "channels": 4, "nodes": 2}, "arch_optim": {"lr": 0.01}}


def train_config(data_dir):
    return {"epochs": 2, "batch_size": 8, "seed": 2, "device": "cpu", "threads": 1,
            "data": {"dataset": "imagefolder", "data_dir": str(data_dir), "subset": 32, "crop_padding": 2,
                     "cutout": 4},
            "network": {"cells": 3, "channels": 4, "auxiliary_weight": 0.4, "drop_path": 0.2},
            "log": ["csv"], "tracking": {"every_steps": 1}}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world_size, port, root, data_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    distributed.init_from_env("cpu")
    try:
        search = Search(SearchConfig.from_dict(search_config(data_dir)), f"{root}/search", progress=False)
        summary = search.run()
        train = Training(TrainConfig.from_dict(train_config(data_dir)), GENO, f"{root}/train", progress=False)
        train_summary = train.run()
        # the same training with the gradients averaged by hand after backward (how gradnas trained before DDP)
        train_loop.DistributedDataParallel = ExplicitAverage
        explicit = Training(TrainConfig.from_dict(train_config(data_dir)), GENO, f"{root}/train-explicit",
                            progress=False)
        explicit.run()
        torch.save({"search": search.model.state_dict(), "genotype": summary["genotype"],
                    "valid_acc": summary["best_valid_acc"], "train": train.model.state_dict(),
                    "train_summary": train_summary, "train_explicit": explicit.model.state_dict()},
                   f"{root}/rank{rank}.pt")
    finally:
        distributed.shutdown()


def ExplicitAverage(model, **kwargs):
    """Stands in for DistributedDataParallel: the network itself, each gradient averaged over the ranks once
    backward has accumulated it."""
    for p in model.parameters():
        p.register_post_accumulate_grad_hook(lambda p: distributed.average_([p.grad]))
    return model


class TwoHalves(torch.nn.Module):
    """A supernet that runs each half of a training batch on its own: BN statistics per half, as 2 ranks."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.relaxation = model.relaxation

    def forward(self, x):
        if not self.training:
            return self.inner(x)
        return torch.cat([self.inner(half) for half in x.chunk(2)])

    def weight_parameters(self):
        return self.inner.weight_parameters()

    def arch_parameters(self):
        return self.inner.arch_parameters()

    def genotype(self):
        return self.inner.genotype()

    def edge_weights(self):
        return self.inner.edge_weights()


def _params(state):
    """Weights and alphas (not BN running statistics, which only evaluation reads)."""
    return {k.removeprefix("inner."): v for k, v in state.items() if "running" not in k and "num_batches" not in k}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GRADNAS_CACHE", str(tmp_path_factory.getbasetemp() / "ddp-cache"))


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    data_dir = make_folder(root / "data", classes=4, train=64, test=2, size=(8, 8))
    with pytest.MonkeyPatch.context() as patch:  # the ranks inherit the environment
        patch.setenv("GRADNAS_CACHE", str(tmp_path_factory.getbasetemp() / "ddp-cache"))
        mp.spawn(_worker, args=(2, _free_port(), str(root), str(data_dir)), nprocs=2, join=True)
    return root, data_dir, [torch.load(root / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def test_two_process_search_matches_one_process(two_process_run, tmp_path, monkeypatch):
    root, data_dir, (r0, r1) = two_process_run
    # every rank ends with the same alphas, weights and BN statistics, hence the same genotype
    for key in r0["search"]:
        assert torch.equal(r0["search"][key], r1["search"][key]), key
    assert r0["genotype"] == r1["genotype"] and r0["valid_acc"] == r1["valid_acc"]
    # only rank 0 wrote the run folder (appending ranks would have doubled the metrics lines)
    lines = (root / "search" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2]
    assert json.loads((root / "search" / "genotype.json").read_text())["string"] == r0["genotype"]

    cfg = SearchConfig.from_dict(search_config(data_dir))
    plain = Search(cfg, tmp_path / "plain", progress=False)
    init = {k: v.clone() for k, v in _params(plain.model.state_dict()).items()}
    plain.run()
    build = search_gradient.build_supernet
    monkeypatch.setattr(search_gradient, "build_supernet", lambda *a, **k: TwoHalves(build(*a, **k)))
    halves = Search(cfg, tmp_path / "halves", progress=False)
    halves.run()

    ddp, ref, full = _params(r0["search"]), _params(halves.model.state_dict()), _params(plain.model.state_dict())
    for key in ddp:
        # same arithmetic as the 2 ranks, up to float32 rounding of the sums
        assert torch.allclose(ddp[key], ref[key], rtol=1e-4, atol=1e-5), (key, (ddp[key] - ref[key]).abs().max())
    alphas = ("alpha_normal", "alpha_reduce")
    moved_1 = torch.cat([(full[k] - init[k]).flatten() for k in alphas])
    moved_2 = torch.cat([(ddp[k] - init[k]).flatten() for k in alphas])
    gap, movement = (moved_2 - moved_1).abs().mean(), moved_1.abs().mean()
    assert movement > 0.015  # alpha really moved
    assert gap < movement / 4, (gap, movement)  # see the module docstring for the measured figures
    assert torch.nn.functional.cosine_similarity(moved_1, moved_2, dim=0) > 0.93
    assert halves.model.genotype().to_string() == r0["genotype"]


def test_two_process_training_keeps_ranks_identical(two_process_run):
    root, _, (r0, r1) = two_process_run
    for key in r0["train"]:
        assert torch.equal(r0["train"][key], r1["train"][key]), key
    assert r0["train_summary"]["test_acc"] == r1["train_summary"]["test_acc"]
    lines = (root / "train" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2]
    # DDP wraps the network for training only: the checkpoint holds the network's own keys (no 'module.')
    saved = load_checkpoint(root / "train" / "checkpoint.pt")["model"]
    assert sorted(saved) == sorted(r0["train"]) and not any(k.startswith("module.") for k in saved)
    # the trackers log on rank 0 only: every epoch's figure once
    rows = [l.split(",") for l in (root / "train" / "scalars.csv").read_text().splitlines()[1:]]
    assert [int(step) for step, name, _ in rows if name == "train_loss"] == [4, 8]  # 4 steps of 8 per epoch


def test_two_process_ddp_training_averages_as_the_explicit_average(two_process_run):
    """DDP's bucketed all-reduce trains what averaging every gradient after backward trained (the training loop
    before DDP): the same weights up to float rounding of the sums."""
    _, _, (r0, r1) = two_process_run
    for key, value in r0["train"].items():
        ref = r0["train_explicit"][key]
        if value.is_floating_point():
            assert torch.allclose(value, ref, rtol=1e-5, atol=1e-6), (key, (value - ref).abs().max())
        else:
            assert torch.equal(value, ref), key


def test_torchrun_cli_and_errors_on_every_rank(tmp_path):
    data_dir = make_folder(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
           "--master_port", str(_free_port()), "-m", "gradnas", "train", "--genotype", GENO.to_string(),
           "--dataset", "imagefolder", "--data-dir", str(data_dir), "--epochs", "1", "--batch-size", "8",
           "--cells", "3", "--channels", "4", "--device", "cpu", "--threads", "1", "--quiet", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("test acc:") == 1 and r.stdout.count(f"run folder: {out}") == 1  # rank 0 speaks
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    # an error found on rank 0 (the folder holds a run) stops both ranks with the message, not a hang
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode != 0
    assert r.stderr.count("already holds a training run") == 1  # said once, by rank 0
    assert len(_gradnas_lines(r.stderr)) == 1


# -------------------------------------------------------------------------------- failures under torchrun

# Runs gradnas with a fault at the STEP-th gradient exchange of rank RANK (a search's gradnas.distributed.average_,
# a training step's DDP forward, whose backward all-reduces), counted from when the file FAULT_AFTER exists
# (FAULT: kill = SIGKILL itself, sleep = hang for 60 s, sigint = both ranks get SIGINT, as from Ctrl-C).
FAULT_DRIVER = """
import os, signal, sys, time
import gradnas.distributed as d
fault, rank, step = os.environ["FAULT"], int(os.environ["FAULT_RANK"]), int(os.environ["FAULT_STEP"])
after = os.environ.get("FAULT_AFTER")
real, count = d.average_, [0]
def exchange():
    if after is None or os.path.exists(after):
        count[0] += 1
    if count[0] == step and (fault == "sigint" or d.world().rank == rank):
        if fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif fault == "sleep":
            time.sleep(60)
        else:
            os.kill(os.getpid(), signal.SIGINT)
def average_(tensors):
    exchange()
    return real(tensors)
d.average_ = average_
from torch.nn.parallel import DistributedDataParallel as DDP
ddp_forward = DDP.forward
def forward(self, *args, **kwargs):
    exchange()
    return ddp_forward(self, *args, **kwargs)
DDP.forward = forward
from gradnas.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _torchrun(tmp_path, args, *, driver=None, env=(), timeout=300):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1",
           **{k: str(v) for k, v in dict(env).items()}}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
           "--master_port", str(_free_port())]
    if driver:
        script = tmp_path / "driver.py"
        script.write_text(driver)
        cmd += [str(script)]
    else:
        cmd += ["-m", "gradnas"]
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)


def _gradnas_lines(stderr):
    return [l for l in stderr.splitlines() if l.startswith("gradnas: error:")]


def _no_gradnas_traceback(stderr):
    # torchrun itself ends a failed launch with its own ChildFailedError traceback; none of gradnas' frames
    assert "/gradnas/" not in "".join(l for l in stderr.splitlines() if l.lstrip().startswith("File ")), stderr


def _train_args(data_dir, out, epochs=2):
    return ["train", "--genotype", GENO.to_string(), "--dataset", "imagefolder", "--data-dir", data_dir, "--epochs",
            str(epochs), "--batch-size", "8", "--cells", "3", "--channels", "4", "--device", "cpu", "--threads", "1",
            "--quiet", "--out", out]


def test_torchrun_batch_that_does_not_split_is_one_error_line(tmp_path):
    data_dir = make_folder(tmp_path / "data")
    r = _torchrun(tmp_path, [*_train_args(data_dir, tmp_path / "run")[:-2], "--batch-size", "7", "--out",
                             tmp_path / "run"])
    assert r.returncode != 0
    lines = _gradnas_lines(r.stderr)
    assert len(lines) == 1 and "does not split over 2 processes" in lines[0], r.stderr
    _no_gradnas_traceback(r.stderr)
    assert not (tmp_path / "run").exists()


def test_torchrun_lost_rank_is_named_by_the_survivor_and_the_run_resumes(tmp_path):
    data_dir = make_folder(tmp_path / "data")
    out = tmp_path / "run"
    r = _torchrun(tmp_path, _train_args(data_dir, out), driver=FAULT_DRIVER,  # in epoch 2, after its checkpoint
                  env={"FAULT": "kill", "FAULT_RANK": "1", "FAULT_STEP": "1", "FAULT_AFTER": out / "checkpoint.pt"})
    assert r.returncode != 0
    lines = _gradnas_lines(r.stderr)
    assert len(lines) == 1, r.stderr
    assert "rank 1 ended (its process was lost) in epoch 2" in lines[0]
    assert "the last finished epoch (1) is saved" in r.stderr
    assert f"torchrun --nproc_per_node 2 -m gradnas train --resume {out}" in r.stderr
    _no_gradnas_traceback(r.stderr)
    r = _torchrun(tmp_path, ["train", "--resume", out, "--quiet", "--threads", "1"])
    assert r.returncode == 0, r.stderr
    assert [json.loads(l)["epoch"] for l in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_torchrun_timeout_is_one_gradnas_error(tmp_path):
    data_dir = make_folder(tmp_path / "data")
    r = _torchrun(tmp_path, [*_train_args(data_dir, tmp_path / "run", epochs=1), "--dist-timeout", "3"],
                  driver=FAULT_DRIVER, env={"FAULT": "sleep", "FAULT_RANK": "1", "FAULT_STEP": "1"})
    assert r.returncode != 0
    lines = _gradnas_lines(r.stderr)
    assert len(lines) == 1, r.stderr
    assert "did not answer within the process-group timeout (3 s" in lines[0]
    assert "no epoch had finished, so nothing is saved yet" in r.stderr
    _no_gradnas_traceback(r.stderr)


def test_torchrun_ctrl_c_before_the_first_checkpoint_says_nothing_is_saved(tmp_path):
    data_dir = make_folder(tmp_path / "data")
    out = tmp_path / "run"
    r = _torchrun(tmp_path, _train_args(data_dir, out), driver=FAULT_DRIVER,
                  env={"FAULT": "sigint", "FAULT_RANK": "0", "FAULT_STEP": "1"})
    assert r.returncode != 0
    assert r.stderr.count("no epoch had finished, so nothing is saved yet") == 1, r.stderr
    assert "(0) is saved" not in r.stderr and "was lost" not in r.stderr
    assert f"--resume {out}" in r.stderr
    _no_gradnas_traceback(r.stderr)


def test_torchrun_search_says_a_warning_once(tmp_path):
    data_dir = make_folder(tmp_path / "data", classes=4, train=16, test=2, size=(8, 8))
    r = _torchrun(tmp_path, ["search", "--method", "milenas", "--relax", "softmax", "--dataset", "imagefolder",
                             "--data-dir", data_dir, "--epochs", "1",
                             "--batch-size", "16", "--cells", "3", "--channels", "4", "--set", "supernet.nodes=2",
                             "--collapse-threshold", "0.01", "--set", "data.subset=64", "--device", "cpu", "--threads", "1", "--quiet", "--out",
                             tmp_path / "run"])
    assert r.returncode == 0, r.stderr
    # rank 0's, not one per rank: the epoch's collapse warning and the final line's collapsed share, once each
    assert r.stderr.count("gradnas: warning: after epoch 1,") == 1, r.stderr
    assert r.stderr.count("gradnas: warning: parameter-free ops") == 1, r.stderr
    assert r.stderr.count("gradnas: warning:") == 2, r.stderr
    assert r.stdout.count("genotype:") == 1
