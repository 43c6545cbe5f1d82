"""PVLL-NAS: the estimator's gradients, the memory and eq. 8 by hand, the estimator and the sampler on the
NAS-Bench-201 table as a synthetic loss landscape, and real searches on both spaces with exact resume."""
import json

import pytest
import torch
import yaml

from gradnas.benchmark.nb201 import load_table, lookup
from gradnas.cli import main
from gradnas.config import SearchConfig
from gradnas.errors import GradnasError
from gradnas.relax import gumbel_straight_through
from gradnas.search.loop import Search
from gradnas.search.methods import make_method, method_class
from gradnas.search.pvll import (LossEstimator, PerformanceMemory, PVLL, PVLLConfig, kendall_tau, normalise,
                                 pair_weights, weighted_mse)
from gradnas.search.pvll_search import PVLLSearch
from gradnas.space.genotype import NB201Genotype
from gradnas.space.ops import NB201_OPS

FMNIST = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(autouse=True)
def _one_thread(_threads):
    """Tiny LSTMs and tiny supernets: one thread is faster than two (after conftest's 2-thread fixture)."""
    torch.set_num_threads(1)


def _onehot(index):
    return torch.zeros(*index.shape, 5).scatter_(-1, index.unsqueeze(-1), 1.0)


# -- the pure parts

def test_estimator_range_and_arch_gradient_is_the_straight_through_chain_rule():
    cfg = PVLLConfig(hidden=8, tau=0.5)
    p = PVLL(6, 5, cfg, seed=1)
    with torch.no_grad():
        p.A.copy_(torch.randn(6, 5, dtype=torch.float64))
    out = p.estimator(torch.rand(7, 6, 5))
    assert out.shape == (7,) and bool(((out > 0) & (out < 1)).all())
    h, noise = p.draw(torch.Generator().manual_seed(0))
    assert torch.equal(h.sum(-1), torch.ones(6))
    # the sample is the argmax of the Gumbel-softmax that the gradient differentiates (eq. 3-4)
    hard, index = gumbel_straight_through(p.A.detach(), noise, cfg.tau)
    assert torch.equal(h.argmax(-1), index)
    # d psi / dA_j = sum_k dpsi/dH_k p_k (delta_kj - p_j) / tau, psi read at the one-hot sample
    x = h.clone().requires_grad_(True)
    (g_h,) = torch.autograd.grad(p.estimator(x.unsqueeze(0)).sum(), x)
    soft = torch.softmax((p.A.detach().log_softmax(-1) + noise) / cfg.tau, -1)
    jac = (soft.unsqueeze(-1) * (torch.eye(5, dtype=torch.float64) - soft.unsqueeze(-2))) / cfg.tau  # [e, k, j]
    expected = (g_h.double().unsqueeze(-1) * jac).sum(-2)
    assert torch.allclose(p.arch_gradient(noise), expected, atol=1e-7)
    # one Adam step along it (eq. 10) changes A; psi's weights do not move
    before = [t.clone() for t in p.estimator.parameters()]
    a0 = p.A.detach().clone()
    p.update_arch(noise)
    assert not torch.equal(a0, p.A.detach())
    assert all(torch.equal(b, t) for b, t in zip(before, p.estimator.parameters()))


