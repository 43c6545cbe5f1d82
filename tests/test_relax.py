"""The Gumbel (GDAS) relaxation: sampling distribution, straight-through gradient, temperature schedule,
reproducible noise, and a forward pass that runs about one op per edge on both spaces."""
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import batch, tiny_nb201, tiny_supernet
from gradnas.config import SearchConfig
from gradnas.errors import GradnasError
from gradnas.relax import Gumbel, GumbelConfig, gumbel_straight_through, make_relaxation
from gradnas.search.loop import build_optimizers
from gradnas.search.methods import METHODS, ArchOptimizer, make_method


def test_sampling_frequencies_follow_softmax_alpha_at_tau_1():
    relax = Gumbel(GumbelConfig(tau_max=1.0, tau_min=1.0))
    relax.start_epoch(epoch=0, epochs=1, seed=0)
    assert relax.tau == 1.0
    alpha = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0], [2.0, 1.0, 0.0, -1.0, -2.0], [-1.0, 3.0, 0.5, 0.5, 0.0]])
    # forward_weights is sample_noise + gumbel_straight_through; here n forward passes' worth in one call
    state = relax.generator.get_state()
    hard, active = relax.forward_weights(alpha, training=True)
    relax.generator.set_state(state)
    n = 20000
    noise = relax.sample_noise((n, *alpha.shape)).float()
    assert torch.allclose(gumbel_straight_through(alpha, noise[0], relax.tau)[0], hard)
    samples, index = gumbel_straight_through(alpha.expand(n, -1, -1), noise, relax.tau)
    assert [(k,) for k in index[0].tolist()] == active
    counts = samples.detach().sum(0)
    assert torch.equal(counts, F.one_hot(index, 5).sum(0).float())
    p = torch.softmax(alpha, 1)
    z = (counts / n - p) / (p * (1 - p) / n).sqrt()
    assert z.abs().max() < 4.5, z  # a binomial count more than 4.5 sd off: ~1e-5 per cell by chance
    chi2 = ((counts - n * p) ** 2 / (n * p)).sum(1)
    assert (chi2 < 23.5).all(), chi2  # 4 degrees of freedom, p = 1e-4


