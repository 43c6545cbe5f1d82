"""A user's plug-in module (tests/plugins/my_gradnas_plugin.py: an op, a dataset, a method with a config section
of its own, a callback with a config section and checkpointed state) end to end: through the Python API
(Search / Training), through `gradnas --plugin ... search|train`, exact resume, a stop the callback asks for,
and the refusals that name the plug-in. Every registration is removed again after this module."""
import importlib
import json
import math
import sys
from pathlib import Path

import pytest
import torch
import yaml

from gradnas.callbacks import CALLBACKS
from gradnas.cli import main
from gradnas.config import SearchConfig
from gradnas.data.sources import DATASETS
from gradnas.registry import SECTIONS
from gradnas.search.algorithm import METHODS
from gradnas.search.loop import Search
from gradnas.space.genotype import load_genotype
from gradnas.space.ops import CONV_OPS, OPS
from gradnas.train.config import TrainConfig
from gradnas.train.loop import Training

PLUGIN_DIR = Path(__file__).parent / "plugins"
PLUGIN_FILE = PLUGIN_DIR / "my_gradnas_plugin.py"
MODULE = "my_gradnas_plugin"
TIME_KEYS = ("epoch_time", "probe_time", "round_time")
OPS_USED = ["skip_connect", "shift_conv_3x3"]
GENO = ("normal=|shift_conv_3x3~0|skip_connect~1|+|shift_conv_3x3~1|max_pool_3x3~2|;"
        "reduce=|shift_conv_3x3~0|shift_conv_3x3~1|+|skip_connect~0|shift_conv_3x3~2|")


def _registries():
    return {"ops": set(OPS), "datasets": set(DATASETS), "methods": set(METHODS), "sections": set(SECTIONS),
            "callbacks": set(CALLBACKS)}


@pytest.fixture(scope="module")
def plug():
    before = _registries()
    assert MODULE not in sys.modules
    sys.path.insert(0, str(PLUGIN_DIR))
    try:
        module = importlib.import_module(MODULE)
        yield module
    finally:
        mod = sys.modules.pop(MODULE, None)
        if mod is not None:
            mod.unregister()
        sys.path.remove(str(PLUGIN_DIR))
        assert _registries() == before, "the plug-in left registrations behind"


def _cfg(**top) -> dict:
    d = {"epochs": 2, "batch_size": 16, "seed": 3, "device": "cpu", "threads": 1, "method": "lazy-milenas",
         "lambda": 0.5, "lazy_milenas": {"every": 3}, "arch_optim": {"lr": 0.05},
         "data": {"dataset": "plugin-blobs", "subset": 64, "eval_batches": 2, "crop_padding": 0},
         "supernet": {"cells": 3, "channels": 4, "nodes": 2, "ops": OPS_USED, "channels_last": False}}
    for k, v in top.items():
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) else v
    return d


def _metrics(run_dir) -> list:
    lines = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        for key in TIME_KEYS:
            line.pop(key, None)
    return lines


def _check_counter_lines(plug, lines, steps_per_epoch):
    for i, line in enumerate(lines, 1):
        assert line["plugin_epoch_steps"] == steps_per_epoch
        assert line["plugin_steps"] == i * steps_per_epoch
        ent = plug.edge_entropy(line["edge_weights"])
        assert line["edge_entropy"] == pytest.approx(ent, rel=1e-12)
        assert 0 < line["edge_entropy"] <= math.log(len(OPS_USED)) + 1e-6


def test_the_plugin_registers_every_component(plug):
    assert "shift_conv_3x3" in OPS and "shift_conv_3x3" in CONV_OPS
    assert "plugin-blobs" in DATASETS
    assert METHODS["lazy-milenas"] is plug.LazyMilenas
    assert SECTIONS["lazy_milenas"][0] is plug.LazyConfig and SECTIONS["step_counter"][0] is plug.StepCounterConfig
    assert "step_counter" in CALLBACKS
    plug.register()  # a second time: a no-op
    assert METHODS["lazy-milenas"] is plug.LazyMilenas
    cfg = SearchConfig.from_dict(_cfg())
    assert cfg.section("lazy_milenas") == plug.LazyConfig(every=3)
    assert cfg.to_dict()["lazy_milenas"] == {"every": 3}


