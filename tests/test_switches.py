"""The papers' switches: where the architecture batch comes from, the method schedule, the collapse watch
with the single-level lr rule, and the ImageNet search stem/config."""
import io
import json
import math
import tarfile

import pytest
import torch
import yaml
from PIL import Image

from gradnas.cli import build_parser, resolve_search_config
from gradnas.config import SearchConfig, load_yaml
from gradnas.data import Augment, PairedBatches, make_search_split
from gradnas.errors import GradnasError
from gradnas.search.callbacks import CollapseWatch, describe_collapse
from gradnas.search.loop import Search
from gradnas.space import build_supernet
from gradnas.space.genotype import Genotype, NB201Genotype, non_learnable_share

from test_search import _metrics, tiny_config

CIFAR = "/work/shared/data/cifar10-jpeg.tar.gz"
ALL_SKIP = Genotype(normal=[("skip_connect", 0), ("skip_connect", 1), ("skip_connect", 0), ("max_pool_3x3", 2)],
                    normal_concat=[2, 3],
                    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("sep_conv_3x3", 0), ("avg_pool_3x3", 1)],
                    reduce_concat=[2, 3])


def _paired(alpha_data, n=40, batch=4):
    x = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    y = torch.arange(n)
    split = make_search_split(n, seed=1)
    aug = Augment((0.0,), (1.0,), crop_padding=0, flip=False)
    return PairedBatches(x, y, split, batch_size=batch, augment=aug, device="cpu", seed=2,
                         alpha_data=alpha_data), split


@pytest.mark.parametrize("mode", ["split", "same-split", "same-batch"])
def test_alpha_data_feeds_the_batches_it_says(mode):
    batches, split = _paired(mode)
    w_half, a_half = set(split.weight_idx.tolist()), set(split.arch_idx.tolist())
    steps = batches.epoch_indices(0)
    assert len(steps) == len(batches) == 5
    for k, (wi, ai) in enumerate(steps):
        assert set(wi.tolist()) <= w_half
        if mode == "split":
            assert set(ai.tolist()) <= a_half
        elif mode == "same-split":  # the next weight batch: same half, never the same images
            assert set(ai.tolist()) <= w_half and not set(ai.tolist()) & set(wi.tolist())
            assert torch.equal(ai, steps[(k + 1) % len(steps)][0])
        else:
            assert torch.equal(ai, wi)
    # the yielded batches are the indexed images (labels = indices here); same-batch: the very same tensors
    for (wi, ai), (train, val) in zip(steps, batches.epoch(0)):
        assert torch.equal(train[1], wi) and torch.equal(val[1], ai)
        assert (val is train) == (mode == "same-batch")
    if mode == "split":  # the default keeps the batches a search drew before the switch existed
        assert torch.equal(steps[0][1], batches._orders(batches._generator(0))[1][:4])


def test_same_split_needs_two_batches():
    with pytest.raises(GradnasError, match="same-split .* only 1 batch"):
        _paired("same-split", n=12, batch=4)


def test_non_learnable_share():
    from gradnas.genotypes import get
    assert non_learnable_share(ALL_SKIP, "normal") == 1.0 and non_learnable_share(ALL_SKIP) == 7 / 8
    darts_v2 = get("DARTS_V2")
    assert non_learnable_share(darts_v2, "normal") == 0.25 and non_learnable_share(darts_v2, "all") == 0.625
    assert non_learnable_share(darts_v2) == 0.625  # the function's own default: every cell


@pytest.mark.parametrize("cells,share,warns", [("normal", 0.25, False), ("all", 0.625, True)])
def test_collapse_watch_counts_the_normal_cell_by_default(cells, share, warns, capsys):
    """DARTS_V2 (a good cell: 2 skips in its normal cell, pools in its reduction cell) is no collapse."""
    from types import SimpleNamespace
    from gradnas.config import CollapseConfig
    from gradnas.genotypes import get
    cfg = CollapseConfig() if cells == "normal" else CollapseConfig(cells="all")
    watch = CollapseWatch(cfg)
    record = {}
    watch.on_epoch_end(SimpleNamespace(job=SimpleNamespace(last_genotype=get("DARTS_V2")), is_main=True, done=1),
                       record)
    assert record["non_learnable_share"] == share and record.get("collapse_warning", False) == warns
    assert ("warning" in capsys.readouterr().err) == warns
    nb = NB201Genotype.from_string("|skip_connect~0|+|nor_conv_3x3~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|"
                                   "nor_conv_3x3~2|")
    assert non_learnable_share(nb) == 3 / 6


