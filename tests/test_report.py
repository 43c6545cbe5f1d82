"""Analysis: every figure of a recorded short run as a valid PNG with content, report.md, cell diagrams
(and the message when `dot` is missing), compare's table on hand-made metrics, sweep planning and a
tiny resumable sweep, all through the CLI where a user would call them."""
import json
import shutil
import statistics

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from gradnas.cli import main
from gradnas.config import SearchConfig
from gradnas.errors import GradnasError
from gradnas.report.cells import draw_genotype, read_genotype
from gradnas.report.compare import compare
from gradnas.report.params import derived_params
from gradnas.report.report import plot_run, write_report
from gradnas.report.run import load_run
from gradnas.report.sweep import plan_sweep
from gradnas.search.loop import Search
from test_search import FMNIST, tiny_config

HAS_DOT = shutil.which("dot") is not None
NB201_BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
DARTS_V2 = ("normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|skip_connect~0|sep_conv_3x3~1|+|skip_connect~0|sep_conv_3x3~1|"
            "+|skip_connect~0|dil_conv_3x3~2|;reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|skip_connect~2|"
            "+|max_pool_3x3~1|skip_connect~2|+|max_pool_3x3~0|skip_connect~2|")


@pytest.fixture(autouse=True)
def _one_thread(_threads):
    # Tiny tensors gain nothing from a second thread, and a 2-thread pool is many times slower when
    # the cores are shared with other work (measured: 7 s vs 72 s for the same 2-epoch search).
    torch.set_num_threads(1)


def assert_png(path, min_size=(150, 100)):
    """A decodable PNG of reasonable size that is not blank."""
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1], (path, im.size)
        pixels = np.asarray(im.convert("L"), dtype=np.float32)
    assert pixels.std() > 5 and (pixels < 128).mean() > 0.002, f"{path} looks blank"


@pytest.fixture(scope="module", params=["darts", "nb201"])
def probed_run(request, tmp_path_factory):
    """A recorded 2-epoch run with every probe on, in each space."""
    out = tmp_path_factory.mktemp("runs") / f"{request.param}-probed"
    if request.param == "darts":
        probes = {"gap": True, "grad_corr": True, "dl_dp_edges": ["last:3<-*", "reduce:2<-0"], "batches": 1}
        cfg = tiny_config(method="darts", probes=probes, threads=1)
    else:
        probes = {"gap": True, "grad_corr": True, "dl_dp_edges": ["last:3<-*", "cell:1<-0"], "batches": 1}
        cfg = tiny_config(method="single-level", relax="sigmoid", space="nb201", probes=probes, threads=1,
                          nb201={"cells_per_stage": 1, "channels": 4})
    Search(cfg, out, progress=False).run()
    return out


def test_plot_renders_every_figure(probed_run, tmp_path):
    out = tmp_path / "plots"
    assert main(["plot", str(probed_run), "--out", str(out)]) == 0
    darts = probed_run.name.startswith("darts")
    cells = {"cell-normal.png", "cell-reduce.png"} if darts else {"cell-nb201.png"}
    expected = ({"edge-weights-normal.png", "edge-weights-reduce.png"} if darts else {"edge-weights-cell.png"}) | {
        "curves.png", "gap.png", "grad-corr.png", "dl-dp.png", "sizes-per-epoch.png", "sizes-accuracy.png"} | (
        cells if HAS_DOT else set()) | (set() if darts else {"nb201.png"})  # the benchmark's accuracy per epoch
    assert {p.name for p in out.iterdir()} == expected
    for name in expected:
        assert_png(out / name)


def test_plot_without_probes_says_what_is_missing(tmp_path, capsys):
    run = make_run(tmp_path / "plain", method="darts", seed=0, valid=[50.0, 60.0], train=[55.0, 70.0],
                   times=[10.0, 12.0])
    assert main(["plot", str(run)]) == 0
    names = {p.name for p in (run / "plots").iterdir()}
    assert {"edge-weights-normal.png", "curves.png"} <= names and "gap.png" not in names
    err = capsys.readouterr().err
    assert "not recorded in this run: gap, grad_corr, dl_dp" in err and "--probe-grad-corr" in err