def test_api_search_with_the_plugin_components(plug, tmp_path):
    cfg = SearchConfig.from_dict(_cfg())
    counter = plug.StepCounter()
    search = Search(cfg, tmp_path / "run", callbacks=[counter], progress=False)
    alphas0 = [a.detach().clone() for a in search.model.arch_parameters()]
    summary = search.run()
    steps = len(search.algorithm.batches)
    assert steps == 2  # 64 images, half train the weights, batches of 16
    method = search.algorithm.method
    assert isinstance(method, plug.LazyMilenas) and method.config.every == 3
    assert method.calls == 2 * steps and method.alpha_steps == math.ceil(2 * steps / 3)
    assert any(not torch.equal(a, b) for a, b in zip(alphas0, search.model.arch_parameters()))
    assert summary["finished"] and summary["epochs_done"] == 2 and summary["plugin_steps"] == 2 * steps
    lines = _metrics(tmp_path / "run")
    assert len(lines) == 2 and all(line["method"] == "lazy-milenas" for line in lines)
    assert all(math.isfinite(line["train_loss"]) and math.isfinite(line["arch_batch_loss"]) for line in lines)
    _check_counter_lines(plug, lines, steps)
    # every edge weighs exactly the configured ops, the plug-in's among them
    assert all(set(ops) == set(OPS_USED) for kind in lines[-1]["edge_weights"].values() for ops in kind.values())
    geno = load_genotype(tmp_path / "run" / "genotype.json")
    assert geno.to_string() == summary["genotype"] == lines[-1]["genotype"]
    chosen = [op for op, _ in geno.normal + geno.reduce]
    assert set(chosen) <= set(OPS_USED)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["method"] == "lazy-milenas" and saved["lazy_milenas"] == {"every": 3}
    assert saved["supernet"]["ops"] == OPS_USED and saved["data"]["dataset"] == "plugin-blobs"
    assert saved["callbacks"] == []  # passed as an instance, not by name
    assert SearchConfig.from_dict(saved) == cfg


def test_a_search_whose_only_op_is_the_plugin_op_derives_it(plug, tmp_path):
    cfg = SearchConfig.from_dict(_cfg(epochs=1, supernet={"ops": ["none", "shift_conv_3x3"]}))
    summary = Search(cfg, tmp_path / "run", progress=False).run()
    geno = load_genotype(tmp_path / "run" / "genotype.json")
    assert geno.to_string() == summary["genotype"]
    assert {op for op, _ in geno.normal + geno.reduce} == {"shift_conv_3x3"}
    line = _metrics(tmp_path / "run")[-1]
    assert (line["normal_convs"], line["reduce_convs"]) == (4, 4)  # 2 nodes x 2 inputs, counted as convs (conv=True)
    assert line["non_learnable_share"] == 0.0


