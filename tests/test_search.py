"""The search loop on a small real-data slice: run folder, exact resume, config and NaN errors."""
import json

import pytest
import torch
import yaml

from gradnas.config import CONFIG_DIR, SearchConfig, load_yaml
from gradnas.errors import GradnasError
from gradnas.benchmark.nb201 import lookup
from gradnas.checkpoint import load_checkpoint, save_checkpoint
from gradnas.search.loop import Search, build_optimizers
from gradnas.space import build_supernet
from gradnas.space.genotype import load_genotype
from gradnas.space.nb201 import NB201SpaceConfig

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
    assert stopped.run(stop_after=1)["finished"] is False
    resumed = Search(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert resumed.epoch == 1
    summary = resumed.run()
    assert summary["finished"] and summary["genotype"] == full.model.genotype().to_string()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for key in a:  # weights, alphas and BN statistics, bit for bit
        assert torch.equal(a[key], b[key]), key
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "resumed")


def test_gdas_nb201_search_resumes_exactly_and_records_the_benchmark(tmp_path):
    """GDAS on NB-201: the noise stream restarts from (seed, epoch), so a resumed run samples what an
    uninterrupted one did; tau follows its schedule; every epoch and the summary carry the benchmark figures."""
    cfg = tiny_config(method="darts", relax="gumbel", space="nb201", nb201={"cells_per_stage": 1, "channels": 4},
                      gumbel={"tau_max": 4.0, "tau_min": 0.5})
    full = Search(cfg, tmp_path / "full", progress=False)
    summary = full.run()
    Search(cfg, tmp_path / "resumed", progress=False).run(stop_after=1)
    resumed = Search(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert resumed.run() == {**summary, "run_dir": str(tmp_path / "resumed")}
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    lines = _metrics(tmp_path / "full")
    assert lines == _metrics(tmp_path / "resumed")
    assert [line["tau"] for line in lines] == [4.0, 0.5]
    for line in lines:
        assert line["nb201"] == lookup(line["genotype"])
        assert set(line["nb201"]) == {"cifar10", "cifar100", "imagenet16-120"}
        assert list(line["edge_weights"]["cell"]) == ["1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"]
    saved = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert saved["nb201"] == lookup(saved["genotype"]) == lines[-1]["nb201"]
    assert load_genotype(tmp_path / "full" / "genotype.json").to_string() == saved["genotype"]


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
    assert "tau" not in record and "nb201" not in record  # softmax on DARTS: no schedule, no benchmark
    assert record["lr"] == 0.025
    weights = record["edge_weights"]["normal"]["2<-0"]
    assert list(weights) == list(cfg.supernet.ops) and abs(sum(weights.values()) - 1) < 1e-4
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["genotype"] == record["genotype"]
    assert json.loads((tmp_path / "genotype.json").read_text())["string"] == record["genotype"]


def test_resume_refuses_another_config_and_reuse_of_folder(tmp_path):
    Search(tiny_config(epochs=1), tmp_path, progress=False).run()
    # a checkpoint from before a config key existed (here the gumbel section) resumes: the key is at its default
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    del state["config"]["gumbel"], state["format"]
    save_checkpoint(state, tmp_path / "checkpoint.pt")
    assert Search(tiny_config(epochs=1), tmp_path, resume=True, progress=False).epoch == 1
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
    assert cfg.space == ("nb201" if name.startswith("nb201") else "darts")


def test_nb201_paper_configs():
    cfg = SearchConfig.from_dict(load_yaml("nb201-single-level-sigmoid"))  # single-level paper, 4.2.1
    assert (cfg.method, cfg.relax, cfg.epochs, cfg.batch_size) == ("single-level", "sigmoid", 50, 64)
    assert (cfg.w_optim.lr, cfg.w_optim.momentum, cfg.w_optim.weight_decay) == (0.005, 0.9, 3e-4)
    assert (cfg.arch_optim.lr, cfg.arch_optim.betas, cfg.arch_optim.weight_decay) == (3e-4, (0.5, 0.999), 0.0)
    assert (cfg.nb201.cells_per_stage, cfg.nb201.channels) == (5, 16)
    model = build_supernet(cfg.space, cfg.space_config, cfg.relax, in_channels=3, num_classes=10)
    assert torch.allclose(torch.sigmoid(model.alpha), torch.full((6, 5), 0.2))  # alpha = -ln(4)
    cfg = SearchConfig.from_dict(load_yaml("nb201-gdas"))
    assert (cfg.method, cfg.order, cfg.relax, cfg.gumbel.tau_max, cfg.gumbel.tau_min) == ("darts", 1, "gumbel", 10, 0.1)
    w_optim, a_optim, _ = build_optimizers(cfg, build_supernet("nb201", NB201SpaceConfig(cells_per_stage=1, channels=2),
                                                                "gumbel", in_channels=3, num_classes=10))
    assert w_optim.defaults["nesterov"] and w_optim.defaults["weight_decay"] == 5e-4
    assert a_optim.defaults["weight_decay"] == 1e-3


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


@pytest.mark.parametrize("text,value", [("1e-3", 1e-3), ("1E3", 1e3), (".5", 0.5), ("5.", 5.0), ("-1e-3", -1e-3),
                                        ("+.5", 0.5), ("-.5", -0.5), ("1.5e3", 1500.0), ("1.0e-3", 1e-3)])
def test_every_float_spelling_is_a_float(text, value):
    """YAML 1.1 (PyYAML) reads 1e-3, 1E3 and -.5 as strings; the config loader and --set read them as Python does."""
    from gradnas.config import apply_override, parse_yaml
    parsed = parse_yaml(f"x: {text}\ny: [{text}]\n")
    assert parsed == {"x": value, "y": [value]} and type(parsed["x"]) is float
    d = {}
    apply_override(d, f"w_optim.lr={text}")
    assert d == {"w_optim": {"lr": value}}
    assert parse_yaml("a: 1e3x\nb: '1e-3'\nc: 10\nd: e3\n") == {"a": "1e3x", "b": "1e-3", "c": 10, "d": "e3"}


def test_float_spellings_in_search_configs(tmp_path):
    from gradnas.overrides import resolve_search_config
    p = tmp_path / "c.yaml"
    p.write_text("method: milenas\nw_optim:\n  lr: 1e-2\n  lr_min: 1E-4\n  weight_decay: 3e-4\n"
                 "arch_optim: {lr: 3e-4, betas: [.5, 0.999]}\nseed: 1e3\n")
    cfg = SearchConfig.from_dict(load_yaml(str(p)))
    assert (cfg.w_optim.lr, cfg.w_optim.lr_min, cfg.arch_optim.lr, cfg.arch_optim.betas) == (0.01, 1e-4, 3e-4,
                                                                                              (0.5, 0.999))
    assert cfg.seed == 1000 and type(cfg.seed) is int  # an integral float is an int where an int is expected
    cfg = resolve_search_config(None, {"method": "milenas"}, ["w_optim.lr=1e-3", "lambda=1E1", "epochs=2e0"])
    assert (cfg.w_optim.lr, cfg.lam, cfg.epochs) == (1e-3, 10.0, 2) and type(cfg.epochs) is int
    # strings where a number is expected (a config built in Python): read as float() reads them
    cfg = SearchConfig.from_dict({"w_optim": {"lr": "1e-3"}, "seed": "1e3", "arch_optim": {"lr": " .5 "}})
    assert (cfg.w_optim.lr, cfg.seed, cfg.arch_optim.lr) == (1e-3, 1000, 0.5)


@pytest.mark.parametrize("d,message", [
    ({"seed": 1.5}, "seed must be an integer, got 1.5"),
    ({"epochs": "1.5e0"}, "epochs must be an integer, got '1.5e0'"),
    ({"w_optim": {"lr": "fast"}}, "w_optim.lr must be a number, got 'fast'"),
    ({"w_optim": {"lr": "nan"}}, "w_optim.lr must be a number, got NaN"),
    ({"w_optim": {"lr": "inf"}}, "w_optim.lr must be a finite number > 0, got inf"),
    ({"w_optim": {"lr": "-1e-3"}}, "w_optim.lr must be a finite number > 0, got -0.001"),
    ({"w_optim": {"grad_clip": float("inf")}}, "w_optim.grad_clip must be a finite number >= 0"),
    ({"arch_optim": {"lr": "inf"}}, "arch_optim.lr must be a finite number >= 0, got inf"),
    ({"pvll": {"arch_lr": "inf"}}, "pvll.arch_lr and pvll.estimator_lr must be finite numbers > 0"),
    ({"seed": -1}, r"seed must be an integer in \[0, 4294967295\]"),
    ({"seed": "1e999999999"}, "seed is too large for a setting"),  # int() of it would fill the memory
])
def test_number_errors(d, message):
    with pytest.raises(GradnasError, match=message):
        SearchConfig.from_dict(d)


def test_alphas_out_of_range_warn_once_and_are_recorded(tmp_path, capsys):
    """An architecture lr of 1e6 saturates the alphas in a step: one warning, and alpha_max_abs in the metrics of
    every epoch beyond |alpha| = 1e3; kept across a resume (no second warning). A sane search records nothing."""
    cfg = tiny_config(epochs=3, arch_optim={"lr": 1e6})
    Search(cfg, tmp_path / "wild", progress=False).run(stop_after=1)
    Search(cfg, tmp_path / "wild", resume=True, progress=False).run()
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "architecture parameters reach" in line]
    assert len(warnings) == 1, err
    assert warnings[0].startswith("gradnas: warning: after epoch 1, the architecture parameters reach |alpha| = ")
    assert "beyond 1000" in warnings[0] and "lower arch_optim.lr" in warnings[0]
    lines = _metrics(tmp_path / "wild")
    assert all(line["alpha_max_abs"] > 1e3 for line in lines)
    assert [line.get("alpha_range_warning") for line in lines] == [True, None, None]
    Search(tiny_config(epochs=1), tmp_path / "sane", progress=False).run()
    assert not [k for line in _metrics(tmp_path / "sane") for k in line if k.startswith("alpha_")]
    assert "architecture parameters reach" not in capsys.readouterr().err