def test_pair_weights_and_weighted_mse_by_hand_including_the_zero_guard():
    pred = torch.tensor([0.5, 0.5, 0.9, 0.2])
    prev = torch.tensor([0.0, 0.5, 0.5, 0.5])       # entry 0 has no predecessor; entry 1: p_t = 0 exactly
    has_prev = torch.tensor([False, True, True, True])
    w = pair_weights(pred, prev, has_prev, p_min=0.05)
    raw = torch.tensor([1 / 0.05, 1 / 0.4, 1 / 0.3])  # |p| floored at p_min; negative p_t counts by size
    assert torch.allclose(w, torch.cat([torch.ones(1), raw / raw.mean()]))
    assert torch.isfinite(w).all() and abs(float(w[1:].mean()) - 1) < 1e-6
    target = torch.tensor([0.0, 1.0, 0.5, 0.25])
    by_hand = (1 * 0.25 + w[1] * 0.25 + w[2] * 0.16 + w[3] * 0.0025) / 4
    assert torch.allclose(weighted_mse(pred, target, w), by_hand)
    assert torch.allclose(weighted_mse(pred, target), torch.tensor((0.25 + 0.25 + 0.16 + 0.0025) / 4))
    assert torch.equal(normalise(torch.tensor([2.0, 4.0, 3.0])), torch.tensor([0.0, 1.0, 0.5]))
    assert torch.equal(normalise(torch.tensor([3.0, 3.0])), torch.tensor([0.5, 0.5]))


def test_estimator_objective_weights_carry_no_gradient():
    """Eq. 8's gradient treats 1/p_t as constants: the same as weighted_mse with the weights computed aside."""
    p = PVLL(6, 5, PVLLConfig(hidden=8, rescore=True), seed=0)
    g = torch.Generator().manual_seed(0)
    for h in PVLL.random_architectures(5, 6, 5, g):
        p.observe(h, float(h.argmax(-1).sum()))
    hs, losses, prev, has_prev = p.memory.tensors()
    assert torch.equal(has_prev, torch.tensor([False, True, True, True, True]))
    assert torch.equal(prev[1:], hs[:-1])
    params = list(p.estimator.parameters())
    grads = torch.autograd.grad(p.estimator_objective(), params)
    with torch.no_grad():
        w = pair_weights(p.estimator(hs), p.estimator(prev), has_prev, p_min=0.05)
    ref = torch.autograd.grad(weighted_mse(p.estimator(hs), normalise(losses), w), params)
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(grads, ref))
    unweighted = PVLL(6, 5, PVLLConfig(hidden=8, weighted_loss=False), seed=0)
    unweighted.estimator.load_state_dict(p.estimator.state_dict())
    unweighted.memory = p.memory
    assert torch.allclose(unweighted.estimator_objective(),
                          weighted_mse(p.estimator(hs), normalise(losses)).detach())


def test_frozen_weights_of_eq8_are_set_at_entry_and_warmup_entries_weigh_one():
    """pvll.rescore false (the paper's): 1/p_t with psi as it was when the entry came in, never re-scored."""
    p = PVLL(6, 5, PVLLConfig(hidden=8, p_min=1e-6), seed=0)
    g = torch.Generator().manual_seed(0)
    hs = PVLL.random_architectures(6, 6, 5, g)
    for h in hs[:3]:
        p.observe(h, float(h.argmax(-1).sum()), warmup=True)
    p.update_estimator(3)
    expected = [1.0, 1.0, 1.0]
    for h in hs[3:]:
        with torch.no_grad():  # psi at entry time, on this sample and the one before it
            pred, prev = p.estimator(torch.stack([h, p.last_h])).tolist()
        expected.append(1.0 / abs(pred - prev))
        p.observe(h, float(h.argmax(-1).sum()))
        p.update_estimator(2)  # psi moves after every entry
    assert p.memory.weights().tolist() == pytest.approx(expected, rel=1e-6)
    assert all(w > 1 for w in expected[3:])
    # eq. 8 with exactly those weights, whatever psi is now
    hs_m, losses, _, _ = p.memory.tensors()
    ref = weighted_mse(p.estimator(hs_m), normalise(losses), torch.tensor(expected))
    assert p.estimator_objective().item() == pytest.approx(ref.item(), rel=1e-6)
    # the weights ride in the checkpoint
    other = PerformanceMemory(99)
    other.load_state_dict(p.memory.state_dict())
    assert torch.equal(other.weights(), p.memory.weights())
    # today's re-scoring is an option: a different objective on the same memory and psi
    rescored = PVLL(6, 5, PVLLConfig(hidden=8, p_min=1e-6, rescore=True), seed=0)
    rescored.estimator.load_state_dict(p.estimator.state_dict())
    rescored.memory = p.memory
    assert rescored.estimator_objective().item() != pytest.approx(ref.item(), rel=1e-3)


