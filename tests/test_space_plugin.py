"""The search-space plug-in (gradnas.space.base): every registered space answers the same questions
consistently, and a third space defined here works through the registry without an edit in gradnas."""
import json
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gradnas.benchmark import benchmark_for
from gradnas.errors import GradnasError
from gradnas.report.cells import cell_graphs, digraph, op_edge
from gradnas.report.params import NOTE
from gradnas.search.probes import SearchedCells
from gradnas.search.sizes import SizeTracker, conv_counts, eval_params_m
from gradnas.space import (SPACES, SearchSpace, SupernetCells, build_network, build_supernet, check_genotype,
                           get_space, register_space, space_class, space_of)
from gradnas.space.base import unregister_space
from gradnas.space.darts import DartsSpaceConfig
from gradnas.space.genotype import FORMAT, load_genotype, non_learnable_share, save_genotype
from gradnas.space.ops import CONV_OPS, OPS, PARAMETER_FREE_OPS
from gradnas.train.config import NetworkConfig

# Small shapes of the builtin spaces, so every check runs in well under a second; any other registered
# space is tried at its defaults.
TINY = {"darts": {"cells": 3, "channels": 4, "nodes": 2, "channels_last": False},
        "nb201": {"cells_per_stage": 1, "channels": 4, "channels_last": False}}
TINY_NETWORK = NetworkConfig(cells=3, channels=4, auxiliary_weight=0.0, drop_path=0.0)
REGISTERED = sorted(SPACES)


def _tiny_search(name, seed=0):
    """(space, its tiny config, a supernet with spread-out alpha, the genotype it derives)."""
    space = get_space(name)
    cfg = space.config_class(**TINY.get(name, {}))
    model = build_supernet(name, cfg, "softmax", in_channels=3, num_classes=5, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for a in model.arch_parameters():
            a.copy_(torch.randn(a.shape, generator=g))
    return space, cfg, model, model.genotype()


@pytest.mark.parametrize("name", REGISTERED)
def test_supernet_genotype_round_trips_through_string_and_json(name, tmp_path):
    space, cfg, model, geno = _tiny_search(name)
    assert isinstance(model, space.supernet_class) and space_class(name) is space.supernet_class
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 5)
    ids_w, ids_a = ({id(p) for p in model.weight_parameters()}, {id(p) for p in model.arch_parameters()})
    assert ids_a and not ids_w & ids_a and ids_w | ids_a == {id(p) for p in model.parameters()}
    assert model.edge_weights()
    assert isinstance(geno, space.genotype_class) and space_of(geno) is space and geno.space == name
    assert check_genotype(geno, name, cfg) is geno and space.check_genotype(geno, cfg) is geno
    # the string: its own space reads it, every other space says "not mine", load_genotype finds it
    text = geno.to_string()
    assert space.parse_genotype(text) == geno and load_genotype(text) == geno
    assert all(other.parse_genotype(text) is None for other in SPACES.values() if other is not space)
    # JSON, through the plug-in and through a file
    d = json.loads(json.dumps(geno.to_dict()))
    assert d["space"] == name and d["format"] == FORMAT and space.genotype_from_dict(d) == geno
    save_genotype(geno, tmp_path / "g.json")
    assert load_genotype(tmp_path / "g.json") == geno


@pytest.mark.parametrize("name", REGISTERED)
def test_a_genotype_of_another_space_is_refused(name):
    space, cfg, _, _ = _tiny_search(name)
    for other in REGISTERED:
        if other != name:
            foreign = _tiny_search(other)[3]
            with pytest.raises(GradnasError, match=f"cell of the '{other}' space, not of '{name}'; use --space"):
                space.check_genotype(foreign, cfg)


@pytest.mark.parametrize("name", REGISTERED)
def test_evaluation_network_runs(name):
    _, _, _, geno = _tiny_search(name)
    net = build_network(geno, TINY_NETWORK, in_channels=3, num_classes=5).eval()
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 5)