def test_schedule_switches_at_its_epoch_keeps_state_and_resumes_exactly(tmp_path, capsys):
    """darts for epoch 1 then milenas, the architecture batch the weight batch itself (checked by identity
    in every step), and the lr rule firing on a forced collapsed genotype: a run stopped before the switch
    and resumed equals an uninterrupted one bit for bit, metrics and lr scale included."""
    torch.set_num_threads(1)  # tiny tensors: a second thread only contends on a shared CPU
    cfg = tiny_config(method="darts", switch_at=1, then="milenas", alpha_data="same-batch",
                      collapse={"lr_decay": True, "max_decays": 1}, data={"subset": 64})
    calls = []

    def build(out, **kw):
        search = Search(cfg, out, progress=False, **kw)
        search.model.genotype = lambda: ALL_SKIP  # forced: 7/8 parameter-free ops
        algo = search.algorithm
        for m in algo.methods:
            assert m.model is search.model and m.w_optim is algo.w_optim and m.a_optim is algo.a_optim
            step = m.step

            def spy(train, val, step=step, name=m.name):
                assert val is train  # same-batch: the very tensors that train the weights
                calls.append(name)
                return step(train, val)
            m.step = spy
        return search

    full = build(tmp_path / "full")
    summary = full.run()
    collapse = {"share": 1.0, "cells": "normal", "threshold": 0.3, "collapsed": True, "epochs_above": 2}
    assert summary["collapse"] == collapse  # said plainly in the summary, the final lines and the report
    assert "in the derived normal cell: 100%, above collapse.threshold 0.3 (on 2 epoch(s))" in describe_collapse(collapse)
    assert "within" in describe_collapse({**collapse, "share": 0.25, "collapsed": False})
    steps = len(full.algorithm.batches)
    assert calls == ["darts"] * steps + ["milenas"] * steps
    lines = _metrics(tmp_path / "full")
    assert [l["method"] for l in lines] == ["darts", "milenas"]
    cosine1 = 0.001 + 0.024 * (1 + math.cos(math.pi / 2)) / 2
    assert lines[0]["lr"] == 0.025 and lines[0]["lr_decay"] == {"count": 1, "scale": 0.5, "next_lr": pytest.approx(0.5 * cosine1)}
    assert lines[1]["lr"] == pytest.approx(0.5 * cosine1) and "lr_decay" not in lines[1]  # max_decays 1
    assert lines[0]["collapse_warning"] and "collapse_warning" not in lines[1]  # warns on crossing only
    assert capsys.readouterr().err.count("gradnas: warning: after epoch 1, 100% of the derived normal cell's") == 1
    saved = SearchConfig.from_dict(yaml.safe_load((tmp_path / "full" / "config.yaml").read_text()))
    assert (saved.switch_at, saved.then, saved.alpha_data, saved.collapse.lr_decay) == (1, "milenas", "same-batch", True)

    build(tmp_path / "resumed").run(stop_after=1)
    resumed = build(tmp_path / "resumed", resume=True)
    watch = resumed.callback(CollapseWatch)
    assert (resumed.epoch, resumed.algorithm.lr_scale, watch.lr_scale, watch.lr_decays) == (1, 0.5, 0.5, 1)
    assert resumed.run()["collapse"] == collapse  # the epochs above the threshold survive the resume
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert _metrics(tmp_path / "resumed") == lines
    assert torch.equal(torch.tensor(full.algorithm.w_optim.param_groups[0]["lr"]),
                       torch.tensor(resumed.algorithm.w_optim.param_groups[0]["lr"]))
    with pytest.raises(GradnasError, match="another config .*then: 'milenas' there, 'single-level' now"):
        Search(tiny_config(method="darts", switch_at=1, then="single-level", alpha_data="same-batch",
                           collapse={"lr_decay": True, "max_decays": 1}, data={"subset": 64}),
               tmp_path / "full", resume=True, progress=False)