def test_eq4_runs_the_sampled_op_times_its_soft_weight():
    """op_scale soft: node 1 of an NB-201 cell (one input edge) is h~_k * op_k(x); op_scale one: op_k(x)."""
    from gradnas.search.pvll_search import OneHotRelaxation
    from gradnas.space import build_supernet
    from gradnas.space.nb201 import NB201SpaceConfig
    torch.manual_seed(0)
    p = PVLL(6, 5, PVLLConfig(hidden=4, tau=0.5), seed=0)
    with torch.no_grad():
        p.A.copy_(torch.randn(6, 5, dtype=torch.float64))
    h, noise = p.draw(torch.Generator().manual_seed(3))
    soft = torch.softmax((p.A.detach() + noise) / 0.5, -1)
    weights = p.op_weights(h, noise)
    assert torch.allclose(weights.double(), h.double() * soft) and bool((weights.sum(-1) < 1).all())
    assert p.op_weights(h, None) is h  # a warm-up / held-out cell: weight 1
    assert PVLL(6, 5, PVLLConfig(hidden=4, op_scale="one"), seed=0).op_weights(h, noise) is h
    model = build_supernet("nb201", NB201SpaceConfig(cells_per_stage=1, channels=4), OneHotRelaxation(),
                           in_channels=1, num_classes=3, seed=0)
    from gradnas.space.base import space_of_model
    cell = space_of_model(model).searched_cells(model).cells[0]
    seen = {}
    cell.on_node = lambda i, t: seen.setdefault(i, t)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    outs = []
    for w in (h, weights):
        seen.clear()
        with torch.no_grad():
            model.alpha.copy_(w)
            model(x)
        outs.append(seen[1])
    k = int(h[0].argmax())  # edge (1, 0) is alpha row 0
    if NB201_OPS[k] != "none":
        assert outs[0].abs().sum() > 0
    assert torch.allclose(outs[1], float(soft[0, k]) * outs[0], atol=1e-6)


def test_memory_is_a_bounded_queue_and_round_trips():
    m = PerformanceMemory(3)
    hs = PVLL.random_architectures(5, 2, 5, torch.Generator().manual_seed(0))
    for i, h in enumerate(hs):
        m.add(h, float(i), hs[i - 1] if i else None)
    assert len(m) == 3
    h, losses, prev, has_prev = m.tensors()
    assert torch.equal(h, hs[2:]) and losses.tolist() == [2.0, 3.0, 4.0] and torch.equal(prev, hs[1:4])
    assert bool(has_prev.all())
    other = PerformanceMemory(99)
    other.load_state_dict(m.state_dict())
    assert other.maxlen == 3 and all(torch.equal(a, b) for a, b in zip(other.tensors(), m.tensors()))


def test_kendall_tau():
    # against a direct count in the other textbook form: sum of sign products over the n(n-1)/2 pairs, over
    # sqrt((n0 - n1)(n0 - n2)) with n1, n2 the pairs tied in each sequence
    g = torch.Generator().manual_seed(0)
    for n in (2, 5, 17):
        a, b = torch.randint(0, 4, (n,), generator=g).tolist(), torch.randint(0, 4, (n,), generator=g).tolist()
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        sgn = lambda v: (v > 0) - (v < 0)  # noqa: E731
        s = sum(sgn(a[i] - a[j]) * sgn(b[i] - b[j]) for i, j in pairs)
        n1, n2 = sum(a[i] == a[j] for i, j in pairs), sum(b[i] == b[j] for i, j in pairs)
        denom = ((len(pairs) - n1) * (len(pairs) - n2)) ** 0.5
        assert kendall_tau(a, b) == (None if denom == 0 else pytest.approx(s / denom))
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert kendall_tau([1, 2, 3], [1, 1, 2]) == pytest.approx(2 / 6 ** 0.5)  # tau-b with a tie (scipy: 0.8165)
    assert kendall_tau([1], [1]) is None and kendall_tau([1, 1], [1, 2]) is None