@pytest.mark.parametrize("name", REGISTERED)
def test_sizes_and_ops_agree(name):
    space, cfg, _, geno = _tiny_search(name)
    ops = space.chosen_ops(geno)
    n, r = space.conv_counts(geno)
    assert n >= 0 and r >= 0 and n + r == sum(op in CONV_OPS for op in ops)
    assert conv_counts(geno) == (n, r)  # gradnas.search.sizes asks the plug-in
    assert non_learnable_share(geno) == sum(op in PARAMETER_FREE_OPS for op in ops) / len(ops)
    params = space.eval_params_m(geno)
    assert params > 0 and eval_params_m(geno) == params
    assert space.search_width_params(geno, cfg, in_channels=3, num_classes=5) > 0
    assert NOTE[name] == space.params_note
    # the derived size is one a stop rule may name; a size larger than all chosen ops never
    assert space.check_stop_size([n, r], cfg) == (n, r)
    for impossible in ([len(ops) + 1, 0], [0, len(ops) + 1], [1, 2, 3]):
        with pytest.raises(GradnasError, match="stop.at_size"):
            space.check_stop_size(impossible, cfg)


@pytest.mark.parametrize("name", REGISTERED)
def test_draw_probe_and_benchmark(name):
    space, _, model, geno = _tiny_search(name)
    graphs = space.draw(geno)
    assert graphs and set(cell_graphs(geno)) == set(graphs)
    assert all("->" in g.source for g in graphs.values())
    cells = space.searched_cells(model)
    searched = SearchedCells(model)
    assert searched.cells == cells.cells and len(cells.kinds) == len(cells.cells) > 0
    assert searched.targets == sorted({t for t, _ in cells.edges})
    bench = space.benchmark
    assert benchmark_for(name) is bench
    if bench is not None:
        key, lookup = bench
        assert key == bench.key and all(0 < acc <= 100 for acc in lookup(geno).values())


def test_builtin_answers():
    darts, nb201 = get_space("darts"), get_space("nb201")
    assert (darts.section, nb201.section) == ("supernet", "nb201")
    assert darts.shape_keys == {"cells": "cells", "channels": "channels"}
    assert nb201.shape_keys == {"cells": "cells_per_stage", "channels": "channels"}
    assert darts.benchmark is None and nb201.benchmark.key == "nb201"
    nb = nb201.parse_genotype("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|none~1|skip_connect~2|")
    assert nb201.conv_counts(nb) == (4, 0)
    assert nb201.check_stop_size([4], None) == (4, 0) == nb201.check_stop_size([4, 0], None)
    with pytest.raises(GradnasError, match="no searched reduction cell; give N alone or N,0"):
        nb201.check_stop_size([4, 1], None)
    with pytest.raises(GradnasError, match="give N,R"):
        darts.check_stop_size([4], DartsSpaceConfig())
    pools = DartsSpaceConfig(ops=("none", "max_pool_3x3", "skip_connect"))
    with pytest.raises(GradnasError, match="at most 0 conv ops"):
        darts.check_stop_size([1, 0], pools)


def test_registry_refuses_duplicates_and_malformed_plug_ins():
    with pytest.raises(GradnasError, match="unknown space 'nasnet'; valid spaces: darts, nb201"):
        get_space("nasnet")
    with pytest.raises(GradnasError, match="'darts' is registered already"):
        register_space(type(get_space("darts")))
    with pytest.raises(GradnasError, match="expected a gradnas.space.SearchSpace"):
        register_space(object())
    with pytest.raises(GradnasError, match="not a subclass"):
        register_space(dict)

    class Half(SearchSpace):
        name = "half"

    with pytest.raises(GradnasError, match="Half does not implement .*build_network"):
        register_space(Half)

    def variant(**attrs):
        return type("Variant", (ChainSpace,), attrs)

    try:
        _refuse_variants(variant)
    finally:
        SPACES.pop("chain", None)  # nothing may stay registered if a variant were accepted
    assert sorted(SPACES) == ["darts", "nb201"]


