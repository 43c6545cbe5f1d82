"""Search probes: gradient correlation and dL/dp against known answers and finite differences, and a
search with every probe on that ends exactly where the same search without probes ends."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import batch, tiny_nb201, tiny_supernet
from gradnas.errors import GradnasError
from gradnas.search.loop import Search
from gradnas.search.methods import make_method
from gradnas.search.probes import ProbeConfig, Probes, SearchedCells, alpha_objective, parse_edge_spec
from test_search import tiny_config


@pytest.fixture(autouse=True)
def _one_thread(_threads):
    # Tiny tensors gain nothing from a second thread, and a 2-thread pool is many times slower when
    # the cores are shared with other work (measured: 7 s vs 72 s for the same 2-epoch search).
    torch.set_num_threads(1)


class FixedPairs:
    """Stands in for PairedBatches: the same (weight batch, architecture batch) pairs every epoch."""

    def __init__(self, pairs):
        self.pairs = pairs

    def epoch(self, epoch):
        return iter(self.pairs)


def make_probes(model, method_name, pairs, **cfg):
    w_optim = torch.optim.SGD(model.weight_parameters(), lr=0.1)
    a_optim = torch.optim.Adam(model.arch_parameters(), lr=0.1)
    method = make_method(method_name, model, w_optim=w_optim, a_optim=a_optim, lam=cfg.pop("lam", 1.0))
    return Probes(ProbeConfig(**cfg), model=model, method=method, batches=FixedPairs(pairs), train_x=None,
                  train_y=None, evaluate=None, device=torch.device("cpu"))


def node_gradients(model, xy):
    """Reference: retain_grad on every node of every cell, one backward; batch-summed gradients."""
    nodes = {}
    for i, cell in enumerate(SearchedCells(model).cells):
        def keep(target, t, i=i):
            t.retain_grad()
            nodes[(i, target)] = t
        cell.on_node = keep
    model.zero_grad()
    F.cross_entropy(model(xy[0]), xy[1]).backward()
    for cell in SearchedCells(model).cells:
        cell.on_node = None
    return {k: t.grad.sum(0).double().flatten() for k, t in nodes.items()}


def test_grad_corr_is_one_for_identical_batches_and_matches_a_direct_computation():
    model = tiny_supernet(cells=3, nodes=2)
    b1, b2 = batch(n=6, seed=1), batch(n=6, seed=2)
    same = make_probes(model, "darts", [(b1, b1)], grad_corr=True, grad_corr_cells=(0, 1, 2), batches=1)
    corr = same.after_epoch(0, {})["grad_corr"]
    assert set(corr) == {"0", "1", "2"} and all(set(v) == {"2", "3"} for v in corr.values())
    for cell in corr.values():
        for value in cell.values():
            assert value == pytest.approx(1.0, abs=1e-9)

    diff = make_probes(model, "darts", [(b1, b2)], grad_corr=True, grad_corr_cells=(0, -1), batches=1,
                       grad_corr_form="proxy")
    corr = diff.after_epoch(0, {})["grad_corr"]
    g1, g2 = node_gradients(model, b1), node_gradients(model, b2)
    for cell in ("0", "2"):
        for node in ("2", "3"):
            a, b = g1[(int(cell), int(node))], g2[(int(cell), int(node))]
            expected = float(a.dot(b) / (a.norm() * b.norm()))
            assert corr[cell][node] == pytest.approx(expected, abs=1e-6)
            assert abs(expected) < 0.999  # different batches: not trivially 1


def test_grad_corr_follows_the_methods_alpha_objective():
    model = tiny_supernet(cells=3, nodes=2)
    b1, b2 = batch(n=6, seed=1), batch(n=6, seed=2)
    # single-level: alpha and w are updated from the same batch, whatever the architecture batch is
    single = make_probes(model, "single-level", [(b1, b2)], grad_corr=True, batches=1).after_epoch(0, {})
    assert all(v == pytest.approx(1.0, abs=1e-9) for c in single["grad_corr"].values() for v in c.values())
    # MiLeNAS: the alpha gradient is grad L_tr + lambda grad L_val (eq. 6)
    mil = make_probes(model, "milenas", [(b1, b2)], grad_corr=True, grad_corr_cells=(0,), batches=1,
                      lam=0.5, grad_corr_form="proxy").after_epoch(0, {})
    g1, g2 = node_gradients(model, b1)[(0, 2)], node_gradients(model, b2)[(0, 2)]
    ga = g1 + 0.5 * g2
    assert mil["grad_corr"]["0"]["2"] == pytest.approx(float(g1.dot(ga) / (g1.norm() * ga.norm())), abs=1e-6)


def eq13_direct(model, cell, node, sources, wb, ab, c_w, c_a):
    """Eq. 13 by hand: per-sample gradients from one backward per sample (retain_grad at the node), the edges'
    inputs as reported, the double sum over (j, k) in Python loops, the alpha batch c_w (weight) + c_a (arch)."""
    def per_sample(xy):
        out = []
        for j in range(len(xy[1])):
            seen = {}
            c = SearchedCells(model).cells[cell]
            c.on_node = lambda t, x: seen.setdefault(t, x)
            losses = F.cross_entropy(model(xy[0]), xy[1], reduction="none")
            c.on_node = None
            seen[node].retain_grad()
            losses[j].backward()
            out.append((seen[node].grad[j].flatten().double(),
                        [seen[s][j].detach().flatten().double() for s in sources]))
        model.zero_grad()
        return out

    def S(u, v):
        return sum(float(gu.dot(gv)) * sum(float(xu.dot(xv)) for xu, xv in zip(us, vs))
                   for gu, us in u for gv, vs in v)
    w, a = per_sample(wb), per_sample(ab)
    num = c_w * S(w, w) + c_a * S(a, w)
    den = (S(w, w) * (c_w ** 2 * S(w, w) + 2 * c_w * c_a * S(a, w) + c_a ** 2 * S(a, a))) ** 0.5
    return num / den


@pytest.mark.parametrize("method,lam,c", [("darts", 1.0, (0.0, 1.0)), ("milenas", 0.5, (1.0, 0.5))])
def test_grad_corr_exact_is_eq13_computed_sample_by_sample(method, lam, c):
    torch.manual_seed(0)
    model = tiny_supernet(cells=3, nodes=2, dtype=torch.float64)
    b1, b2 = batch(n=3, seed=1, dtype=torch.float64), batch(n=3, seed=2, dtype=torch.float64)
    probes = make_probes(model, method, [(b1, b2)], grad_corr=True, grad_corr_cells=(1,), batches=1, lam=lam)
    out = probes.after_epoch(0, {})
    assert out["grad_corr_form"] == "exact" and set(out["grad_corr"]["1"]) == {"2", "3"}
    proxy = make_probes(model, method, [(b1, b2)], grad_corr=True, grad_corr_cells=(1,), batches=1, lam=lam,
                        grad_corr_form="proxy").after_epoch(0, {})
    for node, sources in ((2, [0, 1]), (3, [0, 1, 2])):  # cell 1 is a reduction cell: strided edges from 0, 1
        expected = eq13_direct(model, 1, node, sources, b1, b2, *c)
        assert out["grad_corr"]["1"][str(node)] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert abs(out["grad_corr"]["1"][str(node)] - proxy["grad_corr"]["1"][str(node)]) > 1e-4


@pytest.mark.parametrize("name,order,expected", [
    ("single-level", 1, (1.0, 0.0)), ("darts", 1, (0.0, 1.0)), ("darts", 2, (0.0, 1.0)),
    ("milenas", 1, (1.0, 0.25)), ("milenas", 2, (0.25, 1.0)),  # second order puts lambda on L_tr
])
def test_alpha_objective_per_method(name, order, expected):
    model = tiny_supernet()
    method = make_method(name, model, w_optim=torch.optim.SGD(model.weight_parameters(), lr=0.1),
                         a_optim=torch.optim.Adam(model.arch_parameters()), order=order, lam=0.25)
    assert alpha_objective(method) == expected


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_dl_dp_matches_finite_differences(space):
    torch.manual_seed(0)
    if space == "darts":
        model = tiny_supernet(cells=3, nodes=2, dtype=torch.float64)
        specs = ("0:3<-*", "normal:2<-1", "reduce:3<-2")
        checks = (("0:3<-0", [0]), ("normal:2<-1", [0]), ("reduce:3<-2", [1, 2]))
        expected_keys = {"0:3<-0", "0:3<-1", "0:3<-2", "normal:2<-1", "reduce:3<-2"}
    else:  # three searched cells, one alpha for all of them
        model = tiny_nb201(cells_per_stage=1, dtype=torch.float64)
        specs = ("last:3<-*", "cell:2<-1")
        checks = (("2:3<-1", [2]), ("cell:2<-1", [0, 1, 2]))
        expected_keys = {"2:3<-0", "2:3<-1", "2:3<-2", "cell:2<-1"}
    xy = batch(n=4, seed=3, dtype=torch.float64)
    probes = make_probes(model, "single-level", [(xy, xy)], dl_dp_edges=specs, batches=1)
    out = probes.after_epoch(0, {})["dl_dp"]
    assert set(out) == expected_keys
    searched = SearchedCells(model)
    k = searched.weight_arg

    def loss_with(cells, row, col, eps):
        def pre_hook(module, args):
            w = args[k].clone()
            w[row, col] += eps
            return (*args[:k], w, *args[k + 1:])
        handles = [searched.cells[i].register_forward_pre_hook(pre_hook) for i in cells]
        try:
            with torch.no_grad():
                return float(F.cross_entropy(model(xy[0]), xy[1]))
        finally:
            for h in handles:
                h.remove()

    eps = 1e-6
    for key, cells in checks:
        target, source = map(int, key.split(":")[1].split("<-"))
        row = searched.edges.index((target, source))
        for col, op in enumerate(model.cfg.ops):
            fd = (loss_with(cells, row, col, eps) - loss_with(cells, row, col, -eps)) / (2 * eps)
            assert out[key][op] == pytest.approx(fd, rel=1e-5, abs=1e-8), (key, op)
        assert out[key]["none"] == 0.0  # `none` contributes exactly zero


def test_nb201_grad_corr_and_sampling_relaxations():
    model = tiny_nb201(cells_per_stage=1)
    b1 = batch(n=6, seed=1)
    corr = make_probes(model, "darts", [(b1, b1)], grad_corr=True, batches=1).after_epoch(0, {})["grad_corr"]
    assert set(corr) == {"0", "1", "2"} and set(corr["0"]) == {"1", "2", "3"}
    assert all(v == pytest.approx(1.0, abs=1e-9) for c in corr.values() for v in c.values())
    with pytest.raises(GradnasError, match="need a relaxation that computes every op"):
        make_probes(tiny_nb201("gumbel"), "darts", [], grad_corr=True)
    with pytest.raises(GradnasError, match="neither an index, last, nor a cell kind of this space \\(cell\\)"):
        make_probes(model, "darts", [], dl_dp_edges=("normal:2<-0",))


def test_probes_do_not_change_the_search(tmp_path):
    probes = {"gap": True, "grad_corr": True, "dl_dp_edges": ["last:3<-*", "normal:2<-0"], "batches": 2}
    plain = Search(tiny_config(method="milenas", threads=1), tmp_path / "plain", progress=False)
    plain.run()
    probed = Search(tiny_config(method="milenas", probes=probes, threads=1), tmp_path / "probed", progress=False)
    probed.run()
    a, b = plain.model.state_dict(), probed.model.state_dict()
    for key in a:  # weights, alphas and BN statistics, bit for bit
        assert torch.equal(a[key], b[key]), key
    for opt in ("w_optim", "a_optim"):
        sa, sb = getattr(plain.algorithm, opt).state_dict()["state"], getattr(probed.algorithm, opt).state_dict()["state"]
        for k in sa:
            for name in sa[k]:
                assert torch.equal(torch.as_tensor(sa[k][name]), torch.as_tensor(sb[k][name]))
    lines_a = [json.loads(l) for l in (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()]
    lines_b = [json.loads(l) for l in (tmp_path / "probed" / "metrics.jsonl").read_text().splitlines()]
    for la, lb in zip(lines_a, lines_b):
        for key in ("epoch_time",):
            la.pop(key), lb.pop(key)
        extra = {k: lb.pop(k) for k in ("gap", "grad_corr", "dl_dp", "probe_time", "grad_corr_form")}
        assert la == lb and extra["grad_corr_form"] == "exact"
        gap = extra["gap"]
        assert gap["valid_acc"] == la["valid_acc"] and gap["acc_gap"] == pytest.approx(
            gap["train_acc"] - gap["valid_acc"])
        assert set(extra["grad_corr"]) == {"0", "1", "2"}
        assert all(c is None or -1 <= c <= 1 for v in extra["grad_corr"].values() for c in v.values())
        assert set(extra["dl_dp"]) == {"2:3<-0", "2:3<-1", "2:3<-2", "normal:2<-0"}
        assert all(math.isfinite(v) for e in extra["dl_dp"].values() for v in e.values())


@pytest.mark.parametrize("cfg,message", [
    ({"dl_dp_edges": ("3-0",)}, "expected CELL:TARGET<-SOURCE"),
    ({"batches": 0}, "probes.batches must be"),
    ({"grad_corr_cells": ()}, "non-empty list"),
])
def test_probe_config_errors(cfg, message):
    with pytest.raises(GradnasError, match=message):
        ProbeConfig(**cfg)


@pytest.mark.parametrize("cfg,message", [
    ({"dl_dp_edges": ("7:2<-0",)}, "cells 0..2"),
    ({"dl_dp_edges": ("0:4<-0",)}, "target node must be 2..3"),
    ({"dl_dp_edges": ("0:3<-3",)}, "node 3 reads nodes 0..2"),
    ({"grad_corr": True, "grad_corr_cells": (-4,)}, "cells 0..2"),
])
def test_probe_config_checked_against_the_supernet(cfg, message):
    model = tiny_supernet(cells=3, nodes=2)
    with pytest.raises(GradnasError, match=message):
        make_probes(model, "darts", [], **cfg)


def test_edge_spec_forms():
    assert parse_edge_spec("last:3<-*") == ("-1", 3, None)
    assert parse_edge_spec(" normal : 2 <- 1 ") == ("normal", 2, 1)
    assert parse_edge_spec("-2:5<-4") == ("-2", 5, 4)
