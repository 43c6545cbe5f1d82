"""The found network in users' hands: gradnas.load_network on a real (tiny) training run and the other sources,
and `gradnas export` in its four formats, each file run on a batch and compared with the eager network.

One tiny training run (1 epoch, 128 Fashion-MNIST images, 3 cells, 4 channels) is shared by the module; the
NB-201 network is one cell per stage with 4 channels. Exported files are compared in float32 to 1e-4.
"""
import json
import shutil

import pytest
import torch

import gradnas
from gradnas.checkpoint import load_checkpoint
from gradnas.cli import main
from gradnas.errors import GradnasError
from gradnas.export import FORMATS, export_network
from gradnas.network import plan_network
from gradnas.space import build_network
from gradnas.space.genotype import load_genotype, save_genotype
from gradnas.train.config import NetworkConfig, TrainConfig
from gradnas.train.loop import Training

FMNIST = "/usr/share/datasets/fashion-mnist"
# every DARTS op, a stride-2 skip (FactorizedReduce) and a node reading another intermediate node
DARTS_GENO = ("normal=|sep_conv_3x3~0|dil_conv_5x5~1|+|skip_connect~0|avg_pool_3x3~2|;"
              "reduce=|max_pool_3x3~0|skip_connect~1|+|sep_conv_5x5~1|dil_conv_3x3~2|")