def _refuse_variants(variant):
    for attrs, message in [({"name": "not a name"}, "name that is an identifier"),
                           ({"section": "nb201"}, "section 'nb201' belongs to space 'nb201'"),
                           ({"genotype_class": dict}, "whose 'space' is None"),
                           ({"shape_keys": {"cells": "depth"}}, "not fields of ChainConfig"),
                           ({"shape_keys": {"width": "channels"}}, "shape_keys to map"),
                           ({"string_form": ""}, "needs string_form"),
                           ({"benchmark": ("key", None)}, "Benchmark\\(key, lookup\\)")]:
        with pytest.raises(GradnasError, match=message):
            register_space(variant(**attrs))


# ---- a third space, defined only here -----------------------------------------------------------------
# "chain": every cell is a chain of `length` edges (node i reads node i - 1 through one op of CHAIN_OPS);
# all cells share one alpha, as NB-201's do; a stem conv before the cells, a linear classifier after.

CHAIN_OPS = ("skip_connect", "nor_conv_3x3", "avg_pool_3x3")


@dataclass(frozen=True)
class ChainConfig:
    cells: int = 2
    channels: int = 4
    length: int = 3

    def __post_init__(self):
        if min(self.cells, self.channels, self.length) < 1:
            raise GradnasError("chain: cells, channels and length must be >= 1")

    @property
    def ops(self) -> tuple:
        return CHAIN_OPS


@dataclass(frozen=True)
class ChainGenotype:
    ops: tuple
    space: ClassVar[str] = "chain"

    def __post_init__(self):
        object.__setattr__(self, "ops", tuple(self.ops))
        unknown = [op for op in self.ops if op not in CHAIN_OPS]
        if unknown or not self.ops:
            raise GradnasError(f"a chain cell is a non-empty list of ops of {CHAIN_OPS}, got {list(self.ops)}")

    def to_string(self) -> str:
        return "chain:" + ">".join(self.ops)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "space": self.space, "string": self.to_string(), "ops": list(self.ops)}

    @classmethod
    def from_dict(cls, d, *, source="genotype"):
        if not isinstance(d.get("ops"), list):
            raise GradnasError(f"{source}: a chain genotype needs 'ops', a list of op names")
        return cls(tuple(d["ops"]))


def _stem(in_channels, c):
    return nn.Sequential(nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))


class ChainSearchCell(nn.Module):
    def __init__(self, c, length):
        super().__init__()
        self.edges = nn.ModuleList(nn.ModuleDict({op: OPS[op](c, 1, False) for op in CHAIN_OPS})
                                   for _ in range(length))
        self.on_node = None

    def forward(self, x, weights, active=None):
        for i, edge in enumerate(self.edges):
            cols = range(len(CHAIN_OPS)) if active is None else active[i]
            x = sum(weights[i, k] * edge[CHAIN_OPS[k]](x) for k in cols)
            if self.on_node is not None:
                self.on_node(i + 1, x)
        return x


class ChainSupernet(nn.Module):
    def __init__(self, cfg, relaxation, *, in_channels, num_classes, generator):
        super().__init__()
        self.cfg, self.relaxation = cfg, relaxation
        self.stem = _stem(in_channels, cfg.channels)
        self.cells = nn.ModuleList(ChainSearchCell(cfg.channels, cfg.length) for _ in range(cfg.cells))
        self.classifier = nn.Linear(cfg.channels, num_classes)
        self.alpha = nn.Parameter(relaxation.init_alpha(cfg.length, len(CHAIN_OPS), generator))

    def arch_parameters(self):
        return [self.alpha]

    def weight_parameters(self):
        return [p for p in self.parameters() if p is not self.alpha]

    def forward(self, x):
        weights, active = self.relaxation.forward_weights(self.alpha, training=self.training)
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x, weights, active)
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))

    @torch.no_grad()
    def genotype(self):
        return ChainGenotype(tuple(CHAIN_OPS[k] for k in self.relaxation.weights(self.alpha).argmax(1).tolist()))

    @torch.no_grad()
    def edge_weights(self):
        rows = self.relaxation.weights(self.alpha).tolist()
        return {"chain": {f"{i + 1}<-{i}": dict(zip(CHAIN_OPS, r)) for i, r in enumerate(rows)}}


