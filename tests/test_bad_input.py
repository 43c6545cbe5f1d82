"""The catalogue of bad input, through the command line: each case must end with exactly one
`gradnas: error: ...` line naming the problem (and the fix), exit status 2, no traceback, and leave
what was on disk as it was. Untrusted files (pickles, YAML tags) are refused without running anything."""
import gzip
import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import cli_fails as _fails
from gradnas.checkpoint import load_checkpoint
from gradnas.cli import main

from test_cli import TINY
from test_data import cifar_fixtures, cifar_members  # noqa: F401  (fixtures: a real CIFAR-10 slice)

FMNIST = "/usr/share/datasets/fashion-mnist"
SEARCH = ["search", *TINY]


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _folder(root, *, classes=2, per_class=4, size=(8, 8)):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(classes):
            for i in range(per_class):
                _png(root / split / f"c{c}" / f"{i}.png", rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    return root


def _fashion_copy(tmp_path):
    d = tmp_path / "fmnist"
    shutil.copytree(FMNIST, d)
    return d


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished one-epoch search to break in different ways (copied per test)."""
    run = tmp_path_factory.mktemp("runs") / "run"
    assert main([*SEARCH, "--out", str(run)]) == 0
    return run


def _copy_run(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    return run


# -------------------------------------------------------------------------------- data

def test_missing_data_dir(capsys, tmp_path):
    _fails(capsys, [*SEARCH, "--data-dir", tmp_path / "nowhere", "--out", tmp_path / "o"], "does not exist",
           str(tmp_path / "nowhere"))


def test_unknown_dataset(capsys, tmp_path):
    _fails(capsys, [*SEARCH, "--dataset", "mnist", "--out", tmp_path / "o"], "unknown dataset 'mnist'", "fashion-mnist")
    assert not (tmp_path / "o").exists()  # refused before a run folder is made


def test_truncated_idx(capsys, tmp_path):
    d = _fashion_copy(tmp_path)
    images = d / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:5000])
    _fails(capsys, [*SEARCH, "--data-dir", d, "--out", tmp_path / "o"], "truncated or corrupt", str(images))


def test_corrupt_idx_header(capsys, tmp_path):
    d = _fashion_copy(tmp_path)
    labels = d / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(b"\x12\x34\x56\x78" + bytes(100)))
    _fails(capsys, [*SEARCH, "--data-dir", d, "--out", tmp_path / "o"], "not an IDX file", str(labels))


def test_corrupt_image_in_folder(capsys, tmp_path):
    root = _folder(tmp_path / "imgs")
    bad = root / "train" / "c1" / "2.png"
    bad.write_bytes(b"\x89PNG but not really")
    _fails(capsys, [*SEARCH, "--dataset", "imagefolder", "--data-dir", root, "--set", "data.subset=8",
                    "--batch-size", "2", "--out", tmp_path / "o"], "cannot decode image", str(bad))


def test_truncated_jpeg_in_folder(capsys, tmp_path, cifar_members):  # noqa: F811
    root = tmp_path / "imgs"
    for i, (name, data) in enumerate(sorted(cifar_members.items())[:8]):
        p = root / f"c{i % 2}" / f"{i}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    bad = root / "c0" / "0.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    _fails(capsys, [*SEARCH, "--dataset", "imagefolder", "--data-dir", root, "--out", tmp_path / "o"],
           "cannot decode image", str(bad))


def test_corrupt_cifar_pickle(capsys, tmp_path, cifar_fixtures):  # noqa: F811
    batches = tmp_path / "cifar-10-batches-py"
    shutil.copytree(cifar_fixtures["pickle"], batches)
    data = (batches / "data_batch_1").read_bytes()
    (batches / "data_batch_1").write_bytes(data[: len(data) // 3])
    _fails(capsys, [*SEARCH, "--dataset", "cifar10", "--data-dir", batches, "--out", tmp_path / "o"],
           "data_batch_1 is truncated or corrupt")


def test_crafted_cifar_pickle_never_runs(capsys, tmp_path, cifar_fixtures):  # noqa: F811
    batches = tmp_path / "cifar-10-batches-py"
    shutil.copytree(cifar_fixtures["pickle"], batches)
    marker = tmp_path / "payload-ran"
    (batches / "data_batch_1").write_bytes(pickle.dumps(_Payload(marker)))
    _fails(capsys, [*SEARCH, "--dataset", "cifar10", "--data-dir", batches, "--out", tmp_path / "o"],
           "refusing to load")
    assert not marker.exists()


def test_folder_with_one_class(capsys, tmp_path):
    root = _folder(tmp_path / "imgs", classes=1)
    _fails(capsys, [*SEARCH, "--dataset", "imagefolder", "--data-dir", root, "--out", tmp_path / "o"],
           "only one class", "at least 2 classes")


def test_folder_with_mixed_sizes(capsys, tmp_path):
    root = _folder(tmp_path / "imgs")
    _png(root / "train" / "c0" / "odd.png", np.zeros((10, 6, 3), np.uint8))
    _fails(capsys, [*SEARCH, "--dataset", "imagefolder", "--data-dir", root, "--out", tmp_path / "o"],
           "same size", "odd.png")


# -------------------------------------------------------------------------------- checkpoints

def test_corrupt_checkpoint(capsys, tmp_path, finished_run):
    run = _copy_run(finished_run, tmp_path)
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    _fails(capsys, ["search", "--resume", run], "corrupt or not a gradnas checkpoint", "delete it")
    assert (run / "checkpoint.pt").read_bytes() == data[: len(data) // 2]  # left for the user to look at


def test_foreign_checkpoint(capsys, tmp_path, finished_run):
    run = _copy_run(finished_run, tmp_path)
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, run / "checkpoint.pt")  # someone else's
    _fails(capsys, ["search", "--resume", run], "not a gradnas checkpoint")


def test_training_folder_is_not_a_search(capsys, tmp_path, finished_run):
    run = _copy_run(finished_run, tmp_path)
    _fails(capsys, ["train", "--resume", run], "is a search run folder", f"gradnas train --genotype {run}")


def test_checkpoint_from_another_config(capsys, tmp_path, finished_run):
    run = _copy_run(finished_run, tmp_path)
    other = tmp_path / "other"
    assert main([*SEARCH, "--seed", "9", "--out", str(other), "--epochs", "2"]) == 0
    capsys.readouterr()
    shutil.copy(other / "checkpoint.pt", run / "checkpoint.pt")
    _fails(capsys, ["search", "--resume", run], "written with another config")


def test_crafted_pickle_checkpoint_never_runs(capsys, tmp_path, finished_run):
    run = _copy_run(finished_run, tmp_path)
    marker = tmp_path / "payload-ran"
    torch.save({"format": "gradnas.checkpoint/1", "model": _Payload(marker)}, run / "checkpoint.pt")
    _fails(capsys, ["search", "--resume", run], "corrupt or not a gradnas checkpoint")
    assert not marker.exists()
    (run / "checkpoint.pt").write_bytes(pickle.dumps(_Payload(marker)))  # a bare (legacy format) pickle
    _fails(capsys, ["search", "--resume", run], "corrupt or not a gradnas checkpoint")
    assert not marker.exists()


class _Payload:
    """A pickle that would create ``marker`` when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# -------------------------------------------------------------------------------- genotypes

def _geno_file(tmp_path, finished_run, edit):
    """The DARTS paper's cell as genotype JSON, edited."""
    from gradnas.cli import DARTS_V2
    from gradnas.space.genotype import Genotype, save_genotype
    save_genotype(Genotype.from_string(DARTS_V2), tmp_path / "v2.json")
    d = json.loads((tmp_path / "v2.json").read_text())
    edit(d)
    p = tmp_path / "geno.json"
    p.write_text(json.dumps(d))
    return p


def test_genotype_with_unknown_op(capsys, tmp_path, finished_run):
    def edit(d):
        d["normal"][0][0] = "conv_7x7_evil"
        d.pop("string", None)
    p = _geno_file(tmp_path, finished_run, edit)
    _fails(capsys, ["genotype", p], "op 'conv_7x7_evil' is not in the space")
    _fails(capsys, ["train", "--genotype", p, "--out", tmp_path / "t"], "conv_7x7_evil")


def test_genotype_with_wrong_node_index(capsys, tmp_path, finished_run):
    def edit(d):
        d["normal"][0][1] = 7
        d.pop("string", None)
    p = _geno_file(tmp_path, finished_run, edit)
    _fails(capsys, ["genotype", p], "node 2: input 7 is out of range")


def test_genotype_of_the_wrong_space(capsys, tmp_path):
    nb201 = "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|"
    _fails(capsys, ["genotype", nb201, "--space", "darts"], "a cell of the 'nb201' space, not of 'darts'")


def test_genotype_json_that_is_code(capsys, tmp_path):
    p = tmp_path / "geno.json"
    p.write_text("__import__('os').system('touch %s')" % (tmp_path / "payload-ran"))
    _fails(capsys, ["genotype", p])
    assert not (tmp_path / "payload-ran").exists()


def test_genotype_json_nested_too_deep(capsys, tmp_path):
    p = tmp_path / "deep.json"
    p.write_text('{"normal": ' + "[" * 100_000 + "]" * 100_000 + "}")
    _fails(capsys, ["genotype", p], f"genotype file {p} is not valid JSON", "maximum recursion depth")
    _fails(capsys, ["draw", p], "is not valid JSON")


# -------------------------------------------------------------------------------- split.json on resume

@pytest.mark.parametrize("damage,needle", [
    (lambda d: '{"seed": 0, "fraction": 0.5, "weight_idx": [1, 2', "is damaged (it is not valid JSON)"),
    (lambda d: b"\xe9\xe9", "is damaged (it is not UTF-8 text)"),
    (lambda d: "[" * 100_000 + "]" * 100_000, "is damaged (it is not valid JSON)"),
    (lambda d: "[]", "is damaged: invalid search split record"),
    (lambda d: json.dumps({**d, "weight_idx": [10**9]}), "it lists image 1000000000, but the training set has"),
    (lambda d: json.dumps({**d, "arch_idx": [10**30]}), "is damaged: invalid search split record"),
], ids=["truncated", "not-utf8", "too-deep", "a-list", "index-out-of-range", "index-overflow"])
def test_damaged_split_on_resume(capsys, tmp_path, finished_run, damage, needle):
    run = _copy_run(finished_run, tmp_path)
    broken = damage(json.loads((run / "split.json").read_text()))
    (run / "split.json").write_bytes(broken if isinstance(broken, bytes) else broken.encode())
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    _fails(capsys, ["search", "--resume", run], str(run / "split.json"), needle,
           "start the search again with a new --out")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # nothing lost


# -------------------------------------------------------------------------------- configs and numbers

def test_malformed_yaml(capsys, tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("epochs: [1, 2\nmethod: milenas\n")
    _fails(capsys, ["search", "--config", p], "not valid YAML", str(p))


def test_yaml_tags_never_run(capsys, tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text(f"epochs: !!python/object/apply:os.system ['touch {tmp_path / 'payload-ran'}']\n")
    _fails(capsys, ["search", "--config", p], "not valid YAML")
    assert not (tmp_path / "payload-ran").exists()


def test_unknown_config_keys(capsys, tmp_path):
    p = tmp_path / "typo.yaml"
    p.write_text("method: milenas\nepoch: 5\n")
    _fails(capsys, ["search", "--config", p], "unknown key 'epoch'", "epochs")
    _fails(capsys, [*SEARCH, "--set", "w_optim.learning_rate=0.1"], "unknown key", "learning_rate")


@pytest.mark.parametrize("flags,needle", [
    (["--epochs", "-1"], "epochs must be >= 1"),
    (["--lambda", "-0.5"], "lambda must be a finite number >= 0"),
    (["--batch-size", "0"], "batch_size must be >= 1"),
    (["--relax", "gumbel", "--set", "gumbel.tau_min=0"], "0 < tau_min"),
    (["--relax", "gumbel", "--set", "gumbel.tau_max=-1"], "0 < tau_min <= tau_max"),
    (["--set", "w_optim.lr=-0.1"], "w_optim.lr must be a finite number > 0"),
    (["--set", "data.split_fraction=1.5"], "split_fraction"),
])
def test_out_of_range_numbers(capsys, tmp_path, flags, needle):
    _fails(capsys, [*SEARCH, *flags, "--out", tmp_path / "o"], needle)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("assignment,needle", [
    # what torch.optim would refuse with a traceback
    ("w_optim.momentum=-1", "w_optim.momentum must be a finite number >= 0, got -1"),
    ("w_optim.weight_decay=-1", "w_optim.weight_decay must be a finite number >= 0, got -1"),
    ("arch_optim.weight_decay=-1", "arch_optim.weight_decay must be a finite number >= 0 or null"),
    ("arch_optim.betas=[2,3]", "arch_optim.betas must be two numbers in [0, 1)"),
    ("arch_optim.betas=[0.5]", "arch_optim.betas must be two numbers in [0, 1)"),
    ("arch_optim.betas=[a,b]", "arch_optim.betas must be two numbers in [0, 1)"),
    # numbers out of every range, or no numbers at all
    ("seed=1e23", "seed must be an integer in [0, 4294967295]"),
    ("seed=100000000000000000000000", "seed must be an integer in [0, 4294967295]"),
    ("seed=1e999999999", "seed must be an integer, got inf"),  # YAML reads it as inf
    ("seed=1" + "0" * 5000, "seed is too large for a setting"),  # past Python's int digit limit
    ("w_optim.lr_min=0.5", "w_optim.lr_min (the cosine schedule's floor, 0.5) must be <= w_optim.lr (0.025)"),
    ("w_optim.lr=inf", "w_optim.lr must be a finite number > 0, got inf"),
    ("w_optim.lr=nan", "w_optim.lr must be a number, got NaN"),
    ("w_optim.lr=1" + "0" * 400, "w_optim.lr is too large for a number"),
    ("epochs=1.5", "epochs must be an integer, got 1.5"),
    ("w_optim={lr: 0.1, lr: 0.2}", "key 'lr' appears twice"),
])
def test_bad_search_settings(capsys, tmp_path, assignment, needle):
    _fails(capsys, [*SEARCH, "--set", assignment, "--out", tmp_path / "o"], needle)
    assert not (tmp_path / "o").exists()


TRAIN = ["train", "--genotype", "normal=|sep_conv_3x3~0|skip_connect~1|+|dil_conv_3x3~1|max_pool_3x3~2|;"
         "reduce=|max_pool_3x3~0|skip_connect~1|+|sep_conv_5x5~0|avg_pool_3x3~2|", "--dataset", "fashion-mnist",
         "--data-dir", FMNIST, "--epochs", "1", "--batch-size", "8", "--cells", "3", "--channels", "4", "--set",
         "data.subset=16", "--device", "cpu", "--quiet", "--threads", "1"]


@pytest.mark.parametrize("assignment,needle", [
    ("optim.momentum=-1", "optim.momentum must be a finite number >= 0, got -1"),
    ("optim.weight_decay=-1", "optim.weight_decay must be a finite number >= 0, got -1"),
    ("optim.lr=inf", "optim.lr must be a finite number > 0, got inf"),
    ("seed=1e23", "seed must be an integer in [0, 4294967295]"),
    ("optim.lr_min=1", "optim.lr_min must be in [0, lr]"),
    ("optim={lr: 0.1, lr: 0.2}", "key 'lr' appears twice"),
])
def test_bad_train_settings(capsys, tmp_path, assignment, needle):
    _fails(capsys, [*TRAIN, "--set", assignment, "--out", tmp_path / "o"], needle)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("assignment,needle", [
    ("data.crop_padding=100000", "data.crop_padding (100000) must be smaller than the images' side (28 pixels"),
    ("data.cutout=100000", "data.cutout (100000) must be at most the images' side (28 pixels"),
])
@pytest.mark.parametrize("command", ["search", "train"])
def test_padding_or_cutout_larger_than_the_images(capsys, tmp_path, command, assignment, needle):
    """Refused from the images' size before the run folder is made (no half-made folder)."""
    _fails(capsys, [*(SEARCH if command == "search" else TRAIN), "--set", assignment, "--out", tmp_path / "o"], needle)
    assert not (tmp_path / "o").exists()


def _with_file(kind, path):
    return ["search", "--config", path] if kind == "search" else [*TRAIN, "--setting", path]


@pytest.mark.parametrize("kind", ["search", "train"])
def test_config_file_with_a_duplicate_key(capsys, tmp_path, kind):
    p = tmp_path / "dup.yaml"
    p.write_text("epochs: 1\nbatch_size: 8\nepochs: 3\n")
    _fails(capsys, [*_with_file(kind, p), "--out", tmp_path / "o"], str(p),
           "key 'epochs' appears twice (lines 1 and 3)", "keep one")


@pytest.mark.parametrize("kind", ["search", "train"])
def test_config_file_that_is_not_utf8(capsys, tmp_path, kind):
    p = tmp_path / "latin1.yaml"
    p.write_bytes("epochs: 1\n# r\u00e9glages\n".encode("latin-1"))
    _fails(capsys, [*_with_file(kind, p), "--out", tmp_path / "o"], str(p), "is not UTF-8 text (byte 0xe9 on line 2)",
           "save it with UTF-8 encoding")


def test_unknown_method(capsys, tmp_path):
    _fails(capsys, [*SEARCH, "--method", "enas", "--out", tmp_path / "o"], "unknown method 'enas'", "milenas")


# -------------------------------------------------------------------------------- the machine

def test_output_folder_not_writable(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    _fails(capsys, [*SEARCH, "--out", blocker / "run"], "cannot write to the run folder", "--out")


def test_full_disk_while_writing_a_checkpoint(capsys, tmp_path, finished_run, monkeypatch):
    run = _copy_run(finished_run, tmp_path)
    before = (run / "checkpoint.pt").read_bytes()
    import gradnas.checkpoint as ck

    def full(obj, f, *a, **k):
        f.write(b"x" * 100)
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(ck.torch, "save", full)
    # the run had 1 epoch; a resume with a longer schedule is refused (config), so break a fresh run instead
    _fails(capsys, [*SEARCH, "--out", tmp_path / "new"], "No space left on device", "no earlier checkpoint")
    assert not (tmp_path / "new" / "checkpoint.pt.tmp").exists()  # the partial file is cleaned up
    assert (run / "checkpoint.pt").read_bytes() == before


def test_full_disk_keeps_the_last_good_checkpoint(capsys, tmp_path, monkeypatch):
    out = tmp_path / "run"
    import gradnas.checkpoint as ck
    real, calls = ck.torch.save, [0]

    def fill_up_on_second(obj, f, *a, **k):
        calls[0] += 1
        if calls[0] == 2:
            raise OSError(28, "No space left on device")
        return real(obj, f, *a, **k)
    monkeypatch.setattr(ck.torch, "save", fill_up_on_second)
    _fails(capsys, [*SEARCH, "--epochs", "2", "--out", out], "No space left on device",
           "the previous checkpoint there is intact")
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1


def test_nan_loss_keeps_the_last_good_checkpoint(capsys, tmp_path, monkeypatch):
    from gradnas.search import methods
    real, calls = methods.MixedLevel.step, [0]

    def nan_in_epoch_2(self, *args):
        calls[0] += 1
        stats = real(self, *args)
        if calls[0] > 2:  # TINY has 2 steps per epoch
            stats["train_loss"] = float("nan")
        return stats
    monkeypatch.setattr(methods.MixedLevel, "step", nan_in_epoch_2)
    out = tmp_path / "run"
    _fails(capsys, [*SEARCH, "--method", "milenas", "--epochs", "2", "--out", out],
           "NaN/inf in epoch 2", f"the last good checkpoint (epoch 1) is in {out}")
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1


def test_a_real_process_prints_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = tmp_path / "bad.yaml"
    p.write_text("epochs: [\n")
    proc = subprocess.run([sys.executable, "-m", "gradnas", "search", "--config", str(p)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("gradnas: error: ") and "Traceback" not in proc.stderr


# -------------------------------------------------------------------------------- run folders read back

ANALYSES = [["plot"], ["report"], ["sizes"], ["compare", "--out", "{tmp}/cmp"]]


def _analysis(command, run, tmp_path):
    name, *rest = command
    return [name, str(run), *(a.replace("{tmp}", str(tmp_path)) for a in rest)]


@pytest.mark.parametrize("command", ANALYSES, ids=lambda c: c[0])
def test_metrics_lines_of_the_wrong_types_are_skipped(capsys, tmp_path, finished_run, command):
    run = _copy_run(finished_run, tmp_path)
    good = (run / "metrics.jsonl").read_text().splitlines()
    record = json.loads(good[0])
    bad = [{**record, "valid_acc": "x"}, {**record, "epoch": [1]}, [1, 2], 5, {**record, "train_acc": None,
           "gap": {"acc_gap": "wide"}}, {**record, "edge_weights": {"normal": [0.5]}}, {"valid_acc": 1.0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(b) + "\n" for b in bad) + "\n".join(good) + "\n")
    before = (run / "metrics.jsonl").read_bytes()
    rc = main(_analysis(command, run, tmp_path))
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err, err
    warnings = [line for line in err.splitlines() if line.startswith("gradnas: warning: ") and "skipped" in line]
    assert warnings == [f"gradnas: warning: {run / 'metrics.jsonl'} lines 1, 2, 3, 4, 5, 6, 7 skipped: "
                        "'valid_acc' must be a number, got \"x\" (and more)"], err
    assert (run / "metrics.jsonl").read_bytes() == before


@pytest.mark.parametrize("command", ANALYSES, ids=lambda c: c[0])
def test_run_config_that_is_not_utf8(capsys, tmp_path, finished_run, command):
    run = _copy_run(finished_run, tmp_path)
    with open(run / "config.yaml", "ab") as f:
        f.write("# r\u00e9glages\n".encode("latin-1"))
    _fails(capsys, _analysis(command, run, tmp_path), str(run / "config.yaml"), "is not UTF-8 text",
           "save it with UTF-8 encoding")


@pytest.mark.parametrize("command", [*ANALYSES, ["search", "--resume"]], ids=lambda c: " ".join(c[:2]))
def test_run_config_with_a_duplicate_key(capsys, tmp_path, finished_run, command):
    run = _copy_run(finished_run, tmp_path)
    text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(text + "seed: 7\n")
    line = text.splitlines().index(next(l for l in text.splitlines() if l.startswith("seed:"))) + 1
    argv = [*command, str(run)] if command[0] == "search" else _analysis(command, run, tmp_path)
    _fails(capsys, argv, str(run / "config.yaml"), f"key 'seed' appears twice (lines {line} and "
           f"{len(text.splitlines()) + 1})")
