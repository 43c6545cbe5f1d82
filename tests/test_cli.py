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
    assert main(["search", *TINY, "--method", "single-level", "--relax", "sigmoid", "--lambda", "0.25",
                 "--seed", "7", "--set", "arch_optim.lr=0.001", "--out", str(out)]) == 0
    import yaml
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["method"], saved["relax"], saved["lambda"], saved["seed"]) == ("single-level", "sigmoid", 0.25, 7)
    assert saved["arch_optim"]["lr"] == 0.001 and saved["supernet"]["cells"] == 3


def _cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-m", "gradnas", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


@pytest.mark.parametrize("args,message", [
    (["--method", "enas"], "unknown method 'enas'; valid methods: darts, milenas, single-level"),
    (["--space", "nasnet"], "unknown space 'nasnet'; valid spaces: darts, nb201"),
    (["--relax", "tanh"], "unknown relaxation 'tanh'; valid: gumbel, sigmoid, softmax"),
    (["--space", "nb201", "--set", "supernet.cells=3"],
     "--set supernet.cells=3: supernet.cells configures the darts space, but this search uses space 'nb201'"),
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
             "--methods", "forward-backward,milenas,darts:2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    rows = {(row["method"], row["order"]): row for row in result["results"]}
    assert set(rows) == {("forward-backward", 1), ("milenas", 1), ("darts", 2)}
    for row in rows.values():
        assert row["sec_per_step"] > 0 and row["images_per_sec"] > 0 and row["peak_memory_gb"] > 0.05
    assert result["settings"]["batch"] == 2
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