def _state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_exact_resume_restores_the_method_and_the_callback(plug, tmp_path):
    cfg = SearchConfig.from_dict(_cfg(epochs=3, callbacks=["step_counter"]))  # the callback by name
    whole = Search(cfg, tmp_path / "whole", progress=False)
    summary_whole = whole.run()

    first = Search(cfg, tmp_path / "split", progress=False)
    first.run(stop_after=1)
    assert first.done == 1 and not (tmp_path / "split" / "summary.json").exists()
    steps = len(first.algorithm.batches)
    again = Search(cfg, tmp_path / "split", resume=True, progress=False)
    counter = again.callback(plug.StepCounter)
    assert counter is not None and counter.resumed_from == {"steps": steps} and counter.steps == steps
    assert again.algorithm.method.calls == steps  # the method's own state came back too
    summary_split = again.run()

    a, b = _state(whole.model), _state(again.model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert summary_split == {**summary_whole, "run_dir": str(tmp_path / "split")}
    assert _metrics(tmp_path / "split") == _metrics(tmp_path / "whole")
    _check_counter_lines(plug, _metrics(tmp_path / "split"), steps)
    assert again.algorithm.method.calls == whole.algorithm.method.calls == 3 * steps
    assert yaml.safe_load((tmp_path / "split" / "config.yaml").read_text())["callbacks"] == ["step_counter"]


def test_the_callback_stops_the_search(plug, tmp_path):
    cfg = SearchConfig.from_dict(_cfg(epochs=3))
    summary = Search(cfg, tmp_path / "run", callbacks=[plug.StepCounter(stop_at_epoch=1)], progress=False).run()
    assert summary["finished"] and summary["epochs_done"] == 1
    assert summary["stop"]["rule"] == "plugin_stop_at_epoch" and summary["stop"]["value"] == 1
    assert summary["stop"]["epoch"] == 1 and "epoch 1 reached" in summary["stop"]["reason"]
    lines = _metrics(tmp_path / "run")
    assert len(lines) == 1 and lines[0]["stop"] == summary["stop"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["stop"] == summary["stop"]


def _cli_search(out, *extra):
    return ["search", "--method", "lazy-milenas", "--lambda", "0.5", "--set", "lazy_milenas.every=2",
            "--dataset", "plugin-blobs", "--set", "data.subset=64", "--set", "data.eval_batches=2",
            "--set", "data.crop_padding=0", "--epochs", "1", "--batch-size", "16", "--cells", "3", "--channels", "4",
            "--set", "supernet.nodes=2", "--set", "supernet.ops=[skip_connect,shift_conv_3x3]",
            "--set", "supernet.channels_last=false", "--threads", "1", "--device", "cpu", "--seed", "3",
            "--out", str(out), "--quiet", *extra]


def test_cli_search_with_plugin_file_before_the_command(plug, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--plugin", str(PLUGIN_FILE), *_cli_search(out, "--callback", "step_counter")]) == 0
    assert "genotype:" in capsys.readouterr().out
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["callbacks"] == ["step_counter"] and saved["lazy_milenas"] == {"every": 2}
    assert saved["method"] == "lazy-milenas" and saved["lambda"] == 0.5
    lines = _metrics(out)
    _check_counter_lines(plug, lines, 2)
    assert set(op for op, _ in load_genotype(out / "genotype.json").normal) <= set(OPS_USED)
    assert json.loads((out / "summary.json").read_text())["plugin_steps"] == 2


def test_cli_search_with_plugin_module_after_the_command_stops_by_section(plug, tmp_path, capsys):
    out = tmp_path / "run"
    args = _cli_search(out, "--plugin", MODULE, "--callback", "step_counter", "--set", "step_counter.stop_at_epoch=1")
    args[args.index("--epochs") + 1] = "3"
    assert main(args) == 0
    assert "stopped after epoch 1 of 3" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["epochs_done"] == 1 and summary["stop"]["rule"] == "plugin_stop_at_epoch"
    assert yaml.safe_load((out / "config.yaml").read_text())["step_counter"] == {"stop_at_epoch": 1}


def _train_cfg(**top):
    d = {"epochs": 1, "batch_size": 32, "seed": 1, "device": "cpu", "threads": 1,
         "data": {"dataset": "plugin-blobs", "crop_padding": 0, "cutout": 0},
         "network": {"cells": 3, "channels": 4, "auxiliary_weight": 0.0, "drop_path": 0.0}}
    d.update(top)
    return d


def test_api_training_of_a_plugin_op_genotype_on_the_plugin_dataset(plug, tmp_path):
    geno = load_genotype(GENO)
    assert "shift_conv_3x3" in [op for op, _ in geno.normal]
    counter = plug.StepCounter()
    training = Training(TrainConfig.from_dict(_train_cfg(epochs=2)), geno, tmp_path / "run", callbacks=[counter],
                        progress=False)
    assert sum(isinstance(m, plug.ShiftConv) for m in training.trainer.model.modules()) == 2 + 2 * 3  # cell 0 normal (2), cells 1, 2 reduce (3 each)
    summary = training.run()
    assert math.isfinite(summary["test_loss"]) and 0 <= summary["test_acc"] <= 100
    lines = _metrics(tmp_path / "run")
    steps = 128 // 32
    assert [line["plugin_steps"] for line in lines] == [steps, 2 * steps]
    assert all(line["plugin_epoch_steps"] == steps for line in lines)
    assert load_genotype(tmp_path / "run" / "genotype.json") == geno


def test_cli_training_with_the_plugin(plug, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--plugin", str(PLUGIN_FILE), "--genotype", GENO, "--setting", "quick", "--dataset",
               "plugin-blobs", "--epochs", "1", "--batch-size", "32", "--cells", "3", "--channels", "4",
               "--set", "network.auxiliary_weight=0", "--set", "channels_last=false", "--threads", "1",
               "--device", "cpu", "--callback", "step_counter", "--out", str(out), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert "test acc:" in capsys.readouterr().out
    assert yaml.safe_load((out / "config.yaml").read_text())["callbacks"] == ["step_counter"]
    assert [line["plugin_steps"] for line in _metrics(out)] == [4]
    assert load_genotype(out / "genotype.json") == load_genotype(GENO)


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("gradnas: error:"), err
    return err


def test_unknown_callback_is_refused_naming_plugin(plug, tmp_path, capsys):
    assert main(_cli_search(tmp_path / "s", "--callback", "no_such_callback")) == 2
    err = _error(capsys)
    assert "unknown callback 'no_such_callback'" in err and "--plugin" in err and "step_counter" in err
    assert not (tmp_path / "s").exists()
    assert main(["train", "--genotype", GENO, "--dataset", "plugin-blobs", "--callback", "no_such_callback",
                 "--out", str(tmp_path / "t"), "--quiet"]) == 2
    err = _error(capsys)
    assert "unknown callback 'no_such_callback'" in err and "--plugin" in err


def test_the_plugin_section_with_another_method_is_refused(plug, tmp_path, capsys):
    args = _cli_search(tmp_path / "s")
    args[args.index("--method") + 1] = "darts"
    args.remove("--lambda"), args.remove("0.5")
    assert main(args) == 2
    err = _error(capsys)
    assert "lazy_milenas" in err and "method lazy-milenas" in err and "darts" in err
    assert not (tmp_path / "s").exists()
    with pytest.raises(Exception, match="method lazy-milenas"):
        Search(SearchConfig.from_dict(_cfg(method="darts", **{"lambda": 1.0})), tmp_path / "a", progress=False)


def test_plugin_method_orders_are_enforced(plug, tmp_path, capsys):
    assert main(_cli_search(tmp_path / "s", "--order", "2")) == 2
    assert "supports order 1" in _error(capsys)


def test_a_fresh_import_through_plugin_registers_everything(plug, tmp_path, capsys):
    """--plugin FILE imports the module itself when nothing imported it yet (here: after unregistering)."""
    plug.unregister()
    sys.modules.pop(MODULE)
    try:
        assert "lazy-milenas" not in METHODS and "lazy_milenas" not in SECTIONS
        args = _cli_search(tmp_path / "s")
        args[args.index("--method") + 1] = "darts"
        args.remove("--lambda"), args.remove("0.5")
        assert main(["--plugin", str(PLUGIN_FILE), *args]) == 2  # refused by the plug-in's own section
        assert "method lazy-milenas" in _error(capsys)
        fresh = sys.modules[MODULE]
        assert fresh is not plug and Path(fresh.__file__).resolve() == PLUGIN_FILE.resolve()
        assert METHODS["lazy-milenas"] is fresh.LazyMilenas and "shift_conv_3x3" in OPS
        # without the plug-in, its section is an unknown key
        fresh.unregister()
        assert main(_cli_search(tmp_path / "s2")) == 2
        assert "unknown" in _error(capsys)
    finally:
        sys.modules.get(MODULE, plug).unregister()
        sys.modules[MODULE] = plug
        plug.register()
    assert METHODS["lazy-milenas"] is plug.LazyMilenas
