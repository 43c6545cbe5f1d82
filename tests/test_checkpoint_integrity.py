"""Checkpoint integrity: a checksum in every checkpoint (a flipped byte is found on load), the previous checkpoint
kept next to it, checkpoints of the older format still resumed, and a schema check of the fields a resume reads
(a crafted checkpoint is one error, never a traceback or a run of epochs -4..3)."""
import io
import shutil

import pytest
import torch

from conftest import cli_fails as _fails
from gradnas.checkpoint import FORMAT, load_checkpoint, previous_path, save_checkpoint
from gradnas.cli import main
from gradnas.errors import GradnasError

from test_cli import TINY


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """A finished two-epoch search (copied per test)."""
    run = tmp_path_factory.mktemp("runs") / "run"
    assert main(["search", *TINY, "--epochs", "2", "--out", str(run)]) == 0
    return run


def _copy(run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def test_checkpoint_has_a_checksum_and_the_previous_one_is_kept(two_epochs):
    ckpt = two_epochs / "checkpoint.pt"
    assert ckpt.read_bytes().startswith(FORMAT.encode() + b" sha256=")
    assert load_checkpoint(ckpt)["epoch"] == 2
    assert load_checkpoint(previous_path(ckpt))["epoch"] == 1
    assert previous_path(ckpt).name == "checkpoint.prev.pt"


def test_a_flipped_byte_is_found_and_the_error_says_how_to_resume_from_the_previous_one(capsys, tmp_path,
                                                                                        two_epochs):
    run = _copy(two_epochs, tmp_path)
    ckpt = run / "checkpoint.pt"
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0x10  # one bit, in the middle (a weight, today silently changed)
    ckpt.write_bytes(bytes(data))
    with pytest.raises(GradnasError, match="SHA-256"):
        load_checkpoint(ckpt)
    line = _fails(capsys, ["search", "--resume", run], str(ckpt), "checksum", f"mv {run / 'checkpoint.prev.pt'}")
    assert ckpt.read_bytes() == bytes(data)  # left as it was, for the user to look at
    # the fix the message gives works: the previous checkpoint resumes after epoch 1
    shutil.move(run / "checkpoint.prev.pt", ckpt)
    assert main(["search", "--resume", str(run)]) == 0  # not --quiet: "resuming ..." is an info line
    assert "after epoch 1/2" in capsys.readouterr().err
    assert load_checkpoint(ckpt)["epoch"] == 2
    assert line


def test_a_checkpoint_of_the_older_format_without_checksum_still_resumes(capsys, tmp_path, two_epochs):
    run = _copy(two_epochs, tmp_path)
    state = load_checkpoint(run / "checkpoint.pt")
    state.update(format="gradnas.checkpoint/1", epoch=1)
    torch.save(state, run / "checkpoint.pt")  # what gradnas wrote before checksums: a bare torch.save zip
    (run / "summary.json").unlink()
    assert main(["search", "--resume", str(run)]) == 0  # not --quiet: "resuming ..." is an info line
    err = capsys.readouterr().err
    assert "older format 'gradnas.checkpoint/1'" in err and "after epoch 1/2" in err
    assert load_checkpoint(run / "checkpoint.pt")["format"] == FORMAT  # rewritten with a checksum


def test_a_crash_never_pairs_a_new_payload_with_an_old_checksum(tmp_path):
    # the checksum is in the same file as the bytes it covers, and the file is renamed into place whole
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    assert load_checkpoint(path)["epoch"] == 2 and load_checkpoint(previous_path(path))["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]


def _crafted(run, change):
    state = load_checkpoint(run / "checkpoint.pt")
    change(state)
    save_checkpoint(state, run / "checkpoint.pt")  # with a valid checksum: only the schema check can see it


def _drop(key):
    return lambda state: state.pop(key)


def _set(key, value):
    return lambda state: state.__setitem__(key, value)


def _bad_sizes(state):
    state["sizes"]["best"] = [{"normal_convs": "many"}]


def _training_config(state):
    state["config"] = {"epochs": 2, "batch_size": 8, "precision": "fp32", "network": {"cells": 3}}


@pytest.mark.parametrize("change, needles", [
    (_set("epoch", -5), ["epoch -5", "between 0 and 2"]),
    (_set("epoch", 10**9), ["epoch 1000000000", "between 0 and 2"]),
    (_set("epoch", 1e9), ["epoch 1000000000.0"]),
    (_set("epoch", "abc"), ["epoch 'abc'"]),
    (_set("step", -1), ["step -1"]),
    (_drop("config"), ["has no config"]),
    (_training_config, ["written by a training run", "gradnas train --resume"]),
    (_drop("model"), ["does not match this search"]),
    (_bad_sizes, ["'sizes' entry is damaged"]),
], ids=["epoch-negative", "epoch-huge", "epoch-float", "epoch-str", "step-negative", "config-missing",
        "config-training", "model-missing", "sizes-entry"])
def test_a_crafted_checkpoint_is_refused_with_one_error(capsys, tmp_path, two_epochs, change, needles):
    run = _copy(two_epochs, tmp_path)
    (run / "summary.json").unlink()
    _crafted(run, change)
    before = (run / "metrics.jsonl").read_text()
    _fails(capsys, ["search", "--resume", run], *needles)
    assert (run / "metrics.jsonl").read_text() == before  # nothing rewritten


def test_the_payload_is_what_torch_save_wrote(tmp_path):
    # the file is a header line and torch.save's bytes: readable without gradnas, by stripping the line
    path = tmp_path / "c.pt"
    save_checkpoint({"epoch": 3}, path)
    head, _, payload = path.read_bytes().partition(b"\n")
    assert head.startswith(FORMAT.encode())
    assert torch.load(io.BytesIO(payload), weights_only=True) == {"format": FORMAT, "epoch": 3}
