"""`gradnas sweep --grid` (any config key) and `--backend ray`: a 2-point grid as Ray tasks on a local Ray
with 2 CPUs (started once for this module), resumed by a second invocation that skips both points; grid
values checked before any run starts; the Ray backend's settings refused without it."""
import json
import signal
import sys

import pytest
import yaml

from gradnas.cli import main
from gradnas.config import SearchConfig
from gradnas.errors import GradnasError
from gradnas.report.sweep import plan_sweep

FMNIST = "/usr/share/datasets/fashion-mnist"
TINY = ["--dataset", "fashion-mnist", "--data-dir", FMNIST, "--epochs", "1", "--batch-size", "16", "--cells", "3",
        "--channels", "4", "--set", "supernet.nodes=2", "--set", "data.subset=64", "--set", "data.eval_batches=1",
        "--device", "cpu", "--methods", "darts", "--threads", "1"]


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    for sig, handler in handlers.items():  # ray.init's handlers outlive it; later tests expect the defaults
        signal.signal(sig, handler)


def test_ray_sweep_runs_every_point_compares_and_skips_them_again(local_ray, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["sweep", "--out", str(out), "--backend", "ray", "--cpus-per-run", "1", "--grid", "w_optim.lr=0.02,0.05",
            *TINY]
    assert main(args) == 0, capsys.readouterr().err
    names = ["darts-s0-lr0.02", "darts-s0-lr0.05"]
    for name, lr in zip(names, (0.02, 0.05)):
        log = (out / name / "search.log").read_text()
        assert json.loads((out / name / "summary.json").read_text())["finished"], log
        assert yaml.safe_load((out / name / "config.yaml").read_text())["w_optim"]["lr"] == lr
        assert (out / name / "search.log").read_text().count(" start ===") == 1
    md = (out / "compare.md").read_text()
    assert all(name in md for name in names)
    assert json.loads((out / "sweep.json").read_text())["backend"] == "ray"
    err = capsys.readouterr().err
    assert "on Ray, 1 CPU(s) per run" in err and "[done] darts-s0-lr0.05" in err
    # the same command again: both points are finished, nothing runs
    assert main(args) == 0
    assert "(2 done, 0 to resume, 0 to start)" in capsys.readouterr().err
    for name in names:
        assert (out / name / "search.log").read_text().count(" ===") == 1


def test_grid_names_values_and_checks_before_anything_runs(tmp_path, capsys):
    base = SearchConfig.from_dict({"epochs": 2}).to_dict()
    runs = plan_sweep(base, tmp_path, methods=["darts"], grid={"w_optim.lr": ["0.01", 0.025],
                                                               "data.cutout": [16], "stop.at_size": [[6, 0], [4, 0]]})
    assert [r.name for r in runs] == ["darts-s0-lr0.01-at_size6x0", "darts-s0-lr0.01-at_size4x0",
                                      "darts-s0-lr0.025-at_size6x0", "darts-s0-lr0.025-at_size4x0"]
    assert runs[0].config["w_optim"]["lr"] == 0.01 and runs[3].config["stop"]["at_size"] == [4, 0]
    assert all(r.config["data"]["cutout"] == 16 for r in runs)
    # --grid seed=... is --seeds
    assert [r.name for r in plan_sweep(base, tmp_path, grid={"seed": [1, 2]})] == ["milenas-lam1-s1", "milenas-lam1-s2"]
    out = tmp_path / "bad"
    # a value of the wrong type, a key nobody has, a key no component of a point reads: refused, nothing made
    for grid, message in ((["w_optim.lr=0.01,fast"], "w_optim.lr must be a number, got 'fast'"),
                          (["w_optim.speed=1,2"], "unknown key 'w_optim.speed'"),
                          (["gumbel.tau_max=5,10"], "the gumbel relaxation")):
        assert main(["sweep", "--out", str(out), *TINY, *sum((["--grid", g] for g in grid), [])]) == 2
        assert message in capsys.readouterr().err
        assert not out.exists()
    with pytest.raises(GradnasError, match="given twice"):
        main_grid = ["w_optim.lr=1", "w_optim.lr=2"]
        from gradnas.report.sweep import parse_grid
        parse_grid(main_grid)


def test_backend_settings_are_refused_where_they_do_nothing(tmp_path, capsys, monkeypatch):
    out = tmp_path / "s"
    assert main(["sweep", "--out", str(out), *TINY, "--gpus-per-run", "1"]) == 2
    assert "--gpus-per-run is a setting of the Ray backend; add --backend ray" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main(["sweep", "--out", str(out), *TINY, "--backend", "ray"]) == 2
    assert "pip install 'gradnas[ray]'" in capsys.readouterr().err
    assert not out.exists()
