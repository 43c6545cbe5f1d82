"""The gradnas command end to end: search round trip, resume, bench, and one-line errors."""
import json
import os
import subprocess
import sys

import pytest

from gradnas.benchmark.nb201 import lookup
from gradnas.cli import main
from gradnas.space.genotype import load_genotype
from gradnas.space.ops import DARTS_OPS

FMNIST = "/usr/share/datasets/fashion-mnist"
TINY = ["--dataset", "fashion-mnist", "--data-dir", FMNIST, "--epochs", "1", "--batch-size", "16", "--cells", "3",
        "--channels", "4", "--set", "supernet.nodes=2", "--set", "data.subset=64", "--set", "data.eval_batches=1",
        "--quiet", "--device", "cpu"]


def test_search_round_trip_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", *TINY, "--method", "darts", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"run folder: {out}" in printed
    geno = load_genotype(out / "genotype.json").validate(DARTS_OPS, 2)
    assert f"genotype: {geno.to_string()}" in printed
    # the finished run resumes to the same answer, with no epoch left to do
    assert main(["search", "--resume", str(out), "--quiet"]) == 0
    assert f"genotype: {geno.to_string()}" in capsys.readouterr().out
    # a resume that changes the search is refused
    assert main(["search", "--resume", str(out), "--epochs", "3"]) == 2
    assert "searched with epochs=1, not 3" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["darts", "milenas"])
def test_second_order_search_from_the_command_line(tmp_path, capsys, method):
    out = tmp_path / "run"
    assert main(["search", *TINY, "--method", method, "--order", "2", "--xi", "0.01", "--out", str(out)]) == 0
    import yaml
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["method"], saved["order"], saved["xi"], saved["fd_scale"]) == (method, 2, 0.01, None)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and metrics[0]["arch_batch_loss"] > 0
    assert main(["search", *TINY, "--method", "single-level", "--order", "2", "--out", str(tmp_path / "x")]) == 2
    assert "supports order 1, not 2" in capsys.readouterr().err


def test_flags_and_set_reach_the_config(tmp_path):
    out = tmp_path / "run"
    assert main(["search", *TINY, "--method", "milenas", "--relax", "sigmoid", "--lambda", "0.25",
                 "--seed", "7", "--set", "arch_optim.lr=0.001", "--out", str(out)]) == 0
    import yaml
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["method"], saved["relax"], saved["lambda"], saved["seed"]) == ("milenas", "sigmoid", 0.25, 7)
    assert saved["arch_optim"]["lr"] == 0.001 and saved["supernet"]["cells"] == 3


def _cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-m", "gradnas", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


