"""The search loop on a small real-data slice: run folder, exact resume, config and NaN errors."""
import json

import pytest
import torch
import yaml

from gradnas.config import CONFIG_DIR, SearchConfig, load_yaml
from gradnas.errors import GradnasError
from gradnas.search.loop import Search

FMNIST = "/usr/share/datasets/fashion-mnist"


def tiny_config(**top):
    d = {"method": "milenas", "epochs": 2, "batch_size": 16, "seed": 3, "device": "cpu",
         "data": {"dataset": "fashion-mnist", "data_dir": FMNIST, "subset": 96, "eval_batches": 2},
         "supernet": {"cells": 3, "channels": 4, "nodes": 2}}
    for k, v in top.items():
        if isinstance(v, dict):
            d[k] = {**d.get(k, {}), **v}
        else:
            d[k] = v
    return SearchConfig.from_dict(d)


def _metrics(run_dir):
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        line.pop("epoch_time")
    return lines


@pytest.mark.parametrize("method,order", [("milenas", 1), ("darts", 1), ("single-level", 1), ("darts", 2),
                                          ("milenas", 2)])
def test_resume_continues_exactly(tmp_path, method, order):
    cfg = tiny_config(method=method, order=order)
    full = Search(cfg, tmp_path / "full", progress=False)
    full.run()
    stopped = Search(cfg, tmp_path / "resumed", progress=False)
    assert stopped.run(stop_after_epoch=1)["finished"] is False
    resumed = Search(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert resumed.epoch == 1
    summary = resumed.run()
    assert summary["finished"] and summary["genotype"] == full.model.genotype().to_string()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for key in a:  # weights, alphas and BN statistics, bit for bit
        assert torch.equal(a[key], b[key]), key
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "resumed")


def test_run_folder_contents(tmp_path):
    cfg = tiny_config(epochs=1)
    Search(cfg, tmp_path, progress=False).run()
    assert SearchConfig.from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text())) == cfg
    split = json.loads((tmp_path / "split.json").read_text())
    w, a = set(split["weight_idx"]), set(split["arch_idx"])
    assert len(w) == len(a) == 48 and not w & a
    (record,) = _metrics(tmp_path)
    for key in ("epoch", "lr", "train_loss", "train_acc", "valid_loss", "valid_acc", "genotype",
                "arch_batch_loss", "edge_weights"):
        assert key in record
    assert record["lr"] == 0.025
    weights = record["edge_weights"]["normal"]["2<-0"]
    assert list(weights) == list(cfg.supernet.ops) and abs(sum(weights.values()) - 1) < 1e-4
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["genotype"] == record["genotype"]
    assert json.loads((tmp_path / "genotype.json").read_text())["string"] == record["genotype"]


def test_resume_refuses_another_config_and_reuse_of_folder(tmp_path):
    Search(tiny_config(epochs=1), tmp_path, progress=False).run()
    with pytest.raises(GradnasError, match="another config .*lambda"):
        Search(tiny_config(epochs=1, lam=0.5), tmp_path, resume=True, progress=False)
    with pytest.raises(GradnasError, match="already holds a search"):
        Search(tiny_config(epochs=1), tmp_path, progress=False)


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    cfg = tiny_config(epochs=2, w_optim={"lr": 1e30, "grad_clip": 0.0, "momentum": 0.0})
    with pytest.raises(GradnasError, match=r"NaN/inf in epoch \d.*Lower the learning"):
        Search(cfg, tmp_path, progress=False).run()


def test_corrupt_checkpoint_is_refused(tmp_path):
    Search(tiny_config(epochs=1), tmp_path, progress=False).run()
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(GradnasError, match="corrupt or not a gradnas checkpoint"):
        Search(tiny_config(epochs=1), tmp_path, resume=True, progress=False)


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
def test_shipped_configs_are_valid(name):
    cfg = SearchConfig.from_dict(load_yaml(name))
    assert cfg.space == "darts"


def test_paper_defaults():
    cfg = SearchConfig()
    assert (cfg.epochs, cfg.batch_size, cfg.supernet.cells, cfg.supernet.channels) == (50, 64, 8, 16)
    assert (cfg.w_optim.lr, cfg.w_optim.lr_min, cfg.w_optim.momentum, cfg.w_optim.weight_decay,
            cfg.w_optim.grad_clip) == (0.025, 0.001, 0.9, 3e-4, 5.0)
    assert (cfg.arch_optim.lr, cfg.arch_optim.betas) == (3e-4, (0.5, 0.999))


@pytest.mark.parametrize("d,message", [
    ({"lambda": -1}, "lambda must be"),
    ({"epochs": 0}, "epochs must be"),
    ({"batch_size": 0}, "batch_size must be"),
    ({"w_optim": {"lrr": 0.1}}, "unknown key 'w_optim.lrr'"),
    ({"optimiser": {}}, "unknown key 'optimiser'"),
    ({"epochs": "ten"}, "epochs must be an integer"),
    ({"data": {"split_fraction": 1.5}}, "split_fraction"),
    ({"xi": 0.1}, "set order: 2"),
    ({"order": 2, "fd_scale": 0}, "fd_scale must be > 0"),
    ({"order": 2, "xi": -1}, "xi must be >= 0"),
])
def test_config_errors(d, message):
    with pytest.raises(GradnasError, match=message):
        SearchConfig.from_dict(d)