class ChainNetwork(nn.Module):
    def __init__(self, genotype, *, cells, channels, in_channels, num_classes):
        super().__init__()
        self.stem = _stem(in_channels, channels)
        self.cells = nn.Sequential(*(nn.Sequential(*(OPS[op](channels, 1, True) for op in genotype.ops))
                                     for _ in range(cells)))
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.classifier(F.adaptive_avg_pool2d(self.cells(self.stem(x)), 1).flatten(1))


class ChainSpace(SearchSpace):
    name = "chain"
    section = "chain"
    config_class = ChainConfig
    genotype_class = ChainGenotype
    supernet_class = ChainSupernet
    shape_keys = {"cells": "cells", "channels": "channels"}
    string_form = "chain 'chain:op>op>...'"
    params_note = "the chain network at the search's cells and channels"

    def searched_cells(self, model):
        return SupernetCells(cells=list(model.cells), kinds=["chain"] * len(model.cells), weight_arg=1,
                             edges=[(i + 1, i) for i in range(model.cfg.length)])

    def parse_genotype(self, text):
        text = str(text).strip()
        return ChainGenotype(tuple(text[len("chain:"):].split(">"))) if text.startswith("chain:") else None

    def check_fit(self, genotype, space_cfg):
        if len(genotype.ops) != space_cfg.length:
            raise GradnasError(f"the chain genotype has {len(genotype.ops)} edges, the space {space_cfg.length}")
        return genotype

    def chosen_ops(self, genotype):
        return list(genotype.ops)

    def conv_counts(self, genotype):
        return sum(op in CONV_OPS for op in genotype.ops), 0

    def check_stop_size(self, size, space_cfg):
        size = tuple(size)
        if not 1 <= len(size) <= 2 or size[1:] not in ((), (0,)) or size[0] > space_cfg.length:
            raise GradnasError(f"config: stop.at_size {list(size)}: a chain cell has at most {space_cfg.length} convs "
                               "and no reduction cell")
        return size[0], 0

    def eval_params_m(self, genotype):
        with torch.device("meta"):
            net = ChainNetwork(genotype, cells=3, channels=16, in_channels=3, num_classes=10)
        return sum(p.numel() for p in net.parameters()) / 1e6

    def search_width_params(self, genotype, space_cfg, *, in_channels, num_classes):
        net = ChainNetwork(genotype, cells=space_cfg.cells, channels=space_cfg.channels, in_channels=in_channels,
                           num_classes=num_classes)
        return sum(p.numel() for p in net.parameters())

    def draw(self, genotype):
        g = digraph("chain cell")
        for i, op in enumerate(genotype.ops):
            op_edge(g, str(i), str(i + 1), op)
        return {"chain": g}

    def build_network(self, genotype, net_cfg, *, in_channels, num_classes):
        return ChainNetwork(genotype, cells=net_cfg.cells, channels=net_cfg.channels, in_channels=in_channels,
                            num_classes=num_classes)


@pytest.fixture
def chain():
    space = register_space(ChainSpace)  # the class form: registered as an instance
    try:
        yield space
    finally:
        unregister_space("chain")


