"""gradnas.bench: the machine-load check, FLOP counts and GFLOP/s, step ratios, --threads auto and --sweep."""
import json
import os
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from gradnas import bench
from gradnas.bench import CpuReading
from gradnas.cli import main

TINY = ["--space", "nb201", "--cells", "1", "--channels", "4", "--steps", "1", "--warmup", "0", "--threads", "1"]

STAT = """cpu  900 10 300 5000 40 5 6 7 0 0
cpu0 400 5 100 2500 20 2 3 4 0 0
cpu1 500 5 200 2500 20 3 3 3 0 0
intr 1 2 3
"""


def test_busy_seconds_reads_proc_stat():
    # user + nice + system + irq + softirq + steal; idle and iowait are not busy
    assert bench.busy_seconds(STAT, None, 100) == pytest.approx((900 + 10 + 300 + 5 + 6 + 7) / 100)
    assert bench.busy_seconds(STAT, [1], 100) == pytest.approx((500 + 5 + 200 + 3 + 3 + 3) / 100)
    assert bench.busy_seconds(STAT, [0, 1], 100) == pytest.approx(bench.busy_seconds(STAT, None, 100))
    with pytest.raises(ValueError):
        bench.busy_seconds(STAT, [7], 100)


def test_others_load_and_its_warning():
    # 4 s of wall time, the cores busy 6 CPU-s, 3 of them the bench's own: others kept 0.75 cores busy
    load = bench.others_load(CpuReading(100.0, 10.0, 50.0, (1.0, 1.0, 1.0)),
                             CpuReading(106.0, 13.0, 54.0, (2.0, 1.0, 1.0)))
    assert load["readable"] and load["others_cores"] == pytest.approx(0.75) and load["own_cores"] == 0.75
    assert load["loadavg_before"] == (1.0, 1.0, 1.0) and load["loadavg_after"] == (2.0, 1.0, 1.0)
    warning = bench.load_warning(load)
    assert "0.75 CPU cores" in warning and "not comparable" in warning
    # the bench alone (busy = own, or own a tick above busy): quiet, never negative
    quiet = bench.others_load(CpuReading(100.0, 10.0, 0.0, None), CpuReading(103.0, 13.02, 4.0, None))
    assert quiet["others_cores"] == 0.0 and bench.load_warning(quiet) is None
    assert bench.load_warning({**load, "others_cores": 0.2}) is None
    assert bench.load_warning({**load, "others_cores": 0.2}, threshold=0.1) is not None
    # no /proc/stat: said, not crashed
    unread = bench.others_load(CpuReading(None, 0.0, 0.0, None), CpuReading(None, 1.0, 1.0, None))
    assert not unread["readable"] and unread["others_cores"] is None
    assert "could not be read" in bench.load_warning(unread)


def test_read_cpu_sees_a_busy_loop():
    if not os.path.exists("/proc/stat"):
        assert bench.read_cpu().busy_s is None
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it start
        before = bench.read_cpu()
        time.sleep(0.6)
        load = bench.others_load(before, bench.read_cpu())
    finally:
        spinner.kill()
        spinner.wait()
    assert load["others_cores"] > 0.5  # the spinner alone holds one core


def test_auto_threads():
    assert bench.auto_threads(2, 0.1) == 2
    assert bench.auto_threads(2, 0.7) == 1
    assert bench.auto_threads(2, 1.9) == 1  # at least one
    assert bench.auto_threads(16, 3.2) == 13
    assert bench.auto_threads(4, None) == 4


def test_resolve_threads(monkeypatch):
    from gradnas.run import available_cores
    cores = available_cores()
    assert bench.resolve_threads(1) == (1, "given")
    # others keep every core but one busy over the look
    readings = iter([CpuReading(0.0, 0.0, 0.0, None), CpuReading(cores - 1.0, 0.0, 1.0, None)])
    monkeypatch.setattr(bench, "read_cpu", lambda: next(readings))
    monkeypatch.setattr(bench, "AUTO_THREADS_WINDOW_S", 0.0)
    n, why = bench.resolve_threads("auto")
    assert n == 1 and why.startswith(f"auto: {cores} core(s) available") and f"kept {cores - 1.0:.2f} busy" in why
    with pytest.raises(bench.GradnasError, match="from 1 to"):
        bench.resolve_threads(cores + 1)


def test_count_flops_by_hand_and_against_flop_counter_mode():
    # Linear 5 -> 3 on a batch of 2, input without grad: forward 2*2*5*3, backward (weight grad only) the same
    lin = torch.nn.Linear(5, 3, bias=False)
    x = torch.randn(2, 5)
    assert bench.count_flops(lambda: lin(x).sum().backward()) == 2 * (2 * 2 * 5 * 3)
    # the forward-backward baseline on a tiny supernet: our count equals FlopCounterMode's on the same model
    from torch.utils.flop_counter import FlopCounterMode
    from gradnas.space import build_supernet
    model = build_supernet("nb201", bench.space_config("nb201", cells=1, channels=4), "softmax", in_channels=3,
                           num_classes=10, seed=0)
    x, y = torch.randn(2, 3, 16, 16), torch.randint(0, 10, (2,))

    def step():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    with FlopCounterMode(display=False, depth=0) as reference:
        step()
    assert bench.count_flops(step) == reference.get_total_flops() > 1e6


def _rows(**sec):
    return [{"method": label.split(":")[0], "order": 2 if label.endswith(":2") else 1, "sec_per_step": s}
            for label, s in sec.items()]


