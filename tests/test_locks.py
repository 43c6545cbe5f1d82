"""Run folders: one writer at a time (an flock held for the life of a run, let go by the OS however the process
ends), no half-made folders after a failed start, thread counts the machine can give, and messages that say
what a folder really holds."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import cli_fails as _fails
from gradnas.cli import main
from gradnas.errors import GradnasError
from gradnas.run import LOCK_FILE, RunFolder, available_cores
from gradnas.search.loop import Search

from test_cli import TINY
from test_search import tiny_config
from test_train import folder, _private_cache  # noqa: F401  (fixtures)

SEARCH = ["search", *TINY, "--threads", "1"]
GENO = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}


def _start(args):
    return subprocess.Popen([sys.executable, "-m", "gradnas", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())


def _epochs(run):
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


# -------------------------------------------------------------------------------- one writer per folder

def test_two_searches_on_one_folder_one_is_refused_the_other_finishes_intact(tmp_path):
    run = tmp_path / "run"
    args = [*SEARCH, "--epochs", "3", "--out", run]
    first = _start(args)
    time.sleep(0.3)
    second = _start(args)
    results = [(p, *p.communicate(timeout=600)) for p in (first, second)]
    codes = sorted(p.returncode for p, _, _ in results)
    assert codes == [0, 2], [err for _, _, err in results]
    winner, loser = (results if results[0][0].returncode == 0 else results[::-1])
    error = [l for l in loser[2].splitlines() if l.startswith("gradnas: error:")]
    assert len(error) == 1 and "in use by another gradnas run" in error[0], loser[2]
    assert f"pid {winner[0].pid}" in error[0]
    assert "Traceback" not in loser[2]
    assert _epochs(run) == [1, 2, 3]  # no interleaved or lost lines
    assert json.loads((run / "summary.json").read_text())["finished"] is True
    assert json.loads((run / "genotype.json").read_text())["string"] in winner[1]


def test_two_resumes_of_one_folder_do_not_duplicate_metrics_and_a_sigkilled_holder_leaves_it_unlocked(tmp_path):
    run = tmp_path / "run"
    args = [*SEARCH, "--epochs", "4", "--set", "data.subset=256", "--out", run]
    proc = _start(args)
    deadline = time.time() + 300
    while not (run / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # the lock goes with the process
    proc.wait()
    resume = ["search", "--resume", run, "--quiet"]
    a = _start(resume)
    time.sleep(0.3)
    b = _start(resume)
    (_, err_a), (_, err_b) = a.communicate(timeout=600), b.communicate(timeout=600)
    assert sorted([a.returncode, b.returncode]) == [0, 2], (err_a, err_b)
    assert "in use by another gradnas run" in (err_a if a.returncode else err_b)
    assert _epochs(run) == [1, 2, 3, 4]


def test_the_lock_names_the_holder_and_is_let_go_after_the_run(tmp_path):
    holder = RunFolder(tmp_path / "run", command="search", holds="a search")
    holder.prepare({"method": "milenas"}, resume=False)
    assert (tmp_path / "run" / LOCK_FILE).read_text().strip() == str(os.getpid())
    with pytest.raises(GradnasError, match=rf"in use by another gradnas run \(pid {os.getpid()}, this very process"):
        Search(tiny_config(epochs=1), tmp_path / "run", progress=False)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [LOCK_FILE, "config.yaml", "metrics.jsonl"]
    holder.unlock()
    search = Search(tiny_config(epochs=1), tmp_path / "other", progress=False)
    search.run()
    Search(tiny_config(epochs=1), tmp_path / "other", resume=True, progress=False).close()  # let go after run()


def test_a_sweep_point_held_by_another_run_is_reported_with_the_holder(capsys, tmp_path):
    point = tmp_path / "sweep" / "milenas-lam1-s0"
    point.mkdir(parents=True)
    holder = RunFolder(point, command="search", holds="a search")
    holder.lock()
    try:
        rc = main(["sweep", *TINY, "--threads", "1", "--methods", "milenas", "--seeds", "0", "--out",
                   str(tmp_path / "sweep")])
    except GradnasError as exc:
        rc, message = 2, str(exc)
    else:
        message = ""
    err = capsys.readouterr().err
    holder.unlock()
    assert rc != 0
    assert "1 of 1 runs failed" in message or "1 of 1 runs failed" in err
    assert "in use by another gradnas run" in err and f"pid {os.getpid()}" in err
    assert not (point / "config.yaml").exists()  # the point wrote nothing into the held folder


# -------------------------------------------------------------------------------- no half-made folders

@pytest.mark.parametrize("bad, needle", [(["--device", "mps"], "device 'mps'"),
                                         (["--data-dir", "/nonexistent/data"], "/nonexistent/data")])
def test_a_failed_search_start_leaves_no_folder(capsys, tmp_path, bad, needle):
    _fails(capsys, [*SEARCH, *bad, "--out", tmp_path / "run"], needle)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("bad, needle", [(["--device", "mps"], "device 'mps'"),
                                         (["--data-dir", "/nonexistent/data"], "/nonexistent/data")])
def test_a_failed_training_start_leaves_no_folder(capsys, tmp_path, folder, bad, needle):  # noqa: F811
    args = ["train", "--genotype", GENO, "--setting", "nb201", "--dataset", "imagefolder", "--data-dir", folder,
            "--epochs", "1", "--batch-size", "4", "--cells", "1", "--channels", "4", "--quiet", "--threads", "1"]
    _fails(capsys, [*args, *bad, "--out", tmp_path / "run"], needle)
    assert not (tmp_path / "run").exists()


def test_an_error_after_the_folder_is_made_removes_only_what_this_start_wrote(tmp_path, monkeypatch):
    from gradnas.search import gradient
    monkeypatch.setattr(gradient, "build_supernet", lambda *a, **k: (_ for _ in ()).throw(
        GradnasError("injected after the folder was made")))
    with pytest.raises(GradnasError, match="injected"):
        Search(tiny_config(epochs=1), tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()  # made by this start: gone
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(GradnasError, match="injected"):
        Search(tiny_config(epochs=1), kept, progress=False)
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]  # what was there before stays, alone


# -------------------------------------------------------------------------------- threads

@pytest.mark.parametrize("threads", ["100000", "0", "-2"])
def test_threads_beyond_the_machine_are_refused_before_the_folder(capsys, tmp_path, folder, threads):  # noqa: F811
    _fails(capsys, [*SEARCH, "--threads", threads, "--out", tmp_path / "s"], "threads")
    _fails(capsys, ["train", "--genotype", GENO, "--setting", "nb201", "--dataset", "imagefolder", "--data-dir",
                    folder, "--threads", threads, "--quiet", "--out", tmp_path / "t"], "threads")
    assert not (tmp_path / "s").exists() and not (tmp_path / "t").exists()


def test_threads_message_names_the_cores(capsys, tmp_path):
    _fails(capsys, [*SEARCH, "--threads", "100000", "--out", tmp_path / "s"], f"from 1 to {available_cores()}")


# -------------------------------------------------------------------------------- what a folder holds

@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "search"
    assert main([*SEARCH, "--out", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def train_run(tmp_path_factory, folder):  # noqa: F811
    run = tmp_path_factory.mktemp("runs") / "train"
    assert main(["train", "--genotype", GENO, "--setting", "nb201", "--dataset", "imagefolder", "--data-dir",
                 str(folder), "--epochs", "1", "--batch-size", "4", "--cells", "1", "--channels", "4", "--quiet",
                 "--threads", "1", "--device", "cpu", "--out", str(run)]) == 0
    return run


def test_new_run_in_a_folder_of_the_other_kind_says_what_it_holds(capsys, search_run, train_run, folder):  # noqa: F811
    _fails(capsys, ["train", "--genotype", GENO, "--setting", "nb201", "--dataset", "imagefolder", "--data-dir",
                    folder, "--batch-size", "4", "--threads", "1", "--quiet", "--out", search_run],
           "already holds a search", f"gradnas search --resume {search_run}", f"gradnas train --genotype {search_run}")
    _fails(capsys, [*SEARCH, "--out", train_run], "already holds a training run",
           f"gradnas train --resume {train_run}")


def test_resuming_a_search_folder_with_a_training_checkpoint_names_the_training(capsys, tmp_path, search_run,
                                                                                 train_run):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(search_run, run)
    shutil.copy(train_run / "checkpoint.pt", run / "checkpoint.pt")
    _fails(capsys, ["search", "--resume", run], "written by a training run", f"gradnas train --resume {run}")


@pytest.mark.parametrize("command", ["search", "train"])
def test_out_with_resume_is_refused(capsys, tmp_path, search_run, train_run, command):
    run = search_run if command == "search" else train_run
    _fails(capsys, [command, "--resume", run, "--out", tmp_path / "elsewhere"], "drop --out")
    assert not (tmp_path / "elsewhere").exists()