NB201_GENO = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"
TOL = 1e-4


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished one-epoch training run folder and the weights its Training object ended with."""
    out = tmp_path_factory.mktemp("export") / "train"
    cfg = TrainConfig.from_dict({
        "epochs": 1, "batch_size": 32, "seed": 1, "device": "cpu", "threads": 1,
        "data": {"dataset": "fashion-mnist", "data_dir": FMNIST, "subset": 128, "test_subset": 256, "cutout": 0,
                 "crop_padding": 0},
        "network": {"cells": 3, "channels": 4, "auxiliary_weight": 0.4, "drop_path": 0.1}})
    training = Training(cfg, load_genotype(DARTS_GENO), out, progress=False)
    training.run()
    return out, {k: v.detach().clone() for k, v in training.trainer.model.state_dict().items()}


def _images(shape, n=3, seed=0):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


# ---- load_network -------------------------------------------------------------------------------

def test_load_network_gives_the_trained_network(trained):
    run, final_state = trained
    net = gradnas.load_network(run)
    assert not net.training and str(net.genotype) == DARTS_GENO
    # the same network, built by hand from the run's config and checkpoint, gives the same logits
    cfg = TrainConfig.from_dict(__import__("yaml").safe_load((run / "config.yaml").read_text()))
    by_hand = build_network(load_genotype(DARTS_GENO), cfg.network, in_channels=1, num_classes=10)
    by_hand.load_state_dict(load_checkpoint(run / "checkpoint.pt")["model"])
    by_hand.eval()
    x = _images((1, 28, 28))
    with torch.no_grad():
        logits = net(x)
        assert torch.equal(logits, by_hand(x)) and logits.shape == (3, 10)
    # ... and its weights are the ones training ended with
    assert all(torch.equal(net.state_dict()[k], v) for k, v in final_state.items())
    assert set(net.state_dict()) == set(final_state)
    # untrained: the same shape, other weights
    fresh = gradnas.load_network(run, weights=False)
    assert not fresh.training and set(fresh.state_dict()) == set(final_state)
    assert not torch.equal(fresh.classifier.weight, net.classifier.weight)
    plan = plan_network(run)
    assert plan.kind == "training run" and plan.input_shape == (1, 28, 28) and plan.num_classes == 10


def test_load_network_overrides(trained):
    run, _ = trained
    assert gradnas.load_network(run, cells=3, channels=4, classes=10, in_channels=1) is not None  # the run's own
    with pytest.raises(GradnasError, match=r"channels=8 \(trained with channels=4\) does not fit the trained "
                                           r"weights.*weights=False"):
        gradnas.load_network(run, channels=8)
    wide = gradnas.load_network(run, weights=False, channels=8, classes=5, in_channels=3)
    assert wide(torch.zeros(2, 3, 28, 28)).shape == (2, 5) and wide.stem[0].in_channels == 3
    for bad, message in [(dict(cells=0), "cells must be a positive integer"),
                         (dict(channels="4"), "channels must be a positive integer"),
                         (dict(setting="cifar"), "is a training run.*drop setting="),
                         (dict(device="gpu0"), "device 'gpu0' is not a device"),
                         (dict(weights="yes"), "weights must be True or False")]:
        with pytest.raises(GradnasError, match=message):
            gradnas.load_network(run, **bad)
    with pytest.raises(TypeError):
        gradnas.load_network(run, chanels=4)  # a typo is not swallowed


def test_load_network_refuses_folders_it_cannot_use(trained, tmp_path):
    run, _ = trained
    no_checkpoint = tmp_path / "stopped"
    shutil.copytree(run, no_checkpoint)
    (no_checkpoint / "checkpoint.pt").unlink()
    with pytest.raises(GradnasError, match="no checkpoint.pt yet.*gradnas train --resume.*weights=False"):
        gradnas.load_network(no_checkpoint)
    assert not gradnas.load_network(no_checkpoint, weights=False).training
    (tmp_path / "empty").mkdir()
    with pytest.raises(GradnasError, match="is not a gradnas run folder"):
        gradnas.load_network(tmp_path / "empty")
    with pytest.raises(GradnasError, match="neither a run folder, a genotype file, a genotype string nor"):
        gradnas.load_network(tmp_path / "nothing-here")
    with pytest.raises(GradnasError, match="DARTS genotype .*not well formed"):
        gradnas.load_network("Genotype(normal=[")
    with pytest.raises(GradnasError, match="got a int"):
        gradnas.load_network(3)


def test_load_network_of_a_search_run_and_of_genotypes(tmp_path):
    # a finished search run on CIFAR-10: its final genotype in the quick setting's shape, CIFAR-10's input
    search = tmp_path / "search"
    search.mkdir()
    geno = load_genotype("DARTS_V2")
    save_genotype(geno, search / "genotype.json")
    (search / "summary.json").write_text(json.dumps({"genotype": geno.to_string(), "finished": True}))
    (search / "config.yaml").write_text("space: darts\nmethod: milenas\ndata: {dataset: cifar10}\n")
    with pytest.raises(GradnasError, match="has no best-genotype.json"):  # best, by default, as gradnas train
        gradnas.load_network(search)
    net = gradnas.load_network(search, pick="last")
    assert net.genotype == geno and net.cells_count == 5 and net.stem[0].in_channels == 3 and not net.training
    assert plan_network(search, pick="last").input_shape == (3, 32, 32)
    best = load_genotype("DARTS_V1")
    (search / "best-genotype.json").write_text(json.dumps(
        {**best.to_dict(), "selected": {"epoch": 1, "unit": "epoch", "by": "valid_acc", "valid_acc": 50.0}}))
    assert gradnas.load_network(search).genotype == best
    with pytest.raises(GradnasError, match="pick= chooses the epoch of a search run folder"):
        gradnas.load_network("DARTS_V2", pick="best")
    for pick, cell in (("last", geno), ("best", best)):  # gradnas export RUN --pick
        out = tmp_path / f"{pick}.pt"
        assert main(["export", str(search), "--format", "state_dict", "--pick", pick, "--out", str(out)]) == 0
        assert torch.load(out, weights_only=True).keys() == gradnas.load_network(cell).state_dict().keys()
    (search / "summary.json").unlink()
    with pytest.raises(GradnasError, match="has not finished"):
        gradnas.load_network(search, pick="last")
    # a published name: the quick setting (Fashion-MNIST, 5 cells, 8 channels); setting="cifar": the papers'
    plan = plan_network("DARTS_V2")
    assert (plan.kind, plan.input_shape, plan.net_cfg.cells, plan.net_cfg.channels) == ("genotype", (1, 28, 28), 5, 8)
    assert plan_network("DARTS_V2", setting="cifar").net_cfg.channels == 36
    # an NB-201 cell: the nb201 setting (N = 5, C = 16, CIFAR-10 images)
    nb = gradnas.load_network(NB201_GENO)
    assert nb(torch.zeros(1, 3, 32, 32)).shape == (1, 10) and len(nb.layers) == 17
    assert gradnas.load_network(load_genotype(NB201_GENO), cells=1).layers.__len__() == 5
    with pytest.raises(GradnasError, match="not known without loading it; pass in_channels= and classes="):
        plan_network("DARTS_V2", setting="imagenet")


# ---- export -------------------------------------------------------------------------------------

def _run_exported(fmt, path, x, fresh):
    if fmt == "state_dict":
        fresh.load_state_dict(torch.load(path, weights_only=True))
        return fresh.eval()(x)
    if fmt == "pt2":
        return torch.export.load(str(path)).module()(x)
    if fmt == "torchscript":
        return torch.jit.load(str(path))(x)
    import onnxruntime
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_of_the_trained_darts_run(fmt, trained, tmp_path, capsys):
    run, _ = trained
    out = tmp_path / f"net.{fmt}"
    assert main(["export", str(run), "--format", fmt, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out) and "trained weights" in captured.err and "N x 1 x 28 x 28" in captured.err
    x = _images((1, 28, 28), n=3)
    with torch.no_grad():
        want = gradnas.load_network(run)(x)
        got = _run_exported(fmt, out, x, gradnas.load_network(run, weights=False))
    assert got.shape == want.shape == (3, 10)
    assert (got - want).abs().max().item() <= TOL
    assert not list(tmp_path.glob(".*tmp*"))  # written whole: no temporary file left


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_of_a_tiny_nb201_network(fmt, tmp_path):
    torch.manual_seed(0)
    net = gradnas.load_network(NB201_GENO, cells=1, channels=4)
    with torch.no_grad():  # running statistics that are not the initial ones, so eval-mode BN is exercised
        net.train()(_images((3, 32, 32), n=8, seed=5))
    net.eval()
    path = export_network(net, tmp_path / f"nb.{fmt}", format=fmt, input_shape=(3, 32, 32))
    x = _images((3, 32, 32), n=2)
    with torch.no_grad():
        want = net(x)
        got = _run_exported(fmt, path, x, gradnas.load_network(NB201_GENO, weights=False, cells=1, channels=4))
    assert (got - want).abs().max().item() <= TOL


def test_scripted_networks_match_in_train_mode_too():
    # the scripted DARTS network keeps return_aux (positional or keyword) and the auxiliary head
    torch.manual_seed(0)
    net = build_network(load_genotype(DARTS_GENO), NetworkConfig(cells=3, channels=4, drop_path=0.0), in_channels=3,
                        num_classes=10)
    scripted = torch.jit.script(net)
    x = _images((3, 8, 8), n=4)
    logits, aux = net(x, return_aux=True)
    s_logits, s_aux = scripted(x, True)
    assert torch.equal(logits, s_logits) and torch.equal(aux, s_aux)
    net.eval()
    assert torch.equal(net(x), scripted.eval()(x)) and scripted(x, return_aux=True)[1] is None
    # the ImageNet stem
    inet = build_network(load_genotype(DARTS_GENO), NetworkConfig(cells=3, channels=4, stem="imagenet"),
                         in_channels=3, num_classes=7).eval()
    assert torch.equal(torch.jit.script(inet)(_images((3, 32, 32))), inet(_images((3, 32, 32))))


def test_export_errors(trained, tmp_path, monkeypatch, capsys):
    run, _ = trained
    assert main(["export", str(run), "--format", "pt2", "--out", str(tmp_path / "no" / "net.pt2")]) == 2
    assert "does not exist; create it first" in capsys.readouterr().err
    with pytest.raises(GradnasError, match="unknown export format 'tflite'"):
        export_network(gradnas.load_network(run), tmp_path / "x", format="tflite", input_shape=(1, 28, 28))
    # without the onnx packages, --format onnx says how to install them
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "net.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("gradnas: error:") == 1 and "pip install 'gradnas[export]'" in err
    assert not (tmp_path / "net.onnx").exists()