def test_step_ratios():
    rows = _rows(**{"forward-backward": 1.0, "milenas": 2.0, "darts:2": 7.0, "milenas:2": 8.0})
    ratios = {r["ratio"]: r for r in bench.step_ratios(rows)}
    assert ratios["darts:2 / milenas"]["value"] == 3.5 and ratios["darts:2 / milenas"]["holds"]
    assert "MiLeNAS paper: >= 3x" in ratios["darts:2 / milenas"]["claim"]
    assert ratios["milenas:2 / darts:2"]["value"] == pytest.approx(8 / 7) and ratios["milenas:2 / darts:2"]["holds"]
    assert ratios["milenas:2 / forward-backward"]["value"] == 8.0
    assert ratios["milenas / forward-backward"]["claim"] is None
    assert len(ratios) == 5
    slow = {r["ratio"]: r for r in bench.step_ratios(_rows(milenas=2.0, **{"darts:2": 5.0, "milenas:2": 7.0}))}
    assert not slow["darts:2 / milenas"]["holds"] and not slow["milenas:2 / darts:2"]["holds"]
    assert "does NOT hold" in bench.format_ratio(slow["darts:2 / milenas"])
    assert set(slow) == {"darts:2 / milenas", "milenas:2 / darts:2"}  # no baseline, no ratios over it
    assert bench.step_ratios(_rows(darts=1.0)) == []


def test_sweep_with_injected_load_readings(tmp_path, capsys, monkeypatch):
    # readings in call order: the peak (quiet), the batch-2 point (others hold 1.5 cores), the batch-4 point
    # (no /proc/stat); every reading one second after the last, the bench's own CPU time 0
    busy = iter([0.0, 0.0, 10.0, 11.5, None, None])
    clock = iter(range(100))
    monkeypatch.setattr(bench, "read_cpu", lambda: CpuReading(next(busy), 0.0, float(next(clock)), (0.5, 0.5, 0.5)))
    monkeypatch.setattr(bench, "PEAK_SECONDS", 0.05)
    out = tmp_path / "bench.json"
    assert main(["bench", *TINY, "--sweep", "batch=2,4", "--methods", "darts", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    settings = result["settings"]
    assert settings["sweep"] == {"key": "batch", "values": [2, 4]} and settings["batch"] is None
    assert settings["threads"] == 1 and settings["threads_reason"] == "given"
    assert settings["peak_gflops_per_sec"] > 0 and settings["peak"]["load_warning"] is None
    rows = result["results"]
    assert [(r["method"], r["batch"], r["cells"], r["channels"]) for r in rows] == [("darts", 2, 1, 4),
                                                                                    ("darts", 4, 1, 4)]
    assert [p["batch"] for p in result["points"]] == [2, 4]
    for r in rows:
        assert r["sec_per_step"] > 0 and r["peak_memory_gb"] > 0.05
        assert r["flops_per_step"] > 0
        assert r["gflops_per_sec"] == pytest.approx(r["flops_per_step"] / r["sec_per_step"] / 1e9)
        assert r["peak_share"] == pytest.approx(r["gflops_per_sec"] / settings["peak_gflops_per_sec"])
    # twice the batch, twice the FLOPs of the convolutions and matmuls
    assert rows[1]["flops_per_step"] == pytest.approx(2 * rows[0]["flops_per_step"], rel=0.01)
    assert rows[0]["load"]["others_cores"] == 1.5 and "1.50 CPU cores" in rows[0]["load_warning"]
    assert not rows[1]["load"]["readable"] and "could not be read" in rows[1]["load_warning"]
    assert "could not be read" in result["load_warning"]
    assert "1.50 CPU cores meanwhile" in printed and "could not be read" in printed
    header, line = printed[printed.index("\nbatch ") + 1:].splitlines()[:2]
    assert header.split() == ["batch", "2", "4"] and line.startswith("darts ") and line.count(" GB") == 2


def test_a_real_bench_beside_a_busy_loop_warns(tmp_path, capsys, monkeypatch):
    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc/stat: the load cannot be read here (test_others_load_and_its_warning covers it)")
    monkeypatch.setattr(bench, "PEAK_SECONDS", 0.05)
    out = tmp_path / "bench.json"
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert main(["bench", *TINY, "--warmup", "1", "--batch", "2", "--methods", "forward-backward",
                     "--out", str(out)]) == 0
    finally:
        spinner.kill()
        spinner.wait()
    (row,) = json.loads(out.read_text())["results"]
    assert row["load"]["others_cores"] > bench.LOAD_THRESHOLD_CORES and "not comparable" in row["load_warning"]
    assert "not comparable" in capsys.readouterr().out
    # counted over the warm-up step: the FLOPs of the same forward-backward pass counted here
    from gradnas.space import build_supernet
    model = build_supernet("nb201", bench.space_config("nb201", cells=1, channels=4), "softmax", in_channels=3,
                           num_classes=10, seed=0)
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,))
    assert row["flops_per_step"] == bench.count_flops(lambda: F.cross_entropy(model(x), y).backward())


@pytest.mark.parametrize("args, message", [
    (["--sweep", "batch=2,4", "--sweep", "cells=1,2"], "--sweep given 2 times: one swept key per run"),
    (["--sweep", "lr=1,2"], "KEY one of batch, cells, channels"),
    (["--sweep", "batch"], "give KEY=V1,V2,..."),
    (["--sweep", "batch=2,x"], "distinct whole numbers >= 1"),
    (["--sweep", "batch=0,2"], "distinct whole numbers >= 1"),
    (["--sweep", "batch=2,2"], "distinct whole numbers >= 1"),
    (["--sweep", "batch=2,4", "--batch", "8"], "leave --batch out"),
    (["--sweep", "channels=4,8", "--train"], "does not go with --train"),
    (["--threads", "many"], "give a whole number of threads or auto"),
    (["--threads", "0"], "give a number from 1 to"),
])
def test_bad_bench_input_is_one_line(capsys, args, message):
    assert main(["bench", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradnas: error: ") and message in err and err.count("\n") == 1