@pytest.mark.parametrize("d,message", [
    ({"alpha_data": "val"}, "alpha_data must be one of split, same-split, same-batch"),
    ({"switch_at": 2}, "needs both switch_at"),
    ({"then": "darts"}, "needs both switch_at"),
    ({"switch_at": 0, "then": "darts"}, "switch_at must be between 1 and epochs - 1"),
    ({"switch_at": 50, "then": "darts"}, "switch_at must be between 1 and epochs - 1 = 49"),
    ({"switch_at": 5, "then": "milenas"}, "then names the method already running"),
    ({"collapse": {"lr_factor": 1.0}}, r"lr_factor must be in \(0, 1\)"),
    ({"collapse": {"threshold": 0}}, r"threshold must be in \(0, 1\)"),
    ({"collapse": {"max_decays": 0}}, "max_decays must be >= 1"),
])
def test_switch_config_errors(d, message):
    with pytest.raises(GradnasError, match=message):
        SearchConfig.from_dict(d)


@pytest.mark.parametrize("top,message", [
    ({"switch_at": 1, "then": "bilevel"}, "unknown method 'bilevel'; valid methods: darts, milenas"),
    ({"method": "single-level", "alpha_data": "same-batch"}, "reads none; use darts or milenas"),
    ({"method": "darts", "switch_at": 1, "then": "single-level", "order": 2}, "method 'single-level' supports order 1, not 2"),
])
def test_search_refuses_bad_schedules_before_running(tmp_path, top, message):
    with pytest.raises(GradnasError, match=message):
        Search(tiny_config(**top), tmp_path, progress=False)


def test_cli_flags_set_the_switches():
    args = build_parser().parse_args(["search", "--method", "darts", "--alpha-data", "same-split", "--switch-at",
                                      "35", "--then", "milenas", "--lr-decay-on-collapse", "--collapse-threshold",
                                      "0.4", "--epochs", "50"])
    cfg = resolve_search_config(args)
    assert (cfg.alpha_data, cfg.switch_at, cfg.then, cfg.methods) == ("same-split", 35, "milenas", ("darts", "milenas"))
    assert (cfg.collapse.lr_decay, cfg.collapse.threshold, cfg.collapse.lr_factor) == (True, 0.4, 0.5)
    assert SearchConfig.from_dict(cfg.to_dict()) == cfg
    plain = resolve_search_config(build_parser().parse_args(["search"]))
    assert (plain.alpha_data, plain.switch_at, plain.collapse.lr_decay, plain.collapse.warn) == ("split", None, False, True)
    assert (plain.then_order, plain.arch_optim.type, plain.collapse.cells) == (None, "adam", "normal")
    args = build_parser().parse_args(["search", "--method", "darts", "--order", "2", "--switch-at", "35", "--then",
                                      "milenas", "--then-order", "1", "--arch-optim", "sgd", "--epochs", "50"])
    cfg = resolve_search_config(args)
    assert (cfg.orders, cfg.arch_optim.type) == ((2, 1), "sgd")


def _cifar_slice_resized(root, per_class=8, size=224):
    """A two-class ImageFolder of CIFAR-10 JPEGs resized up to ``size`` (train and test)."""
    wanted = {"airplane": per_class, "cat": per_class}
    with tarfile.open(CIFAR) as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) < 3 or parts[-3] != "train" or wanted.get(parts[-2], 0) == 0:
                continue
            cls = parts[-2]
            img = Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB").resize((size, size))
            for split in ("train", "test") if wanted[cls] <= 2 else ("train",):
                d = root / split / cls
                d.mkdir(parents=True, exist_ok=True)
                img.save(d / f"{wanted[cls]}.jpg")
            wanted[cls] -= 1
            if not any(wanted.values()):
                break


def test_imagenet_search_config_runs_one_step(tmp_path):
    d = load_yaml("imagenet-search-single-level")
    cfg = SearchConfig.from_dict(d)
    assert (cfg.method, cfg.relax, cfg.epochs, cfg.batch_size, cfg.supernet.stem) == (
        "single-level", "sigmoid", 50, 360, "imagenet")
    assert (cfg.w_optim.lr, cfg.w_optim.momentum, cfg.w_optim.weight_decay) == (0.025, 0.9, 3e-4)
    assert (cfg.arch_optim.lr, cfg.arch_optim.betas, cfg.arch_optim.weight_decay) == (3e-4, (0.5, 0.999), 0.0)
    model = build_supernet("darts", cfg.supernet, "sigmoid", in_channels=3, num_classes=2)
    x = torch.randn(1, 3, 224, 224)
    assert model.stem1(model.stem(x)).shape[-2:] == (28, 28)  # three stride-2 convs: 224 / 8
    assert torch.allclose(torch.sigmoid(model.alpha_normal), torch.full_like(model.alpha_normal, 0.125))

    _cifar_slice_resized(tmp_path / "data")
    d.update(epochs=2, batch_size=4, device="cpu", threads=1)
    d["data"].update(data_dir=str(tmp_path / "data"), subset=8, eval_batches=1)  # 4 weight images: one step
    search = Search(SearchConfig.from_dict(d), tmp_path / "run", progress=False)
    assert len(search.algorithm.batches) == 1 and search.algorithm.batches.x.shape[-2:] == (224, 224)
    search.run(stop_after=1)
    (line,) = _metrics(tmp_path / "run")
    assert line["method"] == "single-level" and math.isfinite(line["train_loss"]) and "arch_batch_loss" not in line


