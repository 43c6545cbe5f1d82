"""Training from scratch on tiny image folders: run folder, exact resume, settings, genotype sources,
per-image (ImageNet-style) decoding, and batch sharding for data parallelism."""
import json
import random

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from gradnas.data import Augment
from gradnas.data.augment import random_resized_crop_box, resize_center_crop_box
from gradnas.data.loader import ShuffledBatches
from gradnas.data.stream import StreamBatches, scan_image_folder
from gradnas.errors import GradnasError
from gradnas.space.darts_network import darts_params_m
from gradnas.space.genotype import save_genotype
from gradnas.train.config import SETTINGS_DIR, TrainConfig, load_setting
from gradnas.train.genotypes import genotype_from_source, parse_size
from gradnas.train.loop import Training

from test_darts_network import DARTS_V2, random_genotype

FMNIST = "/usr/share/datasets/fashion-mnist"

GENO = random_genotype(0, steps=2)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GRADNAS_CACHE", str(tmp_path_factory.getbasetemp() / "train-cache"))


def make_folder(root, *, classes=3, train=8, test=4, size=(12, 12), vary=False, fmt="png", seed=0):
    """An ImageFolder whose classes differ in colour (learnable), optionally with varying image sizes."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("test", test)):
        for c in range(classes):
            d = root / split / f"class{c:02d}"
            d.mkdir(parents=True)
            for i in range(n):
                w, h = (int(rng.integers(10, 40)), int(rng.integers(10, 40))) if vary else size
                arr = rng.integers(0, 60, (h, w, 3))
                arr[..., c % 3] += 60 + 60 * (c // 3)
                Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(d / f"{i:03d}.{fmt}")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("colours"))


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory):
    """12 classes (so top-5 is reported) of JPEGs of different sizes."""
    return make_folder(tmp_path_factory.mktemp("jpegs"), classes=12, train=2, test=1, vary=True, fmt="jpg")


def tiny_config(data_dir, streamed=False, **top):
    d = {"epochs": 2, "batch_size": 8, "seed": 1, "device": "cpu",
         "data": {"dataset": "imagefolder", "data_dir": str(data_dir), "crop_padding": 2, "cutout": 4,
                  "workers": 0},
         "network": {"cells": 3, "channels": 4, "auxiliary_weight": 0.4, "drop_path": 0.2},
         "optim": {"lr": 0.05}}
    if streamed:
        d["data"].update(crop_padding=0, random_resized_crop=16)
    for k, v in top.items():
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) else v
    return TrainConfig.from_dict(d)


def _metrics(run_dir):
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        line.pop("epoch_time")
    return lines


@pytest.mark.parametrize("streamed", [False, True])
def test_resume_continues_exactly(tmp_path, folder, jpeg_folder, streamed):
    cfg = tiny_config(jpeg_folder if streamed else folder, streamed=streamed)
    full = Training(cfg, GENO, tmp_path / "full", progress=False)
    full.run()
    stopped = Training(cfg, GENO, tmp_path / "resumed", progress=False)
    assert stopped.run(stop_after=1)["finished"] is False
    resumed = Training(cfg, GENO, tmp_path / "resumed", resume=True, progress=False)
    assert resumed.epoch == 1
    summary = resumed.run()
    assert summary["finished"]
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for key in a:  # weights and BN statistics, bit for bit (drop path and augmentation included)
        assert torch.equal(a[key], b[key]), key
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "resumed")


def test_run_folder_metrics_and_summary(tmp_path, folder):
    cfg = tiny_config(folder, epochs=3)
    run = Training(cfg, GENO, tmp_path, progress=False)
    summary = run.run()
    assert TrainConfig.from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text())) == cfg
    assert json.loads((tmp_path / "genotype.json").read_text())["string"] == GENO.to_string()
    network = json.loads((tmp_path / "network.json").read_text())
    assert network["params_m"] == darts_params_m(GENO, cells=3, channels=4, num_classes=3) > 0
    assert network["macs_m"] > 0 and network["input"] == [3, 12, 12]
    records = _metrics(tmp_path)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [r["drop_path"] for r in records] == pytest.approx([0.0, 0.2 / 3, 0.4 / 3])  # linear ramp
    assert records[0]["lr"] == 0.05 and records[1]["lr"] == pytest.approx(0.05 * 0.75)  # cosine to 0
    for r in records:
        assert set(r) >= {"train_loss", "train_acc", "test_loss", "test_acc"} and "test_top5" not in r
    assert records[-1]["train_loss"] < records[0]["train_loss"]  # the colours are learnable
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["test_acc"] == records[-1]["test_acc"] == summary["test_acc"]
    assert saved["params_m"] == network["params_m"] and saved["finished"]


def test_streamed_folder_reports_top5_and_rgb_crops(tmp_path, jpeg_folder):
    cfg = tiny_config(jpeg_folder, streamed=True, epochs=1, precision="bf16", channels_last=True)
    run = Training(cfg, GENO, tmp_path, progress=False)
    assert run.data.image_size == (16, 16) and run.data.num_classes == 12 and run.data.num_test == 12
    run.run()
    (record,) = _metrics(tmp_path)
    assert 0 <= record["test_acc"] <= record["test_top5"] <= 100
    assert all(p.dtype == torch.float32 for p in run.model.parameters())  # autocast leaves weights in fp32


def test_resume_and_reuse_are_checked(tmp_path, folder):
    Training(tiny_config(folder, epochs=1), GENO, tmp_path, progress=False).run()
    with pytest.raises(GradnasError, match="another config .*optim.lr"):
        Training(tiny_config(folder, epochs=1, optim={"lr": 0.1}), GENO, tmp_path, resume=True, progress=False)
    with pytest.raises(GradnasError, match="trains another genotype"):
        Training(tiny_config(folder, epochs=1), random_genotype(5, steps=2), tmp_path, resume=True, progress=False)
    with pytest.raises(GradnasError, match="already holds a training run"):
        Training(tiny_config(folder, epochs=1), GENO, tmp_path, progress=False)


NB201_GENO = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|"


def test_nb201_genotype_trains_through_the_space_hook(tmp_path, folder):
    from gradnas.space.nb201 import NB201Network, build_nb201_network
    genotype = genotype_from_source(NB201_GENO)[0]
    cfg = tiny_config(folder, epochs=1, network={"cells": 1, "channels": 4, "auxiliary_weight": 0.0,
                                                 "drop_path": 0.0})
    run = Training(cfg, genotype, tmp_path / "run", progress=False)
    assert isinstance(run.model, NB201Network)
    reference = build_nb201_network(genotype, C=4, N=1, in_channels=3, num_classes=3)
    assert run.params_m == sum(p.numel() for p in reference.parameters()) / 1e6
    assert run.run()["finished"]
    assert json.loads((tmp_path / "run" / "genotype.json").read_text())["string"] == NB201_GENO
    for network, message in (({"auxiliary_weight": 0.4}, "no auxiliary head"), ({"drop_path": 0.1}, "no drop path"),
                             ({"stem": "imagenet"}, "one stem")):
        bad = tiny_config(folder, network={"cells": 1, "channels": 4, "auxiliary_weight": 0.0, "drop_path": 0.0,
                                           **network})
        with pytest.raises(GradnasError, match=message):
            Training(bad, genotype, tmp_path / message.replace(" ", "-"), progress=False)


def test_nan_loss_stops_with_a_clear_error(tmp_path, folder):
    cfg = tiny_config(folder, optim={"lr": 1e30, "grad_clip": 0.0, "momentum": 0.0})
    with pytest.raises(GradnasError, match=r"NaN/inf in epoch \d.*Lower optim.lr"):
        Training(cfg, GENO, tmp_path, progress=False).run()


# ---------------------------------------------------------------------------------------- settings

def test_shipped_settings_are_the_papers():
    assert sorted(p.stem for p in SETTINGS_DIR.glob("*.yaml")) == ["cifar", "imagenet", "imagenet-pdarts", "nb201",
                                                                   "pvll", "quick"]
    cifar = TrainConfig.from_dict(load_setting("cifar"))
    assert cifar == TrainConfig()  # the defaults are the CIFAR setting
    assert (cifar.network.cells, cifar.network.channels, cifar.epochs, cifar.batch_size) == (20, 36, 600, 96)
    assert (cifar.optim.lr, cifar.optim.schedule, cifar.optim.momentum, cifar.optim.weight_decay) == (
        0.025, "cosine", 0.9, 3e-4)
    assert (cifar.data.cutout, cifar.network.drop_path, cifar.network.auxiliary_weight, cifar.optim.grad_clip) == (
        16, 0.2, 0.4, 5.0)
    imagenet = TrainConfig.from_dict(load_setting("imagenet"))
    assert (imagenet.network.cells, imagenet.network.channels, imagenet.network.stem) == (14, 48, "imagenet")
    assert (imagenet.epochs, imagenet.batch_size, imagenet.optim.lr, imagenet.optim.schedule, imagenet.optim.gamma,
            imagenet.optim.weight_decay, imagenet.optim.label_smoothing, imagenet.network.auxiliary_weight) == (
        250, 128, 0.1, "exponential", 0.97, 3e-5, 0.1, 0.4)
    assert (imagenet.data.dataset, imagenet.data.random_resized_crop, imagenet.data.flip) == ("imagefolder", 224, True)
    pdarts = TrainConfig.from_dict(load_setting("imagenet-pdarts"))  # the single-level paper's ImageNet retrain
    assert (pdarts.epochs, pdarts.batch_size, pdarts.optim.lr, pdarts.optim.schedule, pdarts.optim.lr_min,
            pdarts.optim.warmup_epochs, pdarts.optim.weight_decay, pdarts.optim.label_smoothing,
            pdarts.network.auxiliary_weight, pdarts.network.stem) == (
        250, 768, 0.375, "linear", None, 5, 3e-5, 0.1, 0.4, "imagenet")
    pvll = TrainConfig.from_dict(load_setting("pvll"))  # PVLL-NAS: the search phase's batch 64 and lr 0.025
    assert (pvll.epochs, pvll.batch_size, pvll.optim.lr, pvll.optim.schedule, pvll.network.cells,
            pvll.network.channels) == (600, 64, 0.025, "cosine", 20, 36)
    quick = TrainConfig.from_dict(load_setting("quick"))
    assert quick.data.dataset == "fashion-mnist"
    nb201 = TrainConfig.from_dict(load_setting("nb201"))  # the benchmark's recipe
    assert (nb201.network.cells, nb201.network.channels, nb201.epochs, nb201.batch_size, nb201.optim.lr,
            nb201.optim.nesterov, nb201.optim.weight_decay, nb201.network.auxiliary_weight) == (
        5, 16, 200, 256, 0.1, True, 5e-4, 0.0)


def test_linear_schedule_with_warmup_per_epoch_and_exact_resume_mid_warmup(tmp_path, folder):
    """optim.schedule linear + warmup_epochs: epoch e runs at lr (1 - e / E), times (e + 1) / W while e < W
    (the PDARTS recipe); the lr is recorded per epoch, and a run stopped in the warm-up resumes exactly."""
    from gradnas.train.config import lr_at
    torch.set_num_threads(1)
    optim = {"lr": 0.4, "schedule": "linear", "warmup_epochs": 2}
    cfg = tiny_config(folder, epochs=4, optim=optim)
    assert [lr_at(cfg.optim, 4, e) for e in range(4)] == pytest.approx([0.4 * 1 / 2, 0.4 * 0.75, 0.4 * 0.5, 0.4 * 0.25])
    floor = tiny_config(folder, epochs=4, optim={"lr": 0.4, "schedule": "linear", "lr_min": 0.1}).optim
    assert [lr_at(floor, 4, e) for e in range(4)] == pytest.approx([0.4, 0.325, 0.25, 0.175])
    cosine = tiny_config(folder, epochs=4, optim={"lr": 0.4, "warmup_epochs": 1}).optim
    assert lr_at(cosine, 4, 0) == pytest.approx(0.4) and lr_at(cosine, 4, 2) == pytest.approx(0.2)
    cfg = tiny_config(folder, epochs=3, optim={"lr": 0.3, "schedule": "linear", "warmup_epochs": 2},
                      network={"auxiliary_weight": 0.0, "drop_path": 0.0})
    full = Training(cfg, GENO, tmp_path / "full", progress=False)
    full.run()
    lines = _metrics(tmp_path / "full")
    assert [l["lr"] for l in lines] == pytest.approx([0.3 * 1 / 2, 0.3 * 2 / 3, 0.3 * 1 / 3])
    Training(cfg, GENO, tmp_path / "resumed", progress=False).run(stop_after=1)  # inside the warm-up
    resumed = Training(cfg, GENO, tmp_path / "resumed", resume=True, progress=False)
    resumed.run()
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert _metrics(tmp_path / "resumed") == lines


@pytest.mark.parametrize("d,message", [
    ({"optim": {"warmup_epochs": 600}}, "optim.warmup_epochs must be in \\[0, epochs - 1 = 599\\]"),
    ({"optim": {"schedule": "linear", "gamma": 0.9}}, "optim.gamma is the exponential schedule's factor"),
    ({"optim": {"gamma": 0.9}}, "optim.gamma is the exponential schedule's factor"),
    ({"optim": {"schedule": "exponential"}}, "needs optim.gamma"),
    ({"optim": {"schedule": "exponential", "gamma": 0.97, "lr_min": 0.001}}, "lr_min is the cosine"),
    ({"optim": {"schedule": "step"}}, "optim.schedule must be one of cosine, exponential, linear"),
    ({"precision": "fp16"}, "precision must be one of fp32, bf16"),
    ({"network": {"stem": "resnet"}}, "network.stem must be one of cifar, imagenet"),
    ({"network": {"drop_path": 1.0}}, "drop_path must be in"),
    ({"data": {"random_resized_crop": 224}}, "set crop_padding: 0"),
    ({"data": {"eval_resize": 256}}, "eval_resize only applies"),
    ({"data": {"mean": [0.5]}}, "mean and data.std together"),
    ({"network": {"cell": 5}}, "unknown key 'network.cell'"),
    ({"epochs": "many"}, "epochs must be an integer"),
])
def test_config_errors(d, message):
    with pytest.raises(GradnasError, match=message):
        TrainConfig.from_dict(d)


# ---------------------------------------------------------------------------------------- genotype sources

def _search_run(root, genotype, finished=True):
    root.mkdir()
    save_genotype(genotype, root / "genotype.json")
    if finished:
        (root / "summary.json").write_text(json.dumps({"genotype": genotype.to_string(), "finished": True}))
    return root


def test_genotype_sources(tmp_path):
    text = DARTS_V2.to_string()
    assert genotype_from_source(text)[0] == DARTS_V2
    save_genotype(DARTS_V2, tmp_path / "g.json")
    assert genotype_from_source(str(tmp_path / "g.json"))[0] == DARTS_V2
    run = _search_run(tmp_path / "run", DARTS_V2)
    assert genotype_from_source(str(run), pick="last")[0] == DARTS_V2
    # the default, best, needs best-genotype.json or metrics to choose from; this hand-made folder has neither
    with pytest.raises(GradnasError, match="no best-genotype.json .* train its final genotype with --pick last"):
        genotype_from_source(str(run))
    unfinished = _search_run(tmp_path / "unfinished", DARTS_V2, finished=False)
    with pytest.raises(GradnasError, match="has not finished.*--genotype .*genotype.json"):
        genotype_from_source(str(unfinished))
    with pytest.raises(GradnasError, match="neither a file nor a genotype string"):
        genotype_from_source(str(tmp_path / "nothing.json"))


def test_size_index_picks_a_genotype(tmp_path):
    run = _search_run(tmp_path / "run", DARTS_V2)
    (run / "sizes").mkdir()
    small, large = random_genotype(3), random_genotype(4)
    save_genotype(small, run / "sizes" / "size-2-0.json")
    save_genotype(large, run / "sizes" / "size-6-1.json")
    index = [{"normal_convs": 2, "reduce_convs": 0, "params_m": 1.2, "best_valid_acc": 80.0, "epoch": 20,
              "genotype_file": "sizes/size-2-0.json"},
             {"normal_convs": 6, "reduce_convs": 1, "params_m": 3.9, "best_valid_acc": 84.0, "epoch": 41,
              "genotype_file": "sizes/size-6-1.json"}]
    (run / "sizes" / "index.json").write_text(json.dumps(index))
    assert genotype_from_source(str(run), size=parse_size("6,1"))[0] == large
    assert genotype_from_source(str(run), size=(2, 0))[0] == small
    with pytest.raises(GradnasError, match="no genotype with 4 normal and 0 reduction.*sizes there: 2,0, 6,1"):
        genotype_from_source(str(run), size=(4, 0))
    with pytest.raises(GradnasError, match="expected N,R"):
        parse_size("6")
    with pytest.raises(GradnasError, match="no model-size index"):
        genotype_from_source(str(_search_run(tmp_path / "plain", DARTS_V2)), size=(2, 0))


# ---------------------------------------------------------------------------------------- data

def test_random_resized_crop_box_stays_in_range():
    rng = random.Random(0)
    for _ in range(500):
        h, w = rng.randint(8, 400), rng.randint(8, 400)
        top, left, ch, cw = random_resized_crop_box(h, w, rng)
        assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w and ch > 0 and cw > 0
    # a fitting draw covers 8%..100% of the area with aspect ratio in [3/4, 4/3] (up to rounding)
    fracs, ratios = [], []
    for s in range(300):
        top, left, ch, cw = random_resized_crop_box(300, 300, random.Random(s))
        fracs.append(ch * cw / 300 ** 2)
        ratios.append(cw / ch)
    assert 0.07 < min(fracs) and max(fracs) <= 1.0 and 0.72 < min(ratios) and max(ratios) < 1.39
    assert max(fracs) - min(fracs) > 0.5  # really random
    # nothing fits a 1000x10 strip: the fallback is the widest centred crop with ratio 4/3
    assert random_resized_crop_box(10, 1000, random.Random(0), scale=(0.99, 1.0)) == (0, 493, 10, 13)


def test_resize_center_crop_box():
    # shorter side 384 -> 256 (scale 1.5): the 224 centre window spans 336 source pixels
    assert resize_center_crop_box(384, 512, 256, 224) == (24.0, 88.0, 336.0, 336.0)


def test_streamed_batches_do_not_depend_on_workers_or_ranks(jpeg_folder):
    train, test, classes = scan_image_folder(jpeg_folder, "fix")
    assert len(classes) == 12 and len(train) == 24 and len(test) == 12
    kw = dict(batch_size=6, size=10, train=True, seed=3)
    whole = list(StreamBatches(train, **kw).epoch(2))
    assert len(whole) == 4 and whole[0][0].shape == (6, 3, 10, 10) and whole[0][0].dtype == torch.uint8
    pooled = list(StreamBatches(train, workers=2, **kw).epoch(2))
    halves = [list(StreamBatches(train, part=slice(a, b), **kw).epoch(2)) for a, b in ((0, 3), (3, 6))]
    for k, (x, y) in enumerate(whole):
        assert torch.equal(x, pooled[k][0]) and torch.equal(y, pooled[k][1])
        assert torch.equal(x, torch.cat([halves[0][k][0], halves[1][k][0]]))
    other_epoch = list(StreamBatches(train, **kw).epoch(3))
    assert not torch.equal(whole[0][0], other_epoch[0][0])
    tests = list(StreamBatches(test, batch_size=5, size=10, train=False).epoch())
    assert [len(y) for _, y in tests] == [5, 5, 2]  # every test image once, in order


def test_streamed_decode_error_names_the_file(tmp_path):
    root = make_folder(tmp_path / "f", classes=2, train=2, test=1, fmt="jpg")
    bad = root / "train" / "class01" / "001.jpg"
    bad.write_bytes(b"not a jpeg")
    train, _, _ = scan_image_folder(root, "fix")
    with pytest.raises(GradnasError, match="cannot decode image .*001.jpg"):
        list(StreamBatches(train, batch_size=4, size=8, train=True).epoch(0))


def test_shuffled_batch_parts_make_up_the_global_batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 255, (40, 3, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.arange(40)
    augment = Augment((0.5,) * 3, (0.25,) * 3, crop_padding=2, flip=True, cutout=3)
    whole = list(ShuffledBatches(x, y, batch_size=8, augment=augment, device="cpu", seed=4).epoch(1))
    parts = [list(ShuffledBatches(x, y, batch_size=8, augment=augment, device="cpu", seed=4, part=p).epoch(1))
             for p in (slice(0, 4), slice(4, 8))]
    assert len(whole) == 5
    for k, (xb, yb) in enumerate(whole):
        assert torch.equal(xb, torch.cat([parts[0][k][0], parts[1][k][0]]))
        assert torch.equal(yb, torch.cat([parts[0][k][1], parts[1][k][1]]))
    assert sorted(torch.cat([yb for _, yb in whole]).tolist()) == list(range(40))


def test_float_spellings_in_training_settings(tmp_path):
    from gradnas.overrides import resolve_train_config
    p = tmp_path / "s.yaml"
    p.write_text("optim:\n  lr: 1e-1\n  lr_min: 1E-4\n  weight_decay: 5e-4\nepochs: 1e1\n")
    cfg = TrainConfig.from_dict(load_setting(str(p)))
    assert (cfg.optim.lr, cfg.optim.lr_min, cfg.optim.weight_decay, cfg.epochs) == (0.1, 1e-4, 5e-4, 10)
    cfg = resolve_train_config(None, {"lr": 1e-3}, ["optim.weight_decay=3e-4", "network.drop_path=.1"])
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.network.drop_path) == (1e-3, 3e-4, 0.1)
    with pytest.raises(GradnasError, match="optim.lr must be a finite number > 0, got inf"):
        TrainConfig.from_dict({"optim": {"lr": "inf"}})
    with pytest.raises(GradnasError, match="epochs must be an integer, got 1.5"):
        TrainConfig.from_dict({"epochs": 1.5})


def test_test_subset_tests_a_seeded_choice_of_test_images():
    from gradnas.data.sources import load_dataset
    from gradnas.distributed import World
    from gradnas.train.config import TrainDataConfig
    from gradnas.train.data import make_train_data

    def tested(subset, seed):
        cfg = TrainDataConfig(dataset="fashion-mnist", data_dir=FMNIST, subset=64, test_subset=subset, cutout=0)
        data = make_train_data(cfg, batch_size=32, seed=seed, device=torch.device("cpu"), world=World())
        return torch.cat([y for _, y in data.test()]), data.num_test

    labels, n = tested(100, 0)
    assert n == 100 and len(labels) == 100
    assert torch.equal(labels, tested(100, 0)[0]) and not torch.equal(labels, tested(100, 1)[0])
    everything = load_dataset("fashion-mnist", FMNIST).test_y
    assert torch.equal(tested(None, 0)[0], everything)  # None: every test image, in order
    with pytest.raises(GradnasError, match="data.test_subset 20000 is larger than the 10000 test images"):
        tested(20000, 0)