# -- NAS-Bench-201 as a synthetic landscape: loss = (100 - CIFAR-10 test accuracy) / 100

@pytest.fixture(scope="module")
def landscape():
    table = load_table()
    return {tuple(NB201_OPS.index(op) for _, op in NB201Genotype.from_string(k).edges()): (100 - v["cifar10"]) / 100
            for k, v in table.items()}


def test_estimator_learns_the_nb201_landscape(landscape):
    """After 100 sampled cells (the warm-up population's size) psi ranks 500 held-out cells with tau >= 0.5.
    At Adam lr 0.01: the paper's 0.1 (the default) reaches only tau 0.13 here after the 500 warm-up updates."""
    torch.manual_seed(0)
    p = PVLL(6, 5, PVLLConfig(estimator_lr=0.01), seed=0)
    g = torch.Generator().manual_seed(0)
    seen = set()
    for h in PVLL.random_architectures(100, 6, 5, g):
        key = tuple(h.argmax(-1).tolist())
        seen.add(key)
        p.observe(h, landscape[key])
    p.update_estimator(p.cfg.warmup_updates)
    held_out = [k for k in (tuple(r.tolist()) for r in torch.randint(0, 5, (600, 6), generator=g)) if k not in seen]
    held_out = held_out[:500]
    with torch.no_grad():
        est = p.estimator(_onehot(torch.tensor(held_out)))
    tau = kendall_tau(est.tolist(), [landscape[k] for k in held_out])
    assert tau >= 0.5, tau
    assert p.memory_tau() > tau  # on its own samples it does better still


def _search(landscape, *, uniform: bool, seed: int):
    """Algorithm 1 on the table: 50 warm-up cells, then 50 steps (100 measured cells in all). Estimator lr 0.01
    and re-scored weights: with the paper's lr 0.1 and frozen weights (the defaults) the guided derived cell is
    no better than the uniform one on this landscape (measured over these 4 seeds: 0.073 vs 0.070)."""
    cfg = PVLLConfig(population=50, steps=50, hidden=16, warmup_updates=150, estimator_updates=3,
                     uniform_sampling=uniform, estimator_lr=0.01, rescore=not uniform)
    p = PVLL(6, 5, cfg, seed=seed)
    g = torch.Generator().manual_seed(1000 + seed)
    for h in PVLL.random_architectures(cfg.population, 6, 5, g):
        p.observe(h, landscape[tuple(h.argmax(-1).tolist())], warmup=True)
    p.update_estimator(cfg.warmup_updates)
    sampled = []
    for _ in range(cfg.steps):
        h, noise = p.draw(g)
        loss = landscape[tuple(h.argmax(-1).tolist())]
        sampled.append(loss)
        p.observe(h, loss)
        p.update_estimator()
        p.update_arch(noise)
    final = landscape[tuple(p.arch_weights().argmax(-1).tolist())]
    return final, sum(sampled) / len(sampled)


def test_guided_sampling_beats_uniform_sampling_on_the_nb201_landscape(landscape):
    seeds = range(4)
    guided = [_search(landscape, uniform=False, seed=s) for s in seeds]
    uniform = [_search(landscape, uniform=True, seed=s) for s in seeds]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    # the derived cell (argmax A) is better on average (measured: 0.068 vs 0.075), and so are the cells the
    # sampler measures during the search (0.10 vs 0.14)
    assert mean([f for f, _ in guided]) < mean([f for f, _ in uniform])
    assert mean([s for _, s in guided]) < mean([s for _, s in uniform])


# -- real searches

