"""Experiment trackers (gradnas.trackers): what each tool wrote, read back with the tool's own reader
(TensorBoard's EventAccumulator, the MLflow client on its file store, W&B's offline run file through its
protobuf records) and compared with metrics.jsonl; a resumed search logs into the same tracker runs; a
training run logs its per-step running figures; a missing package is one error before the run folder."""
import csv
import glob
import json
import struct
import sys

import pytest

from gradnas.cli import main
from gradnas.config import SearchConfig
from gradnas.search.loop import Search
from gradnas.train.config import TrainConfig
from gradnas.train.loop import Training

from test_darts_network import random_genotype
from test_train import make_folder

FMNIST = "/usr/share/datasets/fashion-mnist"


def tiny_search(log, **extra):
    return SearchConfig.from_dict({
        "method": "milenas", "epochs": 2, "batch_size": 16, "seed": 0, "device": "cpu", "threads": 1,
        "data": {"dataset": "fashion-mnist", "data_dir": FMNIST, "subset": 96, "eval_batches": 1},
        "supernet": {"cells": 3, "channels": 4, "nodes": 2}, "log": log, "tracking": {"every_steps": 1}, **extra})


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def wandb_records(path):
    """The protobuf records of a W&B run file (.wandb): W&B's header (":W&B", magic, version; 7 bytes), then
    LevelDB-log framing in 32 KiB blocks (checksum, length, type: full / first / middle / last)."""
    from wandb.proto import wandb_internal_pb2 as pb
    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    pos, block, chunks, part = 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            chunks.append(chunk)
        elif kind == 2:
            part = chunk
        elif kind == 3:
            part += chunk
        else:
            chunks.append(part + chunk)
    out = []
    for raw in chunks:
        record = pb.Record()
        record.ParseFromString(raw)
        out.append(record)
    return out


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def test_search_trackers_hold_the_metrics_and_a_resume_continues_the_same_runs(tmp_path):
    for module in ("tensorboard", "mlflow", "wandb"):
        pytest.importorskip(module)
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    cfg = tiny_search(["tensorboard", "mlflow", "wandb", "csv"])
    first = Search(cfg, out, progress=False)
    per = len(first.algorithm.batches)
    first.run(stop_after=1)  # as a crash after epoch 1's checkpoint
    assert not (out / "summary.json").exists()
    Search(cfg, out, resume=True, progress=False).run()
    lines = metrics(out)
    assert [m["epoch"] for m in lines] == [1, 2]
    steps = [per, 2 * per]

    # TensorBoard: one folder, the events after the resume point purged (no epoch twice)
    tb = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    tb.Reload()
    for key in ("train_loss", "valid_acc", "lr", "non_learnable_share", "edge_weights/normal/2<-0/sep_conv_3x3"):
        got = [(e.step, e.value) for e in tb.Scalars(key)]
        want = [(s, m[key] if "/" not in key else m["edge_weights"]["normal"]["2<-0"]["sep_conv_3x3"])
                for s, m in zip(steps, lines)]
        assert [s for s, _ in got] == steps, key
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6), key
    # the running means every step; at an epoch's last step they are the epoch's figures
    running = {e.step: e.value for e in tb.Scalars("step/train_loss")}
    assert sorted(running) == list(range(1, 2 * per + 1))
    assert [running[s] for s in steps] == pytest.approx([m["train_loss"] for m in lines], rel=1e-5)
    arch = {e.step: e.value for e in tb.Scalars("step/valid_acc")}
    assert [arch[s] for s in steps] == pytest.approx([m["arch_batch_acc"] for m in lines], rel=1e-5)
    assert {"images/cell-normal", "images/edge-heatmap-normal"} <= set(tb.Tags()["images"])
    assert "genotype/text_summary" in tb.Tags()["tensors"]

    # MLflow: one run (the resume logged into it), finished, the same numbers, the genotype and the images
    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    runs = client.search_runs([client.get_experiment_by_name("gradnas").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run_id = runs[0].info.run_id
    history = sorted((h.step, h.value) for h in client.get_metric_history(run_id, "train_loss"))
    assert history == [(s, m["train_loss"]) for s, m in zip(steps, lines)]
    assert client.get_metric_history(run_id, "edge_weights/reduce/2_-0/none")[-1].value == pytest.approx(
        lines[-1]["edge_weights"]["reduce"]["2<-0"]["none"])
    artifacts = {a.path for folder in (None, "images") for a in client.list_artifacts(run_id, folder)}
    assert {"genotype.txt", "images/cell-normal.png", "images/edge-heatmap-reduce.png"} <= artifacts
    assert lines[-1]["genotype"] in open(client.download_artifacts(run_id, "genotype.txt", str(tmp_path))).read()

    # W&B: two offline run folders of one run id (a start and its resume), the history as in metrics.jsonl
    files = sorted(glob.glob(str(out / "wandb" / "offline-run-*" / "run-*.wandb")))
    assert len(files) == 2 and len({f.rsplit("-", 1)[-1] for f in files}) == 1
    logged, summary = {}, {}
    for path in files:
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            items = record.history.item if kind == "history" else record.summary.update if kind == "summary" else ()
            row = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items}
            if kind == "history" and "train_loss" in row:
                logged[row["_step"]] = row
            summary.update(row)
    assert sorted(logged) == steps
    for s, m in zip(steps, lines):
        assert logged[s]["train_loss"] == pytest.approx(m["train_loss"], rel=1e-9)
        assert logged[s]["valid_acc"] == pytest.approx(m["valid_acc"], rel=1e-9)
    assert summary["genotype"] == lines[-1]["genotype"]

    # CSV: each epoch's numbers once, the rows past the resume point dropped
    with open(out / "scalars.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["name"] == "valid_loss"]
    assert [(int(r["step"]), float(r["value"])) for r in rows] == [(s, m["valid_loss"]) for s, m in zip(steps, lines)]


def test_training_logs_running_figures_and_epochs(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    data = make_folder(tmp_path / "data", classes=4, train=32, test=8, size=(8, 8))
    cfg = TrainConfig.from_dict({
        "epochs": 2, "batch_size": 8, "seed": 1, "device": "cpu", "threads": 1, "log": ["tensorboard", "csv"],
        "tracking": {"every_steps": 2},
        "data": {"dataset": "imagefolder", "data_dir": str(data), "crop_padding": 0, "cutout": 0},
        "network": {"cells": 3, "channels": 4, "auxiliary_weight": 0.4, "drop_path": 0.2}})
    run = Training(cfg, random_genotype(0, steps=2), tmp_path / "train", progress=False)
    per = run.data.steps
    run.run()
    lines = metrics(tmp_path / "train")
    tb = EventAccumulator(str(tmp_path / "train" / "tensorboard"))
    tb.Reload()
    assert [e.step for e in tb.Scalars("test_acc")] == [per * m["epoch"] for m in lines]
    assert [e.value for e in tb.Scalars("test_acc")] == pytest.approx([m["test_acc"] for m in lines])
    acc = {e.step: e.value for e in tb.Scalars("step/train_acc")}
    assert sorted(acc) == list(range(2, 2 * per + 1, 2))  # every 2 steps
    assert [acc[per * m["epoch"]] for m in lines] == pytest.approx([m["train_acc"] for m in lines], rel=1e-5)
    assert "images/cell-normal" in tb.Tags()["images"] and (tmp_path / "train" / "genotype.txt").is_file()


def test_a_missing_tracker_package_or_an_unknown_tracker_is_one_error_before_the_folder(tmp_path, capsys,
                                                                                        monkeypatch):
    args = ["search", "--dataset", "fashion-mnist", "--data-dir", FMNIST, "--epochs", "1", "--cells", "3",
            "--channels", "4", "--set", "supernet.nodes=2", "--set", "data.subset=32", "--device", "cpu", "--quiet"]
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if mlflow-skinny were not installed
    assert main([*args, "--log", "csv,mlflow", "--out", str(tmp_path / "a")]) == 2
    assert "--log mlflow needs the mlflow package, which is not installed: pip install 'gradnas[mlflow]'" in \
        capsys.readouterr().err
    assert main([*args, "--log", "tensorbored", "--out", str(tmp_path / "a")]) == 2
    assert "unknown tracker 'tensorbored'" in capsys.readouterr().err
    assert main([*args, "--log-every", "-1", "--out", str(tmp_path / "a")]) == 2
    assert "tracking.every_steps must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
