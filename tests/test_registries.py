"""Tests parametrized over the registries (timm-style): every registered method x relaxation x space (each
method at the orders it declares), every op of the op table, every space, so a newly registered component is
tested without new test code. A combination the library refuses must be refused at construction with a
GradnasError that names what is wrong."""
import dataclasses
import json
import math

import pytest
import torch

from gradnas.config import SearchConfig
from gradnas.data import registered_dataset
from gradnas.errors import GradnasError
from gradnas.registry import RESERVED_KEYS
from gradnas.relax import RELAXATIONS
from gradnas.search.algorithm import METHODS, SearchAlgorithm
from gradnas.search.loop import Search
from gradnas.space import SPACES, build_network, build_supernet, get_space, space_of
from gradnas.space.genotype import load_genotype
from gradnas.space.ops import OPS
from gradnas.train.config import NetworkConfig

DATASET = "registry-tiny"
CLASSES = 4
# The smallest shapes of the built-in spaces; any other registered space runs at its defaults.
TINY_SPACE = {"darts": {"cells": 3, "channels": 4, "nodes": 2, "channels_last": False},
              "nb201": {"cells_per_stage": 1, "channels": 4, "channels_last": False}}
TINY_PVLL = {"population": 2, "steps": 2, "hidden": 4, "warmup_updates": 2, "estimator_updates": 1,
             "train_batches": 1, "val_batches": 1}
COMBOS = [(m, o, r, s) for m in sorted(METHODS) for o in METHODS[m].orders for r in sorted(RELAXATIONS)
          for s in sorted(SPACES)]
UNDECLARED = [(m, o) for m in sorted(METHODS) for o in (1, 2) if o not in METHODS[m].orders]