def _config(space="nb201", **pvll):
    d = {"method": "pvll", "order": 2, "space": space, "batch_size": 16, "seed": 3, "device": "cpu", "threads": 1,
         "data": {"dataset": "fashion-mnist", "data_dir": FMNIST, "subset": 96},
         "supernet": {"cells": 3, "channels": 4, "nodes": 2}, "nb201": {"cells_per_stage": 1, "channels": 4},
         "pvll": {"population": 4, "steps": 3, "hidden": 8, "warmup_updates": 5, "estimator_updates": 2,
                  "train_batches": 2, "val_batches": 1, **pvll}}
    return SearchConfig.from_dict(d)


def _lines(run_dir):
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        line.pop("round_time")
    return lines


def _assert_same(a: Search, b: Search):
    for key, value in a.model.state_dict().items():  # weights, BN statistics, the last sampled H
        assert torch.equal(value, b.model.state_dict()[key]), key
    a, b = a.algorithm.pvll, b.algorithm.pvll
    assert torch.equal(a.A, b.A)
    for key, value in a.estimator.state_dict().items():
        assert torch.equal(value, b.estimator.state_dict()[key]), key
    assert all(torch.equal(x, y) for x, y in zip(a.memory.tensors(), b.memory.tensors()))
    assert a.a_optim.state_dict()["state"][0]["exp_avg"].equal(b.a_optim.state_dict()["state"][0]["exp_avg"])


