"""Messages through the `gradnas` logger (gradnas.log): the CLI says them on stderr (info lines as they are,
warnings as `gradnas: warning:`), `--quiet` keeps warnings and errors only, `-v` adds debug lines, a captured
stderr (not a terminal) has no progress-bar frames, and library use prints nothing unless the application
configures logging."""
import logging

from gradnas.cli import main
from gradnas.config import SearchConfig
from gradnas.search.loop import Search

FMNIST = "/usr/share/datasets/fashion-mnist"
TINY = ["search", "--method", "milenas", "--relax", "softmax", "--dataset", "fashion-mnist", "--data-dir", FMNIST, "--epochs", "1", "--batch-size", "16",
        "--cells", "3", "--channels", "4", "--set", "supernet.nodes=2", "--set", "data.subset=64", "--set",
        "data.eval_batches=1", "--device", "cpu", "--threads", "1", "--collapse-threshold", "0.01"]


def test_cli_messages_levels_and_no_bar_frames_off_a_terminal(tmp_path, capsys):
    assert main([*TINY, "-v", "--out", str(tmp_path / "a")]) == 0
    out, err = capsys.readouterr()
    assert "\r" not in err and "\r" not in out  # no tqdm frames: stderr is not a terminal
    assert "epoch 1/1  train acc" in err  # the per-epoch progress line, an info message
    assert "gradnas: debug: search in" in err
    assert err.count("gradnas: warning: after epoch 1,") == 1  # the collapse warning
    assert "run folder:" in out and "run folder:" not in err  # the command's results stay on stdout

    assert main([*TINY, "--quiet", "--out", str(tmp_path / "b")]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() and all(line.startswith("gradnas: warning:") for line in err.splitlines()), err
    assert "run folder:" in out
    # a resume's message is an info line: not with --quiet, and said without it
    assert main(["search", "--resume", str(tmp_path / "b"), "--quiet"]) == 0
    assert "resuming" not in capsys.readouterr().err
    assert main(["search", "--resume", str(tmp_path / "b")]) == 0
    assert f"resuming {tmp_path / 'b'} after epoch 1/1" in capsys.readouterr().err


def test_library_use_prints_nothing_unless_configured(tmp_path, capsys, caplog, monkeypatch):
    gradnas_logger = logging.getLogger("gradnas")  # as the package leaves it (conftest shows the messages)
    monkeypatch.setattr(gradnas_logger, "handlers", [h for h in gradnas_logger.handlers
                                                     if type(h) is logging.NullHandler])
    monkeypatch.setattr(gradnas_logger, "propagate", True)
    monkeypatch.setattr(gradnas_logger, "level", logging.NOTSET)
    assert gradnas_logger.handlers  # the package's NullHandler
    cfg = SearchConfig.from_dict({
        "method": "milenas", "epochs": 1, "batch_size": 16, "device": "cpu", "threads": 1,
        "data": {"dataset": "fashion-mnist", "data_dir": FMNIST, "subset": 64, "eval_batches": 1},
        "supernet": {"cells": 3, "channels": 4, "nodes": 2}, "collapse": {"threshold": 0.01}})
    with caplog.at_level(logging.INFO, logger="gradnas"):
        Search(cfg, tmp_path / "run", progress=True).run()
    assert capsys.readouterr() == ("", "")  # no bar (not a terminal), no message: logging is the application's
    said = {(r.name, r.levelno) for r in caplog.records}
    assert ("gradnas.search.callbacks", logging.WARNING) in said and ("gradnas.run", logging.INFO) in said