def test_hard_weights_are_one_hot_with_straight_through_gradient():
    g = torch.Generator().manual_seed(3)
    alpha = torch.randn(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    noise = -torch.empty(4, 5, dtype=torch.float64).exponential_(generator=g).log()
    tau = 0.7
    hard, index = gumbel_straight_through(alpha, noise, tau)
    assert torch.allclose(hard.detach(), F.one_hot(index, 5).double(), atol=1e-15)
    assert torch.equal(index, (alpha + noise).argmax(1))  # Gumbel-max
    # Only the sampled op's weight is used: dL/dalpha_j = v * p_k (delta_jk - p_j) / tau (chain rule through
    # p = softmax((alpha + u) / tau)), non-zero for every op of the edge.
    v = torch.randn(4, dtype=torch.float64, generator=g)
    grad, = torch.autograd.grad((hard.gather(1, index[:, None]).squeeze(1) * v).sum(), alpha)
    p = torch.softmax((alpha.detach() + noise) / tau, 1)
    pk = p.gather(1, index[:, None])
    expected = v[:, None] * pk * (F.one_hot(index, 5).double() - p) / tau
    assert torch.allclose(grad, expected, atol=1e-12)
    assert (grad != 0).all()


def test_temperature_schedule_and_reproducible_noise():
    relax = make_relaxation("gumbel", GumbelConfig(tau_max=10.0, tau_min=0.1))
    taus = [relax.start_epoch(epoch=e, epochs=5, seed=0)["tau"] for e in range(5)]
    assert taus == pytest.approx([10.0, 7.525, 5.05, 2.575, 0.1])
    assert relax.tau_at(0, 1) == 10.0
    alpha = torch.zeros(6, 5)

    def draws(epoch, seed=0):
        relax.start_epoch(epoch=epoch, epochs=5, seed=seed)
        return [relax.forward_weights(alpha, training=True)[1] for _ in range(20)]

    assert draws(2) == draws(2)
    assert draws(2) != draws(3) and draws(2) != draws(2, seed=1)
    # eval mode: the argmax op of every edge, no noise drawn
    alpha[:, 3] = 1.0
    state = relax.generator.get_state()
    hard, active = relax.forward_weights(alpha, training=False)
    assert active == [(3,)] * 6 and torch.equal(hard, F.one_hot(torch.full((6,), 3), 5).float())
    assert torch.equal(relax.generator.get_state(), state)


def test_gumbel_config_and_defaults():
    assert SearchConfig().gumbel == GumbelConfig(tau_max=10.0, tau_min=0.1)
    assert SearchConfig(relax="gumbel").relax_config == GumbelConfig()
    assert SearchConfig().relax_config is None
    with pytest.raises(GradnasError, match="0 < tau_min <= tau_max"):
        SearchConfig.from_dict({"gumbel": {"tau_max": 0.1, "tau_min": 1.0}})
    with pytest.raises(GradnasError, match="takes no settings"):
        make_relaxation("softmax", GumbelConfig())
    relax = make_relaxation("gumbel")
    assert relax.default_arch_weight_decay == 1e-3 and relax.init_alpha(6, 5, torch.Generator()).abs().max() < 1e-2


def _count_op_calls(model, cells):
    """Forward hooks counting every op application: per-edge op modules, shared (per source node) ops and the
    DARTS pools' BN (one call per pool computed)."""
    count = [0]
    hooks = []
    for cell in cells:
        mods = [op for edge in cell.edges.values() for op in edge.values()]
        mods += list(getattr(cell, "shared", {}).values()) + list(getattr(cell, "pool_bn", {}).values())
        for m in mods:
            hooks.append(m.register_forward_hook(lambda *a: count.__setitem__(0, count[0] + 1)))
    return count, hooks


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_sampled_forward_runs_about_one_op_per_edge(space):
    counts = {}
    for relax in ("softmax", "gumbel"):
        if space == "darts":
            model = tiny_supernet(relax, cells=3, nodes=2)
            cells, edges_per_cell = model.cells, 5
        else:
            model = tiny_nb201(relax, cells_per_stage=1)
            cells, edges_per_cell = [c for c in model.layers if hasattr(c, "edges")], 6
        model.relaxation.start_epoch(epoch=0, epochs=1, seed=0)
        count, hooks = _count_op_calls(model, cells)
        model(batch(2, 3, 8)[0])
        for h in hooks:
            h.remove()
        counts[relax] = count[0]
    n_edges = len(cells) * edges_per_cell
    # one op per edge at most (a sampled `none` runs nothing, a pool shared by two edges runs once) ...
    assert 0 < counts["gumbel"] <= n_edges
    # ... where the mixed op runs all but `none` (DARTS: 7 ops; NB-201: 4, parameter-free ones once per node)
    assert counts["softmax"] >= (5 if space == "darts" else 2.5) * n_edges


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_every_method_steps_when_only_none_is_sampled(space):
    """A sample with `none` on every edge makes the output independent of alpha (on NB-201 all three inputs of
    node 3 being `none` is enough: 1 forward pass in 125 at uniform alpha). Every method still steps, and the
    straight-through gradient of alpha is exactly zero."""
    model = tiny_supernet("gumbel", cells=3, nodes=2) if space == "darts" else tiny_nb201("gumbel")
    with torch.no_grad():
        for a in model.arch_parameters():
            a[:, 0] = 50.0  # `none` is column 0 of both op lists
    for name in sorted(n for n, c in METHODS.items() if issubclass(c, ArchOptimizer)):  # the per-batch ones
        w_opt, a_opt, _ = build_optimizers(SearchConfig(relax="gumbel"), model)
        method = make_method(name, model, w_optim=w_opt, a_optim=a_opt)
        model.relaxation.start_epoch(epoch=0, epochs=1, seed=0)
        stats = method.step(batch(seed=1), batch(seed=2))
        assert math.isfinite(stats["train_loss"])
        assert all(torch.equal(a.grad, torch.zeros_like(a)) for a in model.arch_parameters())