@pytest.mark.parametrize("space,stops", [("nb201", (6, 9)), ("darts", (9,))])
def test_search_runs_and_resumes_exactly(tmp_path, space, stops):
    cfg = _config(space)
    full = Search(cfg, tmp_path / "full", progress=False)
    assert isinstance(full.algorithm, PVLLSearch) and len(full.algorithm.plan) == 4 + 4 + 3
    summary = full.run()
    # stopped in the warm-up (round 6: the batch stream restarts mid-epoch) and in the search (round 9), resumed
    Search(cfg, tmp_path / "resumed", progress=False).run(stop_after=stops[0])
    for stop in stops[1:]:
        assert Search(cfg, tmp_path / "resumed", resume=True, progress=False).run(
            stop_after=stop)["finished"] is False
    resumed = Search(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert resumed.done == 9
    assert resumed.run() == {**summary, "run_dir": str(tmp_path / "resumed")}
    _assert_same(full, resumed)
    lines = _lines(tmp_path / "full")
    assert lines == _lines(tmp_path / "resumed")
    assert [l["phase"] for l in lines] == ["warmup-train"] * 4 + ["warmup-eval"] * 4 + ["search"] * 3
    assert [l["epoch"] for l in lines] == list(range(1, 12))
    for line in lines:
        assert ("measured_loss" in line) == (line["phase"] != "warmup-train")
        assert "train_loss" in line  # order 2 trains every round
    for line in lines[7:]:  # after psi's warm-up: its loss and Kendall tau on the memory
        assert line["estimator_loss"] >= 0 and -1 <= line["kendall_tau"] <= 1
    assert [l["memory"] for l in lines[4:]] == [1, 2, 3, 4, 5, 6, 7]
    assert lines[-1]["genotype"] == summary["genotype"] == full.algorithm.derived()[0].to_string()
    saved = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert saved["finished"] and saved["genotype"] == summary["genotype"] and 0 <= saved["valid_acc"] <= 100
    if space == "nb201":
        for line in lines:
            assert line["nb201"] == lookup(line["genotype"])
            assert line["sampled_nb201"] == lookup(NB201Genotype.from_weights(
                [[float(op == o) for o in NB201_OPS] for op in line["sampled"]["cell"]]))
        assert saved["nb201"] == lookup(saved["genotype"])
        assert full.algorithm.derived()[0] == NB201Genotype.from_weights(full.algorithm.pvll.arch_weights().tolist())
    else:
        assert list(lines[-1]["sampled"]) == ["normal", "reduce"] and "nb201" not in saved
    # the checkpoint holds A, psi and the memory
    assert SearchConfig.from_dict(yaml.safe_load((tmp_path / "full" / "config.yaml").read_text())) == cfg


def test_held_out_cells_are_scored_every_round_change_nothing_else_and_resume_exactly(tmp_path):
    """pvll.test_cells (Table 3, Fig. 3a): psi's loss and tau on N fixed held-out cells after every psi update."""
    kw = dict(population=2, steps=3)
    cfg = _config("nb201", test_cells=4, **kw)
    full = Search(cfg, tmp_path / "full", progress=False)
    held = full.algorithm.test_h
    population = {tuple(c.argmax(-1).tolist()) for c in full.algorithm.population}
    keys = {tuple(c.argmax(-1).tolist()) for c in held}
    assert held.shape == (4, 6, 5) and len(keys) == 4 and not keys & population
    summary = full.run()
    plain = Search(_config("nb201", **kw), tmp_path / "plain", progress=False)
    plain.run()
    _assert_same(full, plain)  # measuring the held-out cells changes neither the supernet nor A nor psi
    lines, plain_lines = _lines(tmp_path / "full"), _lines(tmp_path / "plain")
    scored = [line for line in lines if "estimator_loss" in line]
    assert [line["epoch"] for line in scored] == [4, 5, 6, 7]  # psi's warm-up, then every search step
    for line, other in zip(lines, plain_lines):
        assert {k: v for k, v in line.items() if not k.startswith("test_")} == other
    # the last round's figures, recomputed directly: the held-out cells measured now, tau by a direct count
    algo = full.algorithm
    losses = []
    for h in held:
        algo._set_architecture(h)
        losses.append(algo._measure(0)[0])
    with torch.no_grad():
        pred = algo.pvll.estimator(held).double().tolist()
    mem = [e[1] for e in algo.pvll.memory.entries]
    target = [(x - min(mem)) / (max(mem) - min(mem)) for x in losses]
    assert scored[-1]["test_loss"] == pytest.approx(sum((p - t) ** 2 for p, t in zip(pred, target)) / 4, rel=1e-6)
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    concordant = sum((pred[i] - pred[j]) * (losses[i] - losses[j]) > 0 for i, j in pairs)
    assert scored[-1]["test_kendall_tau"] == pytest.approx((2 * concordant - len(pairs)) / len(pairs))
    assert summary["test_loss"] == scored[-1]["test_loss"]
    # stopped after psi's warm-up and resumed: the same held-out set, records and summary
    Search(cfg, tmp_path / "resumed", progress=False).run(stop_after=5)
    resumed = Search(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert torch.equal(resumed.algorithm.test_h, held)
    assert resumed.run() == {**summary, "run_dir": str(tmp_path / "resumed")}
    assert _lines(tmp_path / "resumed") == lines


def test_first_order_measures_without_training_and_the_ablations(tmp_path):
    cfg = _config(population=3, steps=2, uniform_sampling=True)
    cfg = SearchConfig.from_dict({**cfg.to_dict(), "order": 1})
    run = Search(cfg, tmp_path / "o1", progress=False)
    run.run()
    lines = _lines(tmp_path / "o1")
    assert ["lr" in l for l in lines] == [True] * 6 + [False] * 2  # order 1: the search rounds only measure
    assert not cfg.pvll.weighted  # uniform sampling: eq. 8's weight does not apply (Table 5: N/A)
    no_warmup = _config(population=3, steps=2, warmup=False)
    run = Search(no_warmup, tmp_path / "nw", progress=False)
    assert [phase for phase, _ in run.algorithm.plan] == ["search"] * 5  # T + N steps: the paper's equal budget
    run.run()
    lines = _lines(tmp_path / "nw")
    assert "estimator_loss" not in lines[0] and "estimator_loss" in lines[1]


def test_cli_search_and_refusals(tmp_path, capsys):
    common = ["search", "--method", "pvll", "--space", "nb201", "--dataset", "fashion-mnist", "--data-dir", FMNIST,
              "--cells", "1", "--channels", "4", "--batch-size", "16", "--threads", "1", "--quiet", "--order", "2",
              "--set", "data.subset=96", "--set", "pvll.population=2", "--set", "pvll.steps=2",
              "--set", "pvll.hidden=4", "--set", "pvll.warmup_updates=2", "--set", "pvll.train_batches=1",
              "--set", "pvll.val_batches=1"]
    out = tmp_path / "run"
    assert main(common + ["--no-warmup", "--unweighted-loss", "--out", str(out)]) == 0
    assert "nb201 test acc" in capsys.readouterr().out
    saved = yaml.safe_load((out / "config.yaml").read_text())["pvll"]
    assert saved["warmup"] is False and saved["weighted_loss"] is False
    assert len(_lines(out)) == 4
    assert main(["search", "--resume", str(out), "--quiet"]) == 0  # finished: nothing left, same summary
    for extra, message in [
        (["--epochs", "3"], "--epochs does not apply to method pvll"),
        (["--relax", "sigmoid"], "not relax 'sigmoid'"),
        (["--order", "1", "--no-warmup"], "use order 2"),
        (["--uniform-sampling", "--set", "pvll.weighted_loss=true"], "Table 5: N/A"),
        (["--set", "arch_optim.lr=0.1"], "pvll.arch_lr"),
        (["--switch-at", "1", "--then", "darts"], "method schedule"),
        (["--set", "pvll.tau=0"], "pvll.tau must be > 0"),
        (["--set", "data.eval_batches=2"], "pvll.val_batches"),
    ]:
        assert main(common + extra + ["--out", str(tmp_path / "refused")]) == 2
        assert message in capsys.readouterr().err
    assert main(["search", "--method", "milenas", "--uniform-sampling"]) == 2
    assert "use it with --method pvll" in capsys.readouterr().err
    assert main(["search", "--method", "milenas", "--set", "pvll.steps=3"]) == 2
    assert "configures method pvll" in capsys.readouterr().err
    assert main(["search", "--method", "nope"]) == 2
    assert "pvll" in capsys.readouterr().err
    assert method_class("pvll").orders == (1, 2)
    with pytest.raises(GradnasError, match="its own search loop"):
        make_method("pvll", None)


def test_signal_stops_after_the_round_in_flight_and_resumes_exactly(tmp_path):
    import os
    import signal
    from gradnas.signals import Interrupted
    cfg = _config("nb201")
    full = Search(cfg, tmp_path / "full", progress=False)
    full.run()
    stopped = Search(cfg, tmp_path / "run", progress=False)
    inner = stopped.algorithm._measure

    def measure_and_signal(r):
        if r == 9:  # during search round 10 of 11
            os.kill(os.getpid(), signal.SIGTERM)
        return inner(r)
    stopped.algorithm._measure = measure_and_signal
    with pytest.raises(Interrupted, match=r"(?s)SIGTERM after round 10/11; its checkpoint is saved.*--resume"):
        stopped.run(stop_on_signal=True)
    resumed = Search(cfg, tmp_path / "run", resume=True, progress=False)
    assert resumed.done == 10
    resumed.run()
    _assert_same(full, resumed)
    assert _lines(tmp_path / "full") == _lines(tmp_path / "run")


def test_an_arch_lr_that_saturates_A_warns_once_and_is_recorded(tmp_path, capsys):
    cfg = _config(population=2, steps=2, arch_lr=1e6)
    cfg = SearchConfig.from_dict({**cfg.to_dict(), "order": 1})
    Search(cfg, tmp_path / "run", progress=False).run()
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "architecture parameters reach" in line]
    assert len(warnings) == 1 and "lower pvll.arch_lr" in warnings[0], err
    lines = _lines(tmp_path / "run")
    search = [line for line in lines if "alpha_max_abs" in line]
    assert search and all(line["alpha_max_abs"] > 1e3 for line in search)
    assert sum(1 for line in lines if line.get("alpha_range_warning")) == 1
    assert not any("alpha_max_abs" in line for line in lines[:4])  # the warm-up rounds leave A as it was
