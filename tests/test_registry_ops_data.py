"""register_op / register_dataset: user ops and datasets work wherever built-in ones do, and bad ones are refused.

Every test registers through the ``registered_op`` / ``registered_dataset`` context managers; the autouse
fixture below is a safety net that removes whatever a failing test left behind, so other tests see the
built-in tables only.
"""
import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gradnas.config import SearchConfig
from gradnas.data import DATASETS, ImageDataset, load_dataset, register_dataset, registered_dataset
from gradnas.data.sources import BUILTIN_DATASETS, channel_stats, dataset_key, unregister_dataset
from gradnas.errors import GradnasError
from gradnas.relax import make_relaxation
from gradnas.search.loop import Search
from gradnas.search.sizes import conv_counts
from gradnas.space import check_genotype
from gradnas.space.darts import DartsSpaceConfig, DartsSupernet
from gradnas.space.darts_network import DartsNetwork, darts_params_m
from gradnas.space.genotype import Genotype, genotype_from_dict, load_genotype, non_learnable_share, save_genotype
from gradnas.space.ops import (BUILTIN_OPS, CONV_OPS, OPS, PARAMETER_FREE_OPS, register_op, registered_op,
                               unregister_op)
from gradnas.train.config import TrainConfig
from gradnas.train.loop import Training


@pytest.fixture(autouse=True)
def _clean_tables():
    yield
    for name in [n for n in OPS if n not in BUILTIN_OPS]:
        unregister_op(name)
    for name in [n for n in DATASETS if n not in BUILTIN_DATASETS]:
        unregister_dataset(name)


