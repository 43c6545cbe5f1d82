"""Reports of training runs (`gradnas report|plot|compare` on what `gradnas train` writes), the one-line refusals
of the wrong kind of folder, NAS-Bench-201 accuracy per epoch of a search, and `gradnas lookup`'s rank."""
import csv
import gzip
import io
import json
import re

import pytest
import torch

from gradnas.benchmark.nb201 import COLUMNS, TABLE
from gradnas.cli import main
from gradnas.search.loop import Search
from gradnas.space.genotype import load_genotype
from gradnas.train.config import TrainConfig
from gradnas.train.loop import Training
from test_report import assert_png
from test_search import FMNIST, tiny_config

NB201_GENO = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"


@pytest.fixture(autouse=True)
def _one_thread(_threads):
    torch.set_num_threads(1)


def _train(out, *, seed=1, fraction=0.0, genotype=NB201_GENO):
    cfg = TrainConfig.from_dict({
        "epochs": 2, "batch_size": 32, "seed": seed, "device": "cpu", "threads": 1,
        "data": {"dataset": "fashion-mnist", "data_dir": FMNIST, "subset": 64, "test_subset": 128, "cutout": 0,
                 "valid_fraction": fraction},
        "network": {"cells": 1, "channels": 4, "auxiliary_weight": 0.0, "drop_path": 0.0},
        "optim": {"lr": 0.1}})
    Training(cfg, load_genotype(genotype), out, progress=False).run()
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("train-runs")
    search = root / "search"
    Search(tiny_config(method="darts", space="nb201", relax="sigmoid", nb201={"cells_per_stage": 1, "channels": 4}),
           search, progress=False).run()
    return {"a": _train(root / "a", seed=1), "b": _train(root / "b", seed=2),
            "v": _train(root / "v", seed=1, fraction=0.25), "search": search}


def test_report_of_a_training_run(runs, capsys):
    run = runs["v"]
    assert main(["report", str(run)]) == 0
    text = (run / "report.md").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert text.startswith("# Training report: v") and "Search report" not in text and "? ?" not in text
    assert f"{summary['test_acc']:.2f} %" in text and f"{summary['params_m']:.3f}" in text
    assert f"{summary['macs_m']:.1f}" in text
    sel = summary["selected"]
    assert sel["by"] == "valid_acc" and f"epoch {sel['epoch']}, best validation accuracy {sel['valid_acc']:.2f} %" in text
    assert "(plots/train-curves.png)" in text and "drop-path" in text
    assert_png(run / "plots" / "train-curves.png")
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for m in lines:  # the per-epoch table carries every epoch's test accuracy
        assert re.search(rf"\| {m['epoch']} \|.*\| {m['test_acc']:.2f} \|", text)
    assert main(["report", str(runs["a"])]) == 0
    assert "epoch 2: last epoch (no validation split)" in (runs["a"] / "report.md").read_text()
    assert main(["plot", str(runs["a"])]) == 0
    assert "train-curves.png" in capsys.readouterr().out


def test_compare_training_runs(runs, tmp_path):
    assert main(["compare", str(runs["a"]), str(runs["b"]), "--out", str(tmp_path / "c")]) == 0
    text = (tmp_path / "c" / "compare.md").read_text()
    accs = [json.loads((runs[k] / "summary.json").read_text())["test_acc"] for k in "ab"]
    assert text.startswith("# Comparison of training runs") and "2 runs in 1 setting(s)" in text
    mean_std = f"{sum(accs) / 2:.2f} ± {abs(accs[0] - accs[1]) / 2 ** 0.5:.2f}"
    assert mean_std in text, (mean_std, text)
    for name in ("compare-test-acc.png", "compare-loss.png"):
        assert_png(tmp_path / "c" / name)


def test_wrong_kind_of_folder_is_one_line(runs, tmp_path, capsys):
    cases = [
        (["sizes", str(runs["a"])], f"{runs['a']} is a training run folder; `gradnas sizes`"),
        (["compare", str(runs["search"]), str(runs["a"]), "--out", str(tmp_path / "c")],
         "compare mixes kinds of run"),
        (["report", str(tmp_path / "empty")], "is not a gradnas run folder (no config.yaml)"),
    ]
    (tmp_path / "empty").mkdir()
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.yaml").write_text("colour: blue\n")
    cases.append((["report", str(tmp_path / "odd")], "is neither a search's nor a training run's"))
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert not (tmp_path / "c").exists()


def test_nb201_accuracy_per_epoch_of_a_search(runs, tmp_path):
    search = runs["search"]
    assert main(["report", str(search)]) == 0
    assert "(plots/nb201.png)" in (search / "report.md").read_text()
    assert_png(search / "plots" / "nb201.png")
    assert main(["compare", str(search), "--out", str(tmp_path / "c")]) == 0
    assert_png(tmp_path / "c" / "compare-nb201.png")


def test_lookup_rank_matches_the_table(capsys):
    with gzip.open(TABLE, "rb") as f:
        rows = list(csv.DictReader(io.TextIOWrapper(f, encoding="utf-8")))
    for cell in (NB201_GENO, "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"):
        assert main(["lookup", cell]) == 0
        out = capsys.readouterr().out
        row = next(r for r in rows if r["ArchitectureString"] == cell)
        for name, column in COLUMNS.items():
            acc = float(row[column])
            better = sum(float(r[column]) > acc for r in rows)
            tied = sum(float(r[column]) == acc for r in rows) - 1
            line = next(l for l in out.splitlines() if l.startswith(name))
            assert f"rank {better + 1} / 15625" in line
            assert (f"tied with {tied} other" in line) == (tied > 0)


def test_without_the_graphviz_package_draw_plot_and_report_say_how_to_install_it(runs, monkeypatch, capsys):
    import sys
    monkeypatch.setitem(sys.modules, "graphviz", None)  # `import graphviz` fails as when it is not installed
    assert main(["draw", NB201_GENO, "--out", str(runs["a"] / "cells")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'gradnas[draw]'" in err and len(err.strip().splitlines()) == 1
    for command in ("plot", "report"):
        assert main([command, str(runs["a"])]) == 0
        assert "cell diagrams skipped" in capsys.readouterr().err
    assert "pip install 'gradnas[draw]'" in (runs["a"] / "report.md").read_text()