def test_report_md(probed_run):
    assert main(["report", str(probed_run)]) == 0
    text = (probed_run / "report.md").read_text()
    run = load_run(probed_run)
    assert run.genotype_string in text
    for section in ("## Result", "## Cells", "## Training curves", "## Relaxed op weights per edge",
                    "## Gradient probes", "## Per epoch", "## Configuration"):
        assert section in text
    for link in [l.split("](")[1].rstrip(")") for l in text.splitlines() if l.startswith("![")]:
        assert (probed_run / link).is_file(), link
    rows = [l for l in text.splitlines() if l.startswith("| 1 |") or l.startswith("| 2 |")]
    assert len(rows) == 2  # one per epoch, with its wall time
    assert f"{run.metrics[0]['epoch_time']:.1f}" in rows[0]
    assert yaml.safe_load(text.split("```yaml\n")[1].split("```")[0]) == run.config
    if run.config["space"] == "nb201":  # the benchmark's accuracy of the final cell, and per epoch
        assert f"| NAS-Bench-201 test accuracy, cifar10 | {run.nb201['cifar10']:.2f} % |" in text
        assert rows[1].endswith(f"| {run.metrics[1]['nb201']['imagenet16-120']:.2f} |")


def test_params_at_search_width_counts_the_kept_ops():
    cfg = SearchConfig.from_dict({"supernet": {"cells": 3, "channels": 4, "nodes": 2}}).to_dict()
    reduce = "|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|max_pool_3x3~2|"
    convs = derived_params(cfg, f"normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|sep_conv_3x3~0|sep_conv_3x3~2|;"
                                f"reduce={reduce}", in_channels=1, num_classes=10)
    pools = derived_params(cfg, f"normal=|avg_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|avg_pool_3x3~2|;"
                                f"reduce={reduce}", in_channels=1, num_classes=10)
    # one normal cell (cell 0, C = 4) with 4 kept sep_conv_3x3: each is two (3x3 depthwise + 1x1 pointwise)
    assert convs - pools == 4 * 2 * (9 * 4 + 4 * 4)
    # NAS-Bench-201: the benchmark's network; its largest cell (every edge a 3x3 conv) has 1.53 M on CIFAR-10
    nb201 = SearchConfig.from_dict({"space": "nb201"}).to_dict()
    all_conv = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    assert derived_params(nb201, all_conv, in_channels=3, num_classes=10) == 1_531_546