class Tanh(nn.Module):
    """A parameter-free op: tanh, subsampled by the stride."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return torch.tanh(x)[:, :, ::self.stride, ::self.stride]


def tanh_op(c, stride, affine):
    return Tanh(stride)


def plain_conv(kernel):
    def factory(c, stride, affine):
        return nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, kernel, stride, kernel // 2, bias=False),
                             nn.BatchNorm2d(c, affine=affine))
    return factory


def cell_of(*ops):
    """A 2-node cell (4 edges) using the given ops in turn."""
    inputs = [0, 1, 0, 2]
    return [(ops[k % len(ops)], j) for k, j in enumerate(inputs)]


class Images(torch.utils.data.Dataset):
    """``n`` random float images in [0, 1] with labels k % classes (or the given items)."""

    def __init__(self, n=64, shape=(3, 8, 8), classes=4, seed=0, items=None):
        g = torch.Generator().manual_seed(seed)
        self.items = items if items is not None else [
            (torch.rand(shape, generator=g), k % classes) for k in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


# ------------------------------------------------------------------------------------ ops


def test_flags_reach_share_and_conv_counts():
    with registered_op("my_free", tanh_op, parameter_free=True), registered_op("my_conv", plain_conv(3), conv=True), \
            registered_op("my_plain", plain_conv(1)):
        assert "my_free" in PARAMETER_FREE_OPS and "my_free" not in CONV_OPS
        assert "my_conv" in CONV_OPS and "my_conv" not in PARAMETER_FREE_OPS
        assert "my_plain" not in CONV_OPS and "my_plain" not in PARAMETER_FREE_OPS
        geno = Genotype(cell_of("my_free"), [2, 3], cell_of("my_conv"), [2, 3])
        assert non_learnable_share(geno) == 0.5
        assert conv_counts(geno) == (0, 4)
        mixed = Genotype(cell_of("my_free", "my_plain"), [2, 3], cell_of("my_conv", "my_plain"), [2, 3])
        assert non_learnable_share(mixed) == 0.25
        assert conv_counts(mixed) == (0, 2)
        # stop.at_size is checked against the conv ops of supernet.ops: my_conv counts, my_plain does not.
        base = {"device": "cpu", "stop": {"at_size": [2, 0]}}
        SearchConfig.from_dict({**base, "supernet": {"nodes": 2, "ops": ["none", "my_conv"]}})
        with pytest.raises(GradnasError, match="could never fire"):
            SearchConfig.from_dict({**base, "supernet": {"nodes": 2, "ops": ["none", "my_plain"]}})
    assert "my_free" not in PARAMETER_FREE_OPS and "my_conv" not in CONV_OPS and "my_conv" not in OPS


def test_supernet_edge_is_the_weighted_sum_and_genotype_round_trips(tmp_path):
    ops = ("none", "my_op", "sep_conv_3x3")
    with registered_op("my_op", tanh_op, parameter_free=True):
        cfg = DartsSpaceConfig(cells=3, channels=4, nodes=2, ops=ops)
        torch.manual_seed(0)
        model = DartsSupernet(cfg, make_relaxation("softmax"), in_channels=3, num_classes=4)
        with torch.no_grad():
            model.alpha_normal.normal_()
        cell = model.cells[0]  # a normal cell (reductions at 1 and 2)
        assert not cell.reduction and set(cell.edges["2_0"]) == {"my_op", "sep_conv_3x3"}
        weights = model.op_weights()[0]
        seen = {}
        cell.on_node = lambda target, node: seen.__setitem__(target, node)
        g = torch.Generator().manual_seed(1)
        s0, s1 = (torch.randn(2, 12, 8, 8, generator=g).contiguous(memory_format=torch.channels_last)
                  for _ in range(2))
        with torch.no_grad():
            cell(s0, s1, weights)
            states = [cell.pre0(s0), cell.pre1(s1), seen[2]]
            rows = {(2, 0): 0, (2, 1): 1, (3, 0): 2, (3, 1): 3, (3, 2): 4}
            for target in (2, 3):
                expected = 0
                for j in range(target):
                    p = weights[rows[(target, j)]]
                    edge = cell.edges[f"{target}_{j}"]
                    # sum_k p_k o_k(x): none contributes 0; each op on its own, as a plain module call.
                    expected = expected + p[1] * edge["my_op"](states[j]) + p[2] * edge["sep_conv_3x3"](states[j])
                assert torch.allclose(seen[target], expected, rtol=1e-5, atol=1e-6)
        # Make my_op the strongest everywhere, so the derived genotype uses it.
        with torch.no_grad():
            for alpha in model.arch_parameters():
                alpha.zero_()
                alpha[:, 1] = 5.0
        geno = model.genotype()
        assert {op for op, _ in geno.normal + geno.reduce} == {"my_op"}
        assert Genotype.from_string(geno.to_string()) == geno
        assert genotype_from_dict(json.loads(json.dumps(geno.to_dict()))) == geno
        save_genotype(geno, tmp_path / "g.json")
        assert load_genotype(tmp_path / "g.json") == geno
        assert check_genotype(geno, "darts", cfg) is geno
    # The op is gone: building on it fails, and the message says how to get it back.
    with pytest.raises(GradnasError, match="unknown operation.*register_op"):
        DartsSpaceConfig(cells=3, channels=4, nodes=2, ops=ops)
    with pytest.raises(GradnasError, match="'my_op' is not in the space.*registered with register_op"):
        geno.validate(tuple(OPS), 2)


def test_evaluation_network_builds_and_trains_with_a_registered_op():
    with registered_op("my_conv", plain_conv(3), conv=True), registered_op("my_free", tanh_op, parameter_free=True):
        geno = Genotype(cell_of("my_conv", "my_free"), [2, 3], cell_of("my_free", "sep_conv_3x3"), [2, 3])
        torch.manual_seed(0)
        net = DartsNetwork(geno, cells=3, channels=4, num_classes=4, in_channels=3, auxiliary=True)
        convs = [m for m in net.modules() if isinstance(m, nn.Sequential) and isinstance(m[1], nn.Conv2d)]
        assert convs and all(m[2].affine for m in convs)  # evaluation networks build ops with affine=True
        net.drop_path_prob = 0.2
        net.train()
        logits, aux = net(torch.randn(4, 3, 16, 16), return_aux=True)
        assert logits.shape == (4, 4) and aux.shape == (4, 4)
        (F.cross_entropy(logits, torch.arange(4)) + F.cross_entropy(aux, torch.arange(4))).backward()
        assert all(m[1].weight.grad is not None and m[1].weight.grad.abs().sum() > 0 for m in convs)
        small = darts_params_m(geno, cells=3, channels=4)
    # The same name registered again with a bigger kernel builds a bigger network: no stale cached count.
    with registered_op("my_conv", plain_conv(5), conv=True), registered_op("my_free", tanh_op, parameter_free=True):
        assert darts_params_m(geno, cells=3, channels=4) > small
    with pytest.raises(GradnasError, match="unknown operation.*my_conv"):
        DartsNetwork(geno, cells=3, channels=4, num_classes=4)


def test_decorator_and_replace():
    @register_op("deco_op", conv=True)
    def deco(c, stride, affine):
        return plain_conv(3)(c, stride, affine)

    assert OPS["deco_op"] is deco and "deco_op" in CONV_OPS
    with pytest.raises(GradnasError, match="already registered.*replace=True"):
        register_op("deco_op", tanh_op)
    register_op("deco_op", tanh_op, parameter_free=True, replace=True)
    assert OPS["deco_op"] is tanh_op and "deco_op" in PARAMETER_FREE_OPS and "deco_op" not in CONV_OPS
    unregister_op("deco_op")
    assert "deco_op" not in OPS
    with pytest.raises(TypeError):
        OPS["sneaky"] = tanh_op  # the table is a read-only view: register_op is the way in


def test_register_op_refusals():
    with pytest.raises(GradnasError, match="built-in"):
        register_op("sep_conv_3x3", plain_conv(3), replace=True)
    with pytest.raises(GradnasError, match="built-in"):
        unregister_op("none")
    with pytest.raises(GradnasError, match="must be callable"):
        register_op("my_op", "not a factory")
    for bad in ("my|op", "a~b", "x+y", "k=v", "semi;colon", "with space", "", "dotted.name", 7):
        with pytest.raises(GradnasError, match="letters, digits and '_'"):
            register_op(bad, tanh_op)
    with pytest.raises(GradnasError, match="ModuleDict"):
        register_op("keys", tanh_op)
    with pytest.raises(GradnasError, match="not both"):
        register_op("my_op", tanh_op, parameter_free=True, conv=True)
    with pytest.raises(GradnasError, match="learnable parameters.*parameter_free"):
        register_op("my_op", plain_conv(3), parameter_free=True)
    with pytest.raises(GradnasError, match="expected 2x8x4x4"):
        register_op("my_op", lambda c, stride, affine: nn.Identity())  # ignores the stride
    with pytest.raises(GradnasError, match="not an nn.Module"):
        register_op("my_op", lambda c, stride, affine: torch.tanh)
    with pytest.raises(GradnasError, match="raised ValueError: odd"):
        register_op("my_op", lambda c, stride, affine: (_ for _ in ()).throw(ValueError("odd")))
    with pytest.raises(GradnasError, match="not registered"):
        unregister_op("my_op")
    assert not [n for n in OPS if n not in BUILTIN_OPS]  # nothing half-registered


def test_registration_leaves_the_global_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with registered_op("my_conv", plain_conv(3), conv=True):
        assert torch.equal(torch.rand(3), expected)


def test_op_checks_read_the_table_at_call_time():
    with pytest.raises(GradnasError, match="unknown operation.*late_op.*register_op"):
        DartsSpaceConfig(ops=("none", "late_op"))
    with registered_op("late_op", plain_conv(3)):
        assert DartsSpaceConfig(ops=("none", "late_op")).ops == ("none", "late_op")
        with pytest.raises(GradnasError, match="valid operations: .*late_op"):
            DartsSpaceConfig(ops=("none", "other_op"))
    with pytest.raises(GradnasError, match="unknown operation"):
        DartsSpaceConfig(ops=("none", "late_op"))


def test_genotype_op_names_must_survive_the_string():
    with pytest.raises(GradnasError, match="letters, digits and '_'"):
        Genotype.from_string("normal=|a b~0|sep_conv_3x3~1|;reduce=|sep_conv_3x3~0|sep_conv_3x3~1|")
    d = Genotype(cell_of("sep_conv_3x3"), [2, 3], cell_of("sep_conv_3x3"), [2, 3]).to_dict()
    d["normal"][0][0] = "my|op"
    d.pop("string")
    with pytest.raises(GradnasError, match="'my\\|op' is not valid"):
        genotype_from_dict(d)


# ------------------------------------------------------------------------------------ datasets


def test_dataset_is_converted_once_to_uint8_with_its_stats():
    train = Images(n=16)
    test = Images(n=8, seed=1)
    with registered_dataset("My_Dots", train, test=test, classes=["a", "b", "c", "d"]) as key:
        assert key == "my-dots" and dataset_key("MY_DOTS") == "my-dots"
        ds = load_dataset("my_dots")
        assert ds.name == "my-dots" and ds.classes == ["a", "b", "c", "d"]
        assert ds.train_x.dtype == torch.uint8 and ds.train_x.shape == (16, 3, 8, 8) and ds.test_x.shape == (8, 3, 8, 8)
        assert torch.equal(ds.train_x[3], (train[3][0] * 255).round().to(torch.uint8))
        assert ds.train_y.tolist() == [k % 4 for k in range(16)]
        assert (ds.mean, ds.std) == channel_stats(ds.train_x)
        train.items.clear()  # read once, at registration: later loads do not go back to the Dataset
        assert torch.equal(load_dataset("my-dots").train_x, ds.train_x)
        with pytest.raises(GradnasError, match="in-memory images.*remove data_dir"):
            load_dataset("my-dots", "/tmp")
    uint8 = Images(items=[(torch.full((1, 4, 4), 200, dtype=torch.uint8), torch.tensor(k % 2)) for k in range(4)])
    with registered_dataset("bytes", uint8):
        ds = load_dataset("bytes")
        assert (ds.train_x == 200).all() and ds.classes == ["0", "1"] and len(ds.test_y) == 0
        assert ds.test_x.shape == (0, 1, 4, 4)


def test_loader_function_gets_the_data_dir():
    seen = []

    def loader(data_dir):
        seen.append(data_dir)
        x = torch.zeros(4, 1, 4, 4, dtype=torch.uint8)
        return ImageDataset("fn", x, torch.tensor([0, 1, 0, 1]), x, torch.tensor([1, 0, 1, 0]), ["p", "q"], (0.0,),
                            (1.0,))

    with registered_dataset("fn-set", loader):
        assert load_dataset("fn-set").num_classes == 2 and load_dataset("fn_set", "/some/where").channels == 1
        assert seen == [None, "/some/where"]
    with registered_dataset("bad-fn", lambda d: "nope"):
        with pytest.raises(GradnasError, match="^bad-fn: the registered loader returned str, not an ImageDataset"):
            load_dataset("bad-fn")


def test_unknown_dataset_lists_registered_names():
    with registered_dataset("dots", Images(n=4)):
        with pytest.raises(GradnasError, match="unknown dataset 'dits'.*cifar10, dots, fashion-mnist, imagefolder"):
            load_dataset("dits")
    with pytest.raises(GradnasError, match="unknown dataset 'dots'"):
        load_dataset("dots")


def _image_items(*images, labels=None):
    labels = labels if labels is not None else [0] * len(images)
    return Images(items=list(zip(images, labels)))


@pytest.mark.parametrize("dataset,message", [
    (_image_items([[0.5]]), "item 0: the image is a list, not a tensor"),
    (_image_items(torch.rand(8, 8)), "item 0: the image has shape \\(8, 8\\), expected C x H x W"),
    (_image_items(torch.rand(3, 8, 8), torch.rand(3, 8, 8) * 2), "item 1: float image values span .* outside \\[0, 1\\]"),
    (_image_items(torch.full((1, 4, 4), float("nan"))), "outside \\[0, 1\\]"),
    (_image_items(torch.zeros(3, 8, 8, dtype=torch.int32)), "torch.int32; give uint8"),
    (_image_items(torch.rand(3, 8, 8), torch.rand(3, 8, 9)), "item 1: the image is 3x8x9 but the others are 3x8x8"),
    (_image_items(torch.rand(3, 8, 8), labels=[-1]), "label -1 is negative"),
    (_image_items(torch.rand(3, 8, 8), labels=[1.0]), "the label is 1.0 \\(float\\), not an int"),
    (_image_items(torch.rand(3, 8, 8), labels=[True]), "not an int"),
    (Images(items=[torch.rand(3, 8, 8)]), "item 0: expected an \\(image, label\\) pair"),
    (Images(items=[]), "the dataset is empty"),
])
def test_register_dataset_refuses_bad_items(dataset, message):
    with pytest.raises(GradnasError, match=message):
        register_dataset("broken", dataset)
    assert "broken" not in DATASETS


def test_register_dataset_refusals():
    with pytest.raises(GradnasError, match="label 4 is out of range for the 4 class names"):
        register_dataset("dots", Images(n=8, classes=5), classes="abcd")
    with pytest.raises(GradnasError, match="test set item 0: the image is 1x8x8 but the others are 3x8x8"):
        register_dataset("dots", Images(n=4), test=Images(n=4, shape=(1, 8, 8)))
    with pytest.raises(GradnasError, match="built-in"):
        register_dataset("Fashion_MNIST", Images(n=4))
    with pytest.raises(GradnasError, match="built in"):
        unregister_dataset("cifar10")
    with pytest.raises(GradnasError, match="letters, digits"):
        register_dataset("my/set", Images(n=4))
    with pytest.raises(GradnasError, match="loader function .* or a map-style torch Dataset"):
        register_dataset("dots", 42)
    with pytest.raises(GradnasError, match="test= and classes= go with a Dataset source"):
        register_dataset("dots", lambda d: None, classes=["a"])
    register_dataset("dots", Images(n=4))
    with pytest.raises(GradnasError, match="already registered"):
        register_dataset("DOTS", Images(n=4))
    register_dataset("dots", Images(n=4, shape=(1, 5, 5)), replace=True)
    assert load_dataset("dots").train_x.shape == (4, 1, 5, 5)
    unregister_dataset("dots")
    with pytest.raises(GradnasError, match="not registered"):
        unregister_dataset("dots")


# ------------------------------------------------------------------------------------ end to end


def test_search_with_a_registered_op_on_a_registered_dataset(tmp_path):
    with registered_op("my_free", tanh_op, parameter_free=True), registered_op("my_conv", plain_conv(3), conv=True), \
            registered_dataset("rand-dots", Images(n=64, classes=4)):
        cfg = SearchConfig.from_dict({
            "method": "milenas", "epochs": 1, "batch_size": 16, "seed": 3, "device": "cpu",
            "data": {"dataset": "rand_dots", "eval_batches": 2},
            "supernet": {"cells": 3, "channels": 4, "nodes": 2, "ops": ["none", "my_free", "my_conv", "sep_conv_3x3"]}})
        search = Search(cfg, tmp_path, progress=False)
        assert search.model.classifier.out_features == 4 and "my_free" in search.model.cells[0].edges["2_0"]
        summary = search.run()
        assert summary["finished"]
        geno = load_genotype(summary["genotype"])
        assert geno == search.model.genotype() and geno.validate(cfg.supernet.ops, 2)


def test_training_on_a_registered_dataset(tmp_path):
    geno = Genotype(cell_of("my_conv", "skip_connect"), [2, 3], cell_of("my_conv", "max_pool_3x3"), [2, 3])
    with registered_op("my_conv", plain_conv(3), conv=True), \
            registered_dataset("rand-dots", Images(n=16, classes=4), test=Images(n=8, classes=4, seed=1)):
        cfg = TrainConfig.from_dict({
            "epochs": 1, "batch_size": 8, "seed": 1, "device": "cpu",
            "data": {"dataset": "rand-dots", "crop_padding": 2, "cutout": 4, "workers": 0},
            "network": {"cells": 3, "channels": 4, "auxiliary_weight": 0.4, "drop_path": 0.2},
            "optim": {"lr": 0.05}})
        summary = Training(cfg, geno, tmp_path, progress=False).run()
        assert summary["finished"]
    with registered_op("my_conv", plain_conv(3), conv=True), registered_dataset("no-test", Images(n=16)):
        cfg = TrainConfig.from_dict({"epochs": 1, "device": "cpu", "data": {"dataset": "no-test"},
                                     "network": {"cells": 3, "channels": 4}})
        with pytest.raises(GradnasError, match="no test split.*register_dataset\\(\\.\\.\\., test=\\.\\.\\.\\)"):
            Training(cfg, geno, tmp_path / "b", progress=False).run()