def test_a_registered_space_is_searched_and_trained_through_the_config_and_the_harness(chain, tmp_path):
    """The third space is configured by its own section, searched by the shared loop (genotype.json, metrics,
    model sizes, exact resume) and its genotype trained, with no edit in gradnas."""
    from gradnas.config import SearchConfig
    from gradnas.search.loop import Search
    from gradnas.train.config import TrainConfig
    from gradnas.train.loop import Training
    d = {"space": "chain", "method": "darts", "epochs": 2, "batch_size": 16, "seed": 1, "device": "cpu",
         "threads": 1, "chain": {"cells": 1, "channels": 4, "length": 2},
         "data": {"dataset": "fashion-mnist", "data_dir": "/usr/share/datasets/fashion-mnist", "subset": 64}}
    cfg = SearchConfig.from_dict(d)
    assert cfg.space_config == ChainConfig(cells=1, channels=4, length=2)
    assert SearchConfig.from_dict(cfg.to_dict()) == cfg  # the section round-trips through config.yaml
    full = Search(cfg, tmp_path / "full", progress=False)
    summary = full.run()
    genotype = load_genotype(tmp_path / "full" / "genotype.json")
    assert isinstance(genotype, ChainGenotype) and summary["genotype"] == genotype.to_string()
    lines = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [line["normal_convs"] for line in lines] == [chain.conv_counts(load_genotype(line["genotype"]))[0]
                                                        for line in lines]
    Search(cfg, tmp_path / "resumed", progress=False).run(stop_after=1)
    resumed = Search(cfg, tmp_path / "resumed", resume=True, progress=False)
    resumed.run()
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    train = TrainConfig.from_dict({"epochs": 1, "batch_size": 16, "device": "cpu", "threads": 1,
                                   "data": {"dataset": "fashion-mnist", "data_dir": "/usr/share/datasets/fashion-mnist",
                                            "subset": 32, "cutout": 0},
                                   "network": {"cells": 1, "channels": 4, "auxiliary_weight": 0, "drop_path": 0}})
    result = Training(train, genotype, tmp_path / "train", progress=False).run()
    assert result["finished"] and 0 <= result["test_acc"] <= 100


def test_a_third_space_works_through_the_registry(chain, tmp_path):
    assert get_space("chain") is chain and isinstance(chain, ChainSpace)
    geno = load_genotype("chain:skip_connect>nor_conv_3x3>avg_pool_3x3")
    assert isinstance(geno, ChainGenotype) and space_of(geno) is chain
    save_genotype(geno, tmp_path / "g.json")
    assert load_genotype(tmp_path / "g.json") == geno
    cfg = ChainConfig()
    assert check_genotype(geno, "chain", cfg) is geno
    with pytest.raises(GradnasError, match="has 2 edges, the space 3"):
        check_genotype(load_genotype("chain:skip_connect>skip_connect"), "chain", cfg)
    with pytest.raises(GradnasError, match="cell of the 'nb201' space, not of 'chain'"):
        check_genotype(load_genotype("|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|"), "chain", cfg)

    model = build_supernet("chain", cfg, "softmax", in_channels=3, num_classes=5)
    assert isinstance(model, ChainSupernet) and model(torch.randn(2, 3, 8, 8)).shape == (2, 5)
    assert isinstance(model.genotype(), ChainGenotype)
    assert SearchedCells(model).kinds == ["chain", "chain"]
    with pytest.raises(GradnasError, match="configured by ChainConfig"):
        build_supernet("chain", DartsSpaceConfig(), "softmax", in_channels=3, num_classes=5)

    net = build_network(geno, TINY_NETWORK, in_channels=3, num_classes=5)
    assert isinstance(net, ChainNetwork) and net(torch.randn(2, 3, 8, 8)).shape == (2, 5)
    assert conv_counts(geno) == (1, 0) and eval_params_m(geno) > 0
    assert non_learnable_share(geno) == 2 / 3
    assert set(cell_graphs(geno)) == {"chain"}
    assert benchmark_for("chain") is None and NOTE["chain"] == chain.params_note

    # the model-size tracker writes and re-reads the third space's genotypes too
    tracker = SizeTracker()
    assert tracker.update(1, geno, 50.0) == {"normal_convs": 1, "reduce_convs": 0, "params_m": round(
        eval_params_m(geno), 6)}
    tracker.write(tmp_path, everything=True)
    assert load_genotype(tmp_path / "sizes" / "size-1-0.json") == geno


def test_the_third_space_is_gone_after_its_test():
    assert "chain" not in SPACES
    with pytest.raises(GradnasError, match="neither a file nor a genotype string"):
        load_genotype("chain:skip_connect")