def test_draw_from_string_json_and_run_folder(probed_run, tmp_path):
    if not HAS_DOT:
        pytest.skip("Graphviz dot is not installed")
    assert main(["draw", DARTS_V2, "--out", str(tmp_path / "s")]) == 0
    for kind in ("normal", "reduce"):
        assert_png(tmp_path / "s" / f"cell-{kind}.png")
    assert main(["genotype", DARTS_V2, "--set", "supernet.nodes=4", "--json", str(tmp_path / "g.json")]) == 0
    assert read_genotype(tmp_path / "g.json").to_string() == DARTS_V2
    assert main(["draw", str(tmp_path / "g.json"), "--out", str(tmp_path / "j"), "--format", "svg"]) == 0
    assert (tmp_path / "j" / "cell-normal.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    assert main(["draw", str(probed_run), "--out", str(tmp_path / "r")]) == 0
    assert_png(tmp_path / "r" / ("cell-reduce.png" if probed_run.name.startswith("darts") else "cell-nb201.png"))
    assert main(["draw", NB201_BEST, "--out", str(tmp_path / "nb")]) == 0
    assert_png(tmp_path / "nb" / "cell-nb201.png")


def test_missing_dot_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` anywhere on PATH
    with pytest.raises(GradnasError, match="apt-get install graphviz"):
        draw_genotype(read_genotype(DARTS_V2), tmp_path)
    assert main(["draw", DARTS_V2, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradnas: error: the Graphviz program `dot`") and "brew install graphviz" in err
    # plot and report still draw everything else, and say what is missing and how to get it
    run = make_run(tmp_path / "run", method="darts", seed=0, valid=[50.0], train=[55.0], times=[10.0])
    assert main(["report", str(run)]) == 0
    assert "gradnas: warning: cell diagrams skipped: the Graphviz program `dot`" in capsys.readouterr().err
    assert "No cell diagrams: cell diagrams skipped: the Graphviz program `dot`" in (run / "report.md").read_text()
    assert (run / "plots" / "curves.png").is_file() and not (run / "plots" / "cell-normal.png").exists()


@pytest.mark.parametrize("args,message", [
    (["plot", "/nonexistent/run"], "is not a gradnas run folder"),
    (["draw", "normal=|bogus|"], "expected 'normal=|...|;reduce=|...|'"),
    (["draw", "/nonexistent/genotype.json"], "is neither a file nor a genotype string"),
    (["compare", "/nonexistent/a"], "is not a gradnas run folder"),
])
def test_analysis_errors_are_one_line(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradnas: error:") and message in err and "Traceback" not in err


# ---- compare on hand-made metrics --------------------------------------------------------------

def make_run(path, *, method, seed, valid, train, times, lam=1.0, gap=None, nb201=None, genotype=DARTS_V2):
    """A run folder as `gradnas search` writes it, with chosen numbers (no checkpoint: params n/a)."""
    path.mkdir(parents=True)
    cfg = SearchConfig.from_dict({"method": method, "lambda": lam, "seed": seed, "epochs": len(valid)}).to_dict()
    (path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    ops = cfg["supernet"]["ops"]
    lines = []
    for e, (v, t, s) in enumerate(zip(valid, train, times), 1):
        p = [0.1 + 0.01 * k * e for k in range(len(ops))]
        edges = {kind: {f"{i + 2}<-{j}": {op: w / sum(p) for op, w in zip(ops, p)} for i in range(4)
                        for j in range(i + 2)} for kind in ("normal", "reduce")}
        line = {"epoch": e, "lr": 0.025, "train_loss": 1.0, "train_acc": t, "valid_loss": 1.2, "valid_acc": v,
                "genotype": genotype, "epoch_time": s, "edge_weights": edges}
        if gap is not None:
            line["gap"] = {"train_loss": 1.0, "train_acc": v + gap[e - 1], "valid_loss": 1.2, "valid_acc": v,
                           "loss_gap": 0.2, "acc_gap": gap[e - 1]}
        lines.append(json.dumps(line))
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    summary = {"epochs_done": len(valid), "finished": True, "genotype": genotype, "best_valid_acc": max(valid)}
    if nb201:
        summary["nb201"] = nb201
    (path / "summary.json").write_text(json.dumps(summary))
    return path


def _rows(md, section):
    block = md.split(section)[1].split("\n## ")[0]
    return [[c.strip() for c in l.strip("|").split(" | ")] for l in block.splitlines() if l.startswith("| ")][1:]


def test_compare_table_on_hand_made_metrics(tmp_path):
    a = make_run(tmp_path / "mil-s0", method="milenas", seed=0, valid=[70.0, 80.0, 78.0], train=[72.0, 85.0, 90.0],
                 times=[10.0, 11.0, 12.0], gap=[1.0, 2.0, 4.0], nb201={"cifar10": 93.0, "cifar100": 70.0})
    b = make_run(tmp_path / "mil-s1", method="milenas", seed=1, valid=[60.0, 84.0, 82.0], train=[61.0, 86.0, 91.0],
                 times=[20.0, 21.0, 22.0], gap=[1.0, 3.0, 6.0], nb201={"cifar10": 94.0, "cifar100": 72.0})
    c = make_run(tmp_path / "darts-s0", method="darts", seed=0, valid=[50.0, 55.0, 55.0], train=[52.0, 57.0, 60.0],
                 times=[5.0, 7.0, 6.0])
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), str(c), "--out", str(out)]) == 0
    md = (out / "compare.md").read_text()
    runs = _rows(md, "## Runs")
    header = md.split("## Runs")[1].split("\n")[2]
    assert "NB201 cifar10" in header and "NB201 cifar100" in header
    assert runs[0][:9] == ["mil-s0", "milenas lambda=1 softmax", "0", "3", "78.00", "80.00", "4.00", "11.0", "n/a"]
    assert runs[1][:9] == ["mil-s1", "milenas lambda=1 softmax", "1", "3", "82.00", "84.00", "6.00", "21.0", "n/a"]
    # no gap probe in the DARTS run: running train accuracy - validation, marked with a dagger
    assert runs[2][:9] == ["darts-s0", "darts softmax", "0", "3", "55.00", "55.00", "5.00†", "6.0", "n/a"]
    assert runs[0][9:11] == ["93.00", "70.00"] and runs[2][9:11] == ["n/a", "n/a"]
    assert runs[0][-1] == f"`{DARTS_V2.replace('|', chr(92) + '|')}`"
    means = _rows(md, "## Mean ± standard deviation over seeds")
    sd = statistics.stdev
    assert means[0] == ["milenas lambda=1 softmax", "2 (0, 1)", f"80.00 ± {sd([78, 82]):.2f}",
                        f"82.00 ± {sd([80, 84]):.2f}", f"5.00 ± {sd([4, 6]):.2f}", f"16.0 ± {sd([11, 21]):.1f}",
                        "n/a", f"93.50 ± {sd([93, 94]):.2f}", f"71.00 ± {sd([70, 72]):.2f}"]
    assert means[1][:7] == ["darts softmax", "1 (0)", "55.00", "55.00", "5.00", "6.0", "n/a"]
    for name in ("compare-valid-acc.png", "compare-gap.png", "compare-search-time.png"):
        assert_png(out / name)
        assert f"]({name})" in md


def test_load_run_keeps_the_epochs_before_a_line_cut_short(tmp_path):
    run = make_run(tmp_path / "r", method="darts", seed=0, valid=[1.0, 2.0], train=[1.0, 2.0], times=[1.0, 1.0])
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "valid_a')  # a crash mid-write
    assert [m["epoch"] for m in load_run(run).metrics] == [1, 2]
    (run / "metrics.jsonl").write_text('{"epoch": 1, "valid_a\n{"epoch": 2}\n')
    with pytest.raises(GradnasError, match="line 1 is not valid JSON"):
        load_run(run)


def test_compare_groups_by_every_setting_but_the_seed(tmp_path):
    a = make_run(tmp_path / "a", method="milenas", seed=0, lam=0.1, valid=[1.0], train=[1.0], times=[1.0])
    b = make_run(tmp_path / "b", method="milenas", seed=1, lam=999, valid=[1.0], train=[1.0], times=[1.0])
    path, _ = compare([a, b], tmp_path / "out")
    means = _rows(path.read_text(), "## Mean ± standard deviation over seeds")
    assert [m[0] for m in means] == ["milenas lambda=0.1 softmax", "milenas lambda=999 softmax"]


# ---- sweep -------------------------------------------------------------------------------------

def test_sweep_plan():
    base = SearchConfig.from_dict({"epochs": 2}).to_dict()
    runs = plan_sweep(base, "/tmp/x", methods=["single-level", "milenas", "darts"], lambdas=[0.1, 1, 999],
                      seeds=[0, 1])
    assert [r.name for r in runs] == ["single-level-s0", "single-level-s1", "milenas-lam0.1-s0", "milenas-lam0.1-s1",
                                      "milenas-lam1-s0", "milenas-lam1-s1", "milenas-lam999-s0", "milenas-lam999-s1",
                                      "darts-s0", "darts-s1"]
    assert runs[2].config["lambda"] == 0.1 and runs[9].config["method"] == "darts" and runs[9].config["seed"] == 1
    with pytest.raises(GradnasError, match="applies to milenas only"):
        plan_sweep(base, "/tmp/x", methods=["darts"], lambdas=[1.0])
    with pytest.raises(GradnasError, match="unknown method 'enas'"):
        plan_sweep(base, "/tmp/x", methods=["enas"])
    with pytest.raises(GradnasError, match="method single-level supports order 1, and the sweep asks for order 2"):
        plan_sweep({**base, "order": 2}, "/tmp/x", methods=["darts", "single-level"])


def test_sweep_runs_in_parallel_resumes_and_compares(tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["sweep", "--out", str(out), "--methods", "single-level,milenas", "--lambdas", "0.5", "--jobs", "2",
            "--dataset", "fashion-mnist", "--data-dir", FMNIST, "--epochs", "1", "--batch-size", "16", "--cells", "3",
            "--channels", "4", "--set", "supernet.nodes=2", "--set", "data.subset=64", "--set", "data.eval_batches=1",
            "--device", "cpu"]  # not --quiet: its progress messages are info lines
    assert main(args) == 0
    for name in ("single-level-s0", "milenas-lam0.5-s0"):
        assert json.loads((out / name / "summary.json").read_text())["finished"]
        saved = yaml.safe_load((out / name / "config.yaml").read_text())
        assert saved["threads"] >= 1 and saved["data"]["subset"] == 64
    assert yaml.safe_load((out / "milenas-lam0.5-s0" / "config.yaml").read_text())["lambda"] == 0.5
    md = (out / "compare.md").read_text()
    assert "single-level-s0" in md and "milenas-lam0.5-s0" in md
    capsys.readouterr()
    # the same command again: nothing left to run
    assert main(args) == 0
    assert "(2 done, 0 to resume, 0 to start)" in capsys.readouterr().err
    # another setting for the same folders is refused before anything runs
    assert main([a if a != "1" else "2" for a in args]) == 2
    assert "holds a search with epochs=1, but this sweep plans epochs=2" in capsys.readouterr().err
