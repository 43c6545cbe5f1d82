"""Honest epoch selection in training: a held-out validation split (data.valid_fraction) that is never trained
on, measured every epoch, the best epoch's weights kept in best.pt, summary.json's ``selected``, exact resume."""
import json

import pytest
import torch

from gradnas.checkpoint import load_checkpoint
from gradnas.errors import GradnasError
from gradnas.space.genotype import load_genotype
from gradnas.train.config import TrainConfig
from gradnas.train.data import make_valid_split
from gradnas.train.loop import Training

FMNIST = "/usr/share/datasets/fashion-mnist"
GENO = load_genotype("normal=|sep_conv_3x3~0|skip_connect~1|+|dil_conv_3x3~0|max_pool_3x3~2|;"
                     "reduce=|avg_pool_3x3~0|sep_conv_5x5~1|+|skip_connect~1|dil_conv_5x5~2|")


@pytest.fixture(autouse=True)
def _one_thread(_threads):
    torch.set_num_threads(1)


def config(fraction, epochs=3, **data):
    return TrainConfig.from_dict({
        "epochs": epochs, "batch_size": 32, "seed": 4, "device": "cpu", "threads": 1,
        "data": {"dataset": "fashion-mnist", "data_dir": FMNIST, "subset": 128, "crop_padding": 2, "cutout": 4,
                 "test_subset": 256, "valid_fraction": fraction, **data},  # every epoch tests: 256 of the 10k
        "network": {"cells": 3, "channels": 4, "auxiliary_weight": 0.4, "drop_path": 0.2}, "optim": {"lr": 0.05}})


def _lines(run_dir):
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        line.pop("epoch_time")
    return lines


def test_split_is_seeded_disjoint_and_covers_the_pool():
    pool = list(range(10, 110))
    a = make_valid_split(pool, 0.2, 3, num_images=200)
    assert a == make_valid_split(pool, 0.2, 3, num_images=200)
    assert a != make_valid_split(pool, 0.2, 4, num_images=200)
    assert len(a["valid"]) == 20 and len(a["train"]) == 80
    assert not set(a["train"]) & set(a["valid"]) and sorted(a["train"] + a["valid"]) == pool
    with pytest.raises(GradnasError, match="leaves none to train on"):
        make_valid_split([1, 2], 0.9, 0, num_images=5)
    with pytest.raises(GradnasError, match=r"data.valid_fraction must be in \[0, 1\)"):
        config(1.0)


def test_held_out_images_are_never_trained_on(tmp_path):
    cfg = config(0.25, epochs=1, crop_padding=0, flip=False, cutout=0)  # no augmentation: pixels comparable
    training = Training(cfg, GENO, tmp_path / "run", progress=False)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert len(split["valid"]) == 32 and len(split["train"]) == 96 and not set(split["train"]) & set(split["valid"])
    data = training.data
    assert data.num_train == 96 and data.num_valid == 32
    valid = {tuple(x.flatten().tolist()) for xb, _ in data.valid() for x in xb}
    trained = [tuple(x.flatten().tolist()) for e in range(2) for xb, _ in data.epoch(e) for x in xb]
    assert len(valid) == 32 and len(set(trained)) == 96
    assert not valid & set(trained)