@pytest.mark.parametrize("args,message", [
    (["--method", "enas"], "unknown method 'enas'; valid methods: darts, milenas, pvll, single-level"),
    (["--space", "nasnet"], "unknown space 'nasnet'; valid spaces: darts, nb201"),
    (["--relax", "tanh"], "unknown relaxation 'tanh'; valid: gumbel, sigmoid, softmax"),
    (["--space", "nb201", "--set", "supernet.cells=3"],
     "supernet.cells configures the darts space, but this search uses space 'nb201'"),
    (["--set", "gumbel.tau_max=5"], "gumbel.tau_max configures the gumbel relaxation, but this search uses relax"),
    (["--lambda", "-1"], "lambda must be a finite number >= 0"),
    (["--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["--dataset", "cifar10", "--data-dir", "/nonexistent/cifar"], "/nonexistent/cifar"),
    (["--set", "w_optim.lrr=1"], "unknown key 'w_optim.lrr'"),
    (["--config", "no-such-config"], "config 'no-such-config' not found"),
    (["--resume", "/nonexistent/run"], "is not a gradnas run folder"),
])
def test_errors_are_one_clear_line(tmp_path, args, message):
    r = _cli("search", *args, "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_malformed_yaml_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: [milenas\n")
    r = _cli("search", "--config", str(bad), cwd=tmp_path)
    assert r.returncode == 2 and "not valid YAML" in r.stderr and "Traceback" not in r.stderr


def test_bench_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    r = _cli("bench", "--batch", "2", "--cells", "3", "--channels", "4", "--steps", "1", "--warmup", "0",
             "--threads", "1", "--methods", "forward-backward,milenas,darts:2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    rows = {(row["method"], row["order"]): row for row in result["results"]}
    assert set(rows) == {("forward-backward", 1), ("milenas", 1), ("darts", 2)}
    for row in rows.values():
        assert row["sec_per_step"] > 0 and row["images_per_sec"] > 0 and row["peak_memory_gb"] > 0.05
        assert row["flops_per_step"] > 0 and "others_cores" in row["load"] and "load_warning" in row
    # second order costs more FLOPs than first, first more than the plain pass
    assert rows[("darts", 2)]["flops_per_step"] > rows[("milenas", 1)]["flops_per_step"] > \
        rows[("forward-backward", 1)]["flops_per_step"]
    assert {x["ratio"] for x in result["points"][0]["ratios"]} == {
        "darts:2 / milenas", "milenas / forward-backward", "darts:2 / forward-backward"}
    assert "darts:2 / milenas" in r.stdout and "MiLeNAS paper: >= 3x" in r.stdout
    assert result["settings"]["batch"] == 2 and result["settings"]["peak_gflops_per_sec"] > 0
    r = _cli("bench", "--methods", "enas")
    assert r.returncode == 2 and "unknown method 'enas'" in r.stderr


def test_genotype_command_checks_the_space(tmp_path, capsys):
    text = ("normal=|sep_conv_3x3~0|skip_connect~1|+|sep_conv_5x5~1|dil_conv_3x3~2|;"
            "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|skip_connect~0|avg_pool_3x3~2|")
    out = tmp_path / "g.json"
    assert main(["genotype", text, "--set", "supernet.nodes=2", "--json", str(out)]) == 0
    assert capsys.readouterr().out.strip() == text
    assert load_genotype(out).to_string() == text
    # the default space has 4 nodes: the 2-node genotype does not fit
    assert main(["genotype", str(out)]) == 2
    assert "set the space's node count to 2" in capsys.readouterr().err
    assert main(["genotype", text.replace("dil_conv_3x3", "conv_7x7"), "--set", "supernet.nodes=2"]) == 2
    assert "op 'conv_7x7' is not in the space" in capsys.readouterr().err


def test_nb201_search_round_trip(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["search", "--space", "nb201", "--method", "single-level", "--relax", "sigmoid", "--cells", "1",
            "--channels", "4", "--dataset", "fashion-mnist", "--data-dir", FMNIST, "--epochs", "1", "--batch-size",
            "16", "--set", "data.subset=64", "--set", "data.eval_batches=1", "--quiet", "--device", "cpu",
            "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    geno = load_genotype(out / "genotype.json")
    assert geno.space == "nb201" and f"genotype: {geno.to_string()}" in printed
    figures = lookup(geno)
    assert f"nb201 test acc: cifar10 {figures['cifar10']:.2f}  cifar100 {figures['cifar100']:.2f}" in printed
    import yaml
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["space"] == "nb201" and saved["nb201"]["cells_per_stage"] == 1 and saved["nb201"]["channels"] == 4
    assert saved["supernet"]["cells"] == 5  # --cells went to the searched space, not the DARTS section
    # the genotype command reads NB-201 strings and files; without --space/--config the space is the genotype's
    assert main(["genotype", str(out)]) == 0
    assert capsys.readouterr().out.strip() == geno.to_string()
    assert main(["genotype", geno.to_string(), "--space", "darts"]) == 2
    assert "cell of the 'nb201' space, not of 'darts'; use --space nb201" in capsys.readouterr().err


def test_bench_covers_nb201_and_gumbel(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--space", "nb201", "--relax", "gumbel", "--batch", "2", "--cells", "1", "--channels", "4",
                 "--steps", "1", "--warmup", "0", "--methods", "darts", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["settings"]["space"] == "nb201" and result["settings"]["relax"] == "gumbel"
    assert result["settings"]["cells"] == 1
    (row,) = result["results"]
    assert row["method"] == "darts" and row["sec_per_step"] > 0
    capsys.readouterr()
    assert main(["bench", "--space", "nasnet"]) == 2
    assert "unknown space 'nasnet'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ train

TRAIN_GENO = ("normal=|sep_conv_3x3~0|skip_connect~1|+|dil_conv_3x3~1|max_pool_3x3~2|;"
              "reduce=|max_pool_3x3~0|skip_connect~1|+|sep_conv_5x5~0|avg_pool_3x3~2|")


@pytest.fixture
def tiny_train_args(tmp_path, monkeypatch):
    from test_train import make_folder
    monkeypatch.setenv("GRADNAS_CACHE", str(tmp_path / "cache"))
    data = make_folder(tmp_path / "data")
    return ["--dataset", "imagefolder", "--data-dir", str(data), "--epochs", "1", "--batch-size", "8", "--cells", "3",
            "--channels", "4", "--device", "cpu", "--quiet", "--set", "data.cutout=0"]


def test_train_round_trip_and_resume(tmp_path, capsys, tiny_train_args):
    out = tmp_path / "run"
    assert main(["train", "--genotype", TRAIN_GENO, *tiny_train_args, "--out", str(out), "--lr", "0.05"]) == 0
    captured = capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    assert f"test acc: {summary['test_acc']:.2f}%" in captured.out and f"run folder: {out}" in captured.out
    assert f"network: {summary['params_m']:.3f}M parameters (auxiliary head excluded)" in captured.err
    assert "multiply-adds per 3x12x12 image" in captured.err
    import yaml
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["optim"]["lr"], saved["network"]["cells"], saved["data"]["cutout"]) == (0.05, 3, 0)
    assert saved["epochs"] == 1 and saved["channels_last"] is True  # the rest comes from the quick setting
    # a finished run resumes to the same report; a resume that changes the setting is refused
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert f"test acc: {summary['test_acc']:.2f}%" in capsys.readouterr().out
    assert main(["train", "--resume", str(out), "--epochs", "3"]) == 2
    assert "was trained with epochs=1, not 3" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    ([], "give the architecture to train: --genotype"),
    (["--genotype", "normal=|sep_conv_3x3~0|"], "expected 'normal=|...|;reduce=|...|'"),
    (["--genotype", TRAIN_GENO, "--setting", "nope"], "setting 'nope' not found"),
    (["--genotype", TRAIN_GENO, "--size", "2,0"], "does not go with a genotype string"),
    (["--genotype", TRAIN_GENO, "--set", "optim.gamma=0.9"], "optim.gamma is the exponential schedule's factor"),
    (["--genotype", TRAIN_GENO, "--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["--genotype", TRAIN_GENO, "--batch-size", "0"], "batch_size must be >= 1"),
    (["--resume", "/nonexistent/run"], "is not a gradnas training run folder"),
])
def test_train_errors_are_one_clear_line(tmp_path, capsys, args, message):
    assert main(["train", *args, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradnas: error: ") and message in err and err.count("\n") == 1


def test_bench_train_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--train", "--setting", "quick", "--batch", "4", "--cells", "3", "--steps", "1",
                 "--warmup", "0", "--threads", "1", "--precision", "bf16", "--channels-last", "on",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    (row,) = result["results"]
    assert (row["variant"], row["precision"], row["channels_last"]) == ("bf16+channels_last", "bf16", True)
    assert row["sec_per_step"] > 0 and row["images_per_sec"] > 0
    assert result["settings"]["input"] == [1, 28, 28] and result["settings"]["cells"] == 3
    assert main(["bench", "--train", "--methods", "darts"]) == 2
    assert "does not go with --train" in capsys.readouterr().err
    assert main(["bench", "--train", "--space", "nb201"]) == 2
    assert "--space belongs to timing search steps" in capsys.readouterr().err
    assert main(["bench", "--genotype", TRAIN_GENO]) == 2
    assert "--genotype goes with --train" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ --plugin

GENO_2NODES = ("normal=|sep_conv_3x3~0|skip_connect~1|+|sep_conv_5x5~1|dil_conv_3x3~2|;"
               "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|skip_connect~0|avg_pool_3x3~2|")
PLUGIN_SOURCE = '''
from gradnas.relax import RELAXATIONS, Softmax, register_relaxation


class Plugged(Softmax):
    name = "plugged"


if "plugged" not in RELAXATIONS:  # several plugin modules of one test register the same name (refused twice)
    register_relaxation(Plugged)


print("plugin {name} imported")
'''


@pytest.fixture
def plugin(tmp_path):
    """make(name): a plugin module NAME.py in tmp_path that registers relaxation 'plugged' and says when it is
    imported; its module and the relaxation are forgotten afterwards."""
    from gradnas.relax import RELAXATIONS
    folder = tmp_path / "plugins"
    folder.mkdir()
    names = []

    def make(name):
        names.append(name)
        path = folder / f"{name}.py"
        path.write_text(PLUGIN_SOURCE.format(name=name))
        return path

    yield make
    for name in names:
        sys.modules.pop(name, None)
    RELAXATIONS.pop("plugged", None)


def test_plugin_before_the_command_registers_for_it(plugin, monkeypatch, capsys, tmp_path):
    monkeypatch.syspath_prepend(str(plugin("gradnas_plug_before").parent))
    assert main(["--plugin", "gradnas_plug_before", "search", "--relax", "tanh", "--out", str(tmp_path / "x")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "plugin gradnas_plug_before imported\n"
    assert "unknown relaxation 'tanh'; valid: gumbel, plugged, sigmoid, softmax" in captured.err


def test_plugin_file_after_the_command_is_usable(plugin, capsys, tmp_path):
    out = tmp_path / "run"
    path = plugin("gradnas_plug_after")
    assert main(["search", *TINY, "--method", "darts", "--relax", "plugged", "--plugin", str(path),
                 "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("plugin gradnas_plug_after imported\n")
    import yaml
    assert yaml.safe_load((out / "config.yaml").read_text())["relax"] == "plugged"


def test_plugins_from_the_environment_and_both_placements_import_once_each(plugin, monkeypatch, capsys):
    first, second, third = (plugin(f"gradnas_plug_{n}") for n in ("env", "top", "sub"))
    monkeypatch.syspath_prepend(str(first.parent))
    monkeypatch.setenv("GRADNAS_PLUGINS", f"gradnas_plug_env, {second}")
    assert main(["--plugin", str(second), "--plugin", "gradnas_plug_env", "genotype", GENO_2NODES,
                 "--set", "supernet.nodes=2", "--plugin", "gradnas_plug_sub"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "plugin gradnas_plug_env imported", "plugin gradnas_plug_top imported", "plugin gradnas_plug_sub imported",
        GENO_2NODES]


@pytest.mark.parametrize("given,reason", [
    ("gradnas_no_such_plugin", "(ModuleNotFoundError: No module named 'gradnas_no_such_plugin'); check the name"),
    ("{tmp}/missing.py", "(FileNotFoundError: no file {tmp}/missing.py); check that the file exists"),
    ("{tmp}/broken.py", "(ZeroDivisionError: division by zero); check that the file exists and imports cleanly"),
    ("{tmp}/json.py", "(ImportError: a module named 'json' is already imported ("),
])
def test_a_plugin_that_cannot_be_imported_is_one_error_line(tmp_path, capsys, given, reason):
    (tmp_path / "broken.py").write_text("import gradnas\n1 / 0\n")
    (tmp_path / "json.py").write_text("")
    given = given.format(tmp=tmp_path)
    assert main(["--plugin", given, "doctor"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gradnas: error: cannot import plugin {given!r} {reason.format(tmp=tmp_path)}")
    assert err.count("\n") == 1
    assert "broken" not in sys.modules  # a failed import leaves nothing half-made behind


def test_sweep_passes_its_plugins_on_to_every_search(plugin, tmp_path, monkeypatch):
    from gradnas.cli.plugins import portable
    from gradnas.report.sweep import PlannedRun, _command
    monkeypatch.chdir(tmp_path)
    assert portable(["mod", "plugins/p.py"]) == ["mod", str(tmp_path / "plugins" / "p.py")]
    run = PlannedRun(name="darts-s0", config={}, path=tmp_path / "darts-s0")
    assert _command(run, tmp_path / "plan.yaml", None, ["mod", "/x/p.py"])[3:9] == [
        "search", "--quiet", "--plugin", "mod", "--plugin", "/x/p.py"]
    # end to end: the grid's search processes know the plugin's relaxation
    path = plugin("gradnas_plug_sweep")
    out = tmp_path / "sweep"
    assert main(["sweep", "--out", str(out), "--methods", "darts", "--relax", "plugged", *TINY,
                 "--plugin", str(path.relative_to(tmp_path))]) == 0, (out / "darts-s0" / "search.log").read_text()
    assert "plugin gradnas_plug_sweep imported" in (out / "darts-s0" / "search.log").read_text()


def test_a_setting_is_refused_by_name_of_the_component_that_would_read_it(tmp_path):
    """Flags and --set are checked against the components that read them; so are the non-default settings of
    a config file the user chose (but not the other spaces' and relaxations' sections a file may hold, nor the
    built-in default config, which serves every method)."""
    from gradnas.errors import GradnasError
    from gradnas.overrides import resolve_search_config
    flags = {"method": "darts", "lam": 5.0}
    with pytest.raises(GradnasError, match="lambda is read by method milenas, but this search uses method 'darts'"):
        resolve_search_config(None, flags, [])
    with pytest.raises(GradnasError, match="epochs is read by the epoch loop of methods darts, milenas, single-level, "
                                           "but this search uses method 'pvll': its budget is pvll.steps"):
        resolve_search_config(None, {"method": "pvll"}, ["epochs=33"])
    with pytest.raises(GradnasError, match="pvll.steps configures method pvll, but this search uses method 'darts'"):
        resolve_search_config(None, {"method": "darts"}, ["pvll.steps=3"])
    with pytest.raises(GradnasError, match="xi is read by method darts"):
        resolve_search_config(None, {"method": "single-level"}, ["xi=0.1", "order=2"])
    assert resolve_search_config(None, {"method": "pvll"}, []).epochs == 3  # quick's, not the user's: not read
    # the built-in default's sigmoid serves the methods that run it; pvll (softmax(A) sampling) gets softmax, and
    # a sigmoid the user asks for is refused by name
    assert resolve_search_config(None, {}, []).relax == "sigmoid"
    assert resolve_search_config(None, {"method": "pvll"}, []).relax == "softmax"
    assert resolve_search_config(None, {}, ["method=pvll"]).relax == "softmax"
    assert resolve_search_config(None, {"method": "pvll", "relax": "gumbel"}, []).relax == "gumbel"
    with pytest.raises(GradnasError, match="pvll samples by Gumbel-max from softmax.*not relax 'sigmoid'"):
        resolve_search_config(None, {"method": "pvll", "relax": "sigmoid"}, [])
    mine = tmp_path / "mine.yaml"
    mine.write_text("method: darts\nlambda: 5\n")
    with pytest.raises(GradnasError, match="lambda is read by method milenas"):
        resolve_search_config(str(mine), {}, [])
    mine.write_text("method: darts\nlambda: 1.0\nepochs: 3\n")  # a resolved config dump: defaults are no choice
    assert resolve_search_config(str(mine), {}, []).epochs == 3
    mine.write_text("method: darts\nspace: nb201\nsupernet: {cells: 5}\ngumbel: {tau_max: 3}\n")
    assert resolve_search_config(str(mine), {}, []).supernet.cells == 5  # sections of other spaces / relaxations
    with pytest.raises(GradnasError, match="supernet.cells configures the darts space, but this search uses space"):
        resolve_search_config(str(mine), {}, ["supernet.cells=4"])


@pytest.mark.parametrize("command", [["report"], ["search", "--resume"], ["sizes"]])
def test_a_path_too_long_is_not_called_a_disk_problem(command, capsys):
    """ENAMETOOLONG is the input's fault: the message says so, shortens the path and never asks for disk space."""
    assert main([*command, "x" * 5000]) == 2
    err = capsys.readouterr().err
    assert err.count("gradnas: error:") == 1 and "Traceback" not in err
    assert "too long to be a file name" in err and "disk space" not in err
    assert " characters))" in err and len(err) < 600


def test_number_flags_take_every_float_spelling(capsys):
    from gradnas.cli import build_parser
    args = build_parser().parse_args(["search", "--epochs", "1e1", "--seed", "2.0", "--lambda", "1E-1", "--xi", ".5"])
    assert (args.epochs, args.seed, args.lam, args.xi) == (10, 2, 0.1, 0.5) and type(args.epochs) is int
    args = build_parser().parse_args(["train", "--lr", "1e-3", "--batch-size", "9.6e1"])
    assert (args.lr, args.batch_size) == (1e-3, 96)
    for bad in ("1.5", "1e-1", "inf", "ten"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["search", "--epochs", bad])
        assert f"argument --epochs: expected an integer, got {bad!r}" in capsys.readouterr().err