class Tiny(torch.utils.data.Dataset):
    """32 3x8x8 images of 4 classes (a bright quadrant per class), deterministic."""

    def __init__(self, n=32):
        g = torch.Generator().manual_seed(5)
        self.x = torch.rand(n, 3, 8, 8, generator=g) * 0.5
        self.y = torch.arange(n) % CLASSES
        for i, k in enumerate(self.y.tolist()):
            self.x[i, :, 4 * (k // 2):4 * (k // 2) + 4, 4 * (k % 2):4 * (k % 2) + 4] += 0.5

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


@pytest.fixture(autouse=True)
def _threads():
    """One CPU thread (overrides conftest's two): these tiny shapes are fastest so, also on a busy machine."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module", autouse=True)
def tiny_dataset():
    with registered_dataset(DATASET, Tiny()) as key:
        yield key


def _section(space: str) -> str:
    return get_space(space).section


def _config(method, order, relax, space) -> dict:
    d = {"method": method, "order": order, "relax": relax, "space": space, "batch_size": 16, "seed": 1,
         "device": "cpu", "threads": 1, "arch_optim": {"lr": 0.01},
         "data": {"dataset": DATASET, "subset": 32, "crop_padding": 0}}
    if space in TINY_SPACE:
        d[_section(space)] = dict(TINY_SPACE[space])
    if issubclass(METHODS[method], SearchAlgorithm):  # pvll: rounds, not epochs
        d["pvll"] = dict(TINY_PVLL)
        d.pop("arch_optim")
    else:
        d["epochs"] = 1
        d["data"]["eval_batches"] = 1
    return d


def _open(tmp_path, method, order, relax, space):
    cfg = SearchConfig.from_dict(_config(method, order, relax, space))
    return Search(cfg, tmp_path / "run", progress=False)


def _arch(search):
    pvll = getattr(search.algorithm, "pvll", None)
    if pvll is not None and hasattr(pvll, "A"):
        return [pvll.A.detach().clone()]
    return [a.detach().clone() for a in search.model.arch_parameters()]


def test_the_grid_covers_every_registered_component():
    assert {m for m, *_ in COMBOS} == set(METHODS)
    assert {r for _, _, r, _ in COMBOS} == set(RELAXATIONS) and {s for *_, s in COMBOS} == set(SPACES)
    assert {"single-level", "darts", "milenas", "pvll"} <= set(METHODS)


@pytest.mark.parametrize("method, order, relax, space", COMBOS, ids=["-".join(map(str, c)) for c in COMBOS])
def test_one_tiny_search(method, order, relax, space, tmp_path):
    try:
        search = _open(tmp_path, method, order, relax, space)
    except GradnasError as exc:
        message = str(exc)
        assert len(message) > 20 and (method in message or relax in message or space in message), message
        assert not (tmp_path / "run" / "checkpoint.pt").exists()
        pytest.skip(f"refused: {message}")
    assert not (method == "pvll" and relax == "sigmoid"), "pvll samples from softmax(A); sigmoid must be refused"
    before = _arch(search)
    summary = search.run()
    assert summary["finished"] and search.done == search.job.units()
    # shapes: the supernet maps a batch of the dataset's images to one logit per class
    model = search.model.eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 8, 8)).shape == (2, CLASSES)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == search.job.units()
    for value in (summary.get("valid_loss"), summary.get("best_valid_acc")):
        assert value is None or math.isfinite(value)
    for line in map(json.loads, lines):
        for key in ("train_loss", "valid_loss", "arch_batch_loss"):
            if key in line:
                assert math.isfinite(line[key]), (key, line[key])
    after = _arch(search)
    assert [a.shape for a in before] == [a.shape for a in after]
    assert any(not torch.equal(a, b) for a, b in zip(before, after)), "the architecture did not change"
    geno = search.algorithm.genotype()
    plugin = get_space(space)
    assert space_of(geno) is plugin and geno.space == space
    text = geno.to_string()
    assert text == summary["genotype"]
    assert plugin.parse_genotype(text) == geno and load_genotype(text) == geno
    assert load_genotype(tmp_path / "run" / "genotype.json") == geno


@pytest.mark.parametrize("method, order", UNDECLARED, ids=[f"{m}-{o}" for m, o in UNDECLARED])
def test_an_undeclared_order_is_refused(method, order, tmp_path):
    with pytest.raises(GradnasError, match=rf"{method}.*order|order.*{method}"):
        _open(tmp_path, method, order, "softmax", "darts")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_known_refusals_are_clear(tmp_path):
    if "pvll" in METHODS:
        with pytest.raises(GradnasError, match="pvll.*not relax 'sigmoid'"):
            _open(tmp_path, "pvll", 1, "sigmoid", "darts")
    with pytest.raises(GradnasError, match="method 'single-level' supports order 1, not 2"):
        _open(tmp_path, "single-level", 2, "softmax", "darts")
    d = _config("darts", 1, "softmax", "darts")
    d["probes"] = {"gap": True}
    d["method"] = "pvll"
    d.pop("epochs"), d["data"].pop("eval_batches"), d.pop("arch_optim")
    d["pvll"] = dict(TINY_PVLL)
    with pytest.raises(GradnasError, match="probes.*pvll"):
        Search(SearchConfig.from_dict(d), tmp_path / "p", progress=False)


# ---- the op table --------------------------------------------------------------------------------------

OP_NAMES = sorted(OPS)


@pytest.mark.parametrize("op", OP_NAMES)
def test_an_evaluation_network_with_each_op_runs(op):
    text = (f"normal=|{op}~0|skip_connect~1|+|{op}~1|{op}~2|;"
            f"reduce=|{op}~0|{op}~1|+|skip_connect~0|{op}~2|")
    net_cfg = NetworkConfig(cells=3, channels=4, auxiliary_weight=0.0, drop_path=0.0)
    if op == "none":  # derivation never keeps `none`; a genotype naming it is refused, by name
        with pytest.raises(GradnasError, match="op 'none' is not in the space"):
            build_network(load_genotype(text), net_cfg, in_channels=3, num_classes=CLASSES)
        return
    net = build_network(load_genotype(text), net_cfg, in_channels=3, num_classes=CLASSES).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 8, 8))
    out = out[0] if isinstance(out, tuple) else out
    assert out.shape == (2, CLASSES) and torch.isfinite(out).all()


@pytest.mark.parametrize("op", OP_NAMES)
def test_each_op_keeps_its_shape(op):
    for stride in (1, 2):
        module = OPS[op](4, stride, False).eval()
        with torch.no_grad():
            assert module(torch.rand(2, 4, 7, 7)).shape == (2, 4, 4 if stride == 2 else 7, 4 if stride == 2 else 7)


# ---- the spaces ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("space", sorted(SPACES))
def test_each_space_plugin_answers(space):
    plugin = get_space(space)
    cfg = plugin.config_class(**TINY_SPACE.get(space, {}))
    for relax in sorted(RELAXATIONS):
        model = build_supernet(space, cfg, relax, in_channels=3, num_classes=CLASSES, seed=0)
        assert model(torch.rand(2, 3, 8, 8)).shape == (2, CLASSES)
        geno = model.genotype()
        assert isinstance(geno, plugin.genotype_class) and space_of(geno) is plugin
        assert plugin.parse_genotype(geno.to_string()) == geno == load_genotype(geno.to_string())
        assert plugin.genotype_from_dict(geno.to_dict()) == geno
        assert plugin.check_genotype(geno, cfg) is geno


def test_reserved_keys_are_the_top_level_keys_of_search_config():
    assert RESERVED_KEYS == {f.name for f in dataclasses.fields(SearchConfig)} | {"lambda"}