def test_best_epoch_is_chosen_on_validation_and_resume_is_exact(tmp_path):
    cfg = config(0.25)
    full = tmp_path / "full"
    summary = Training(cfg, GENO, full, progress=False).run()
    lines = _lines(full)
    assert all("valid_acc" in m and "valid_loss" in m and "test_acc" in m for m in lines)
    top = max(m["valid_acc"] for m in lines)
    best = next(m for m in lines if m["valid_acc"] == top)  # ties: the earlier epoch
    sel = summary["selected"]
    assert sel["epoch"] == best["epoch"] and sel["by"] == "valid_acc" and sel["valid_acc"] == top
    assert sel["test_acc"] == best["test_acc"] and sel["weights"] == "best.pt"
    assert json.loads((full / "summary.json").read_text())["selected"] == sel
    weights = load_checkpoint(full / "best.pt")
    assert not (full / "best.prev.pt").exists()  # only the run's checkpoint keeps its previous one
    assert weights["epoch"] == best["epoch"] and weights["valid_acc"] == top
    # Interrupted after one epoch, resumed: the same split, metrics, choice and kept weights.
    part = tmp_path / "part"
    Training(cfg, GENO, part, progress=False).run(stop_after=1)
    resumed = Training(cfg, GENO, part, resume=True, progress=False)
    assert resumed.run()["selected"] == sel
    assert (part / "split.json").read_text() == (full / "split.json").read_text()
    assert _lines(part) == lines
    again = load_checkpoint(part / "best.pt")
    assert again["epoch"] == weights["epoch"]
    assert all(torch.equal(again["model"][k], weights["model"][k]) for k in weights["model"])


def test_a_changed_split_is_refused_on_resume(tmp_path):
    cfg = config(0.25, epochs=2)
    Training(cfg, GENO, tmp_path / "run", progress=False).run(stop_after=1)
    path = tmp_path / "run" / "split.json"
    split = json.loads(path.read_text())
    split["valid"], split["train"] = split["valid"][1:], split["train"] + split["valid"][:1] + [split["valid"][1]]
    path.write_text(json.dumps(split))
    with pytest.raises(GradnasError, match="does not split these training images"):
        Training(cfg, GENO, tmp_path / "run", resume=True, progress=False)


@pytest.mark.parametrize("damage", [b"{not json", b"\xff\xfe\x00", b"[" * 100_000])
def test_a_damaged_split_file_is_one_error_on_resume(tmp_path, damage):
    cfg = config(0.25, epochs=2)
    Training(cfg, GENO, tmp_path / "run", progress=False).run(stop_after=1)
    (tmp_path / "run" / "split.json").write_bytes(damage)
    with pytest.raises(GradnasError, match="split.json is damaged"):
        Training(cfg, GENO, tmp_path / "run", resume=True, progress=False)
    assert (tmp_path / "run" / "checkpoint.pt").is_file()  # nothing lost


def test_without_a_split_the_last_epoch_is_reported(tmp_path):
    summary = Training(config(0.0, epochs=1), GENO, tmp_path / "run", progress=False).run()
    assert summary["selected"] == {"epoch": 1, "by": "last epoch (no validation split)"}
    assert not (tmp_path / "run" / "split.json").exists() and not (tmp_path / "run" / "best.pt").exists()
    assert "valid_acc" not in _lines(tmp_path / "run")[0]


def test_streamed_images_are_split_too(tmp_path):
    from test_train import make_folder
    root = make_folder(tmp_path / "images", classes=3, train=4, test=2)
    cfg = TrainConfig.from_dict({
        "epochs": 2, "batch_size": 4, "seed": 1, "device": "cpu", "threads": 1,
        "data": {"dataset": "imagefolder", "data_dir": str(root), "crop_padding": 0, "random_resized_crop": 16,
                 "cutout": 0, "workers": 0, "valid_fraction": 0.25},
        "network": {"cells": 3, "channels": 4, "auxiliary_weight": 0.0, "drop_path": 0.0}, "optim": {"lr": 0.05}})
    full = Training(cfg, GENO, tmp_path / "full", progress=False)
    assert full.data.num_valid == 3 and full.data.num_train == 9
    summary = full.run()
    assert summary["selected"]["by"] == "valid_acc" and all("valid_acc" in m for m in _lines(tmp_path / "full"))
    Training(cfg, GENO, tmp_path / "part", progress=False).run(stop_after=1)
    assert Training(cfg, GENO, tmp_path / "part", resume=True, progress=False).run()["selected"] == summary["selected"]
    assert _lines(tmp_path / "part") == _lines(tmp_path / "full")