def test_then_order_runs_darts_2nd_then_milenas_1st_and_resumes_across_the_switch(tmp_path, monkeypatch):
    """MiLeNAS Fig. 2b: darts order 2 for switch_at epochs, then milenas order 1 (then_order): the virtual step
    runs in the first epoch's steps only, each epoch records its method and order, and a run stopped at the
    switch and resumed equals an uninterrupted one."""
    torch.set_num_threads(1)
    from gradnas.search import hypergrad
    calls = []
    real = hypergrad.virtual_step
    monkeypatch.setattr(hypergrad, "virtual_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = tiny_config(method="darts", order=2, switch_at=1, then="milenas", then_order=1, epochs=2,
                      data={"subset": 32, "eval_batches": 1})
    assert cfg.orders == (2, 1)
    full = Search(cfg, tmp_path / "full", progress=False)
    assert [m.order for m in full.algorithm.methods] == [2, 1]
    full.run()
    steps = len(full.algorithm.batches)
    assert len(calls) == steps  # epoch 1 only
    lines = _metrics(tmp_path / "full")
    assert [(l["method"], l["order"]) for l in lines] == [("darts", 2), ("milenas", 1)]
    Search(cfg, tmp_path / "resumed", progress=False).run(stop_after=1)
    calls.clear()
    resumed = Search(cfg, tmp_path / "resumed", resume=True, progress=False)
    resumed.run()
    assert calls == []  # after the switch: milenas-1st, no virtual step
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert _metrics(tmp_path / "resumed") == lines
    for d, message in [({"then_order": 1}, "then_order is the order of the method after switch_at"),
                       ({"method": "darts", "switch_at": 1, "then": "single-level", "then_order": 2},
                        "method 'single-level' supports order 1, not 2 \\(then_order\\)")]:
        with pytest.raises(GradnasError, match=message):
            Search(tiny_config(**d), tmp_path / "refused", progress=False)
    assert not (tmp_path / "refused").exists()


def test_single_level_searches_the_full_training_set_and_validates_on_test(tmp_path):
    """data.split_fraction 1 (appendix Table 5, "full"): every training image trains w and alpha, the epoch's
    validation is the test split's, said in the records and the summary; a method needing the architecture
    half is refused before any folder is made."""
    torch.set_num_threads(1)
    cfg = tiny_config(method="single-level", relax="sigmoid", epochs=1, data={"split_fraction": 1.0, "subset": 48})
    search = Search(cfg, tmp_path / "full", progress=False)
    algo = search.algorithm
    assert len(algo.split.arch_idx) == 0 and len(algo.split.weight_idx) == 48
    assert len(algo.batches) == 48 // 16  # every image, where the half split gives 24 // 16
    dataset = search.algorithm.train_x  # the training tensors; the validation set is the test split
    assert len(algo.val_y) == 10000 and not torch.equal(algo.val_x[:48], dataset[:48])
    summary = search.run()
    line = _metrics(tmp_path / "full")[0]
    assert line["valid_on"] == "test" and summary["valid_on"] == "test"
    split = json.loads((tmp_path / "full" / "split.json").read_text())
    assert split["fraction"] == 1.0 and split["arch_idx"] == []
    for d in ({"method": "darts"}, {"method": "milenas"}):
        with pytest.raises(GradnasError, match="leaves no architecture half, but method"):
            Search(tiny_config(data={"split_fraction": 1.0}, **d), tmp_path / "refused", progress=False)
    assert not (tmp_path / "refused").exists()
    darts_same = tiny_config(method="darts", alpha_data="same-batch", epochs=1,
                             data={"split_fraction": 1.0, "subset": 48})
    assert len(Search(darts_same, tmp_path / "same", progress=False).algorithm.batches) == 3
