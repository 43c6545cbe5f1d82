"""Each architecture optimizer's gradients against autograd computed term by term."""
import pytest
import torch
import torch.nn.functional as F

from conftest import batch, tiny_supernet
from gradnas.config import SearchConfig
from gradnas.errors import GradnasError
from gradnas.search.loop import build_optimizers
from gradnas.search.methods import METHODS, make_method


def _setup(method, lam=1.0, lr=0.0, relax="softmax", grad_clip=0.0, device="cpu"):
    model = tiny_supernet(relax, dtype=torch.float64).to(device)
    cfg = SearchConfig.from_dict({"w_optim": {"lr": max(lr, 1e-12), "lr_min": 0.0, "weight_decay": 0.0,
                                              "momentum": 0.0},
                                  "arch_optim": {"lr": lr, "weight_decay": 0.0}, "relax": relax})
    w_opt, a_opt, _ = build_optimizers(cfg, model)
    for group in w_opt.param_groups:
        group["lr"] = lr
    m = make_method(method, model, w_optim=w_opt, a_optim=a_opt, grad_clip=grad_clip, lam=lam)
    return model, m


def _grads(model, b, params):
    # BN in training mode: the same batch statistics the method's forward used
    return torch.autograd.grad(F.cross_entropy(model(b[0]), b[1]), params)


def _batch(seed, device, dtype=torch.float64):
    return tuple(t.to(device) for t in batch(seed=seed, dtype=dtype))


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("lam", [0.0, 0.5, 2.0])
def test_milenas_gradient_is_train_plus_lambda_val(lam, device):
    model, method = _setup("milenas", lam=lam, device=device)
    tr, va = _batch(1, device), _batch(2, device)
    method.step(tr, va)  # lr 0: parameters unchanged, gradients left in .grad
    alphas, weights = model.arch_parameters(), model.weight_parameters()
    g_tr = _grads(model, tr, alphas)
    g_val = _grads(model, va, alphas)
    for a, gt, gv in zip(alphas, g_tr, g_val):
        assert torch.allclose(a.grad, gt + lam * gv, rtol=1e-9, atol=1e-12)
    for w, gw in zip(weights, _grads(model, tr, weights)):  # w sees the training loss only
        assert torch.allclose(w.grad, gw, rtol=1e-9, atol=1e-12)


def test_darts_first_order_gradients(device):
    model, method = _setup("darts", device=device)
    tr, va = _batch(1, device), _batch(2, device)
    method.step(tr, va)
    alphas, weights = model.arch_parameters(), model.weight_parameters()
    for a, g in zip(alphas, _grads(model, va, alphas)):
        assert torch.allclose(a.grad, g, rtol=1e-9, atol=1e-12)
    for w, g in zip(weights, _grads(model, tr, weights)):
        assert torch.allclose(w.grad, g, rtol=1e-9, atol=1e-12)


def test_single_level_gradients_and_ignores_val_batch(device):
    model, method = _setup("single-level", relax="sigmoid", device=device)
    tr = _batch(1, device)
    method.step(tr, None)
    params = model.arch_parameters() + model.weight_parameters()
    for p, g in zip(params, _grads(model, tr, params)):
        assert torch.allclose(p.grad, g, rtol=1e-9, atol=1e-12)


def test_milenas_lambda_zero_is_single_level_bit_for_bit(device):
    tr, va = _batch(1, device, torch.float32), _batch(2, device, torch.float32)
    results = []
    for name, lam in (("milenas", 0.0), ("single-level", 1.0)):
        model = tiny_supernet().to(device)
        cfg = SearchConfig()
        w_opt, a_opt, _ = build_optimizers(cfg, model)
        make_method(name, model, w_optim=w_opt, a_optim=a_opt, lam=lam).step(tr, va)
        results.append(_snapshot(model))
    for k in results[0]:
        assert torch.equal(results[0][k], results[1][k]), k


def test_steps_move_parameters_and_alphas_stay_out_of_weight_optimizer(device):
    model, method = _setup("milenas", lr=0.1, grad_clip=5.0, device=device)
    before = _snapshot(model)
    method.step(_batch(1, device), _batch(2, device))
    after = model.state_dict()
    assert not torch.equal(before["alpha_normal"], after["alpha_normal"])
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    alpha_ids = {id(a) for a in model.arch_parameters()}
    assert not alpha_ids & {id(p) for g in method.w_optim.param_groups for p in g["params"]}
    assert {id(p) for g in method.a_optim.param_groups for p in g["params"]} == alpha_ids


def test_weight_clipping_leaves_alpha_gradient_alone(device):
    model, method = _setup("single-level", grad_clip=1e-6, device=device)
    tr = _batch(1, device)
    method.step(tr, None)
    g = _grads(model, tr, model.arch_parameters())
    assert torch.allclose(model.alpha_normal.grad, g[0])
    total = torch.sqrt(sum(w.grad.square().sum() for w in model.weight_parameters()))
    assert total <= 1e-6 * 1.001


def test_arch_weight_decay_follows_relaxation_unless_set():
    for relax, expected in (("softmax", 1e-3), ("sigmoid", 0.0)):
        model = tiny_supernet(relax)
        _, a_opt, _ = build_optimizers(SearchConfig(relax=relax), model)
        assert a_opt.param_groups[0]["weight_decay"] == expected
    _, a_opt, _ = build_optimizers(SearchConfig.from_dict({"arch_optim": {"weight_decay": 0.5}}), tiny_supernet())
    assert a_opt.param_groups[0]["weight_decay"] == 0.5


def test_unknown_method_and_order():
    model = tiny_supernet()
    w_opt, a_opt, _ = build_optimizers(SearchConfig(), model)
    with pytest.raises(GradnasError, match="valid methods: darts, milenas, pvll, single-level"):
        make_method("enas", model, w_optim=w_opt, a_optim=a_opt)
    with pytest.raises(GradnasError, match="supports order 1, not 2"):
        make_method("single-level", model, w_optim=w_opt, a_optim=a_opt, order=2)
    with pytest.raises(GradnasError, match="supports order 1 or 2, not 3"):
        make_method("milenas", model, w_optim=w_opt, a_optim=a_opt, order=3)
    with pytest.raises(GradnasError, match="set order: 2"):  # an option that would do nothing
        make_method("darts", model, w_optim=w_opt, a_optim=a_opt, order=1, xi=0.1)
    assert set(METHODS) == {"darts", "milenas", "single-level", "pvll"}  # one registry, pvll included


def test_sgd_arch_optimizer_steps_by_hand_and_resumes_exactly(tmp_path):
    """arch_optim.type sgd (the single-level paper's Tables 1-2): alpha <- alpha - lr (g + momentum buffer),
    the buffer b_t = mu b_{t-1} + g_t (torch's SGD, dampening 0); a search with it resumes exactly."""
    torch.set_num_threads(1)  # tiny tensors on a shared CPU
    model = tiny_supernet("sigmoid", dtype=torch.float64)
    cfg = SearchConfig.from_dict({"w_optim": {"lr": 1e-12, "lr_min": 0.0, "weight_decay": 0.0, "momentum": 0.0},
                                  "arch_optim": {"type": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0},
                                  "relax": "sigmoid"})
    w_opt, a_opt, _ = build_optimizers(cfg, model)
    assert isinstance(a_opt, torch.optim.SGD)
    for group in w_opt.param_groups:
        group["lr"] = 0.0
    method = make_method("single-level", model, w_optim=w_opt, a_optim=a_opt, grad_clip=0.0)
    b1, b2 = batch(seed=1, dtype=torch.float64), batch(seed=2, dtype=torch.float64)
    alphas = model.arch_parameters()
    a0 = [a.detach().clone() for a in alphas]
    g1 = _grads(model, b1, alphas)
    method.step(b1)
    for a, x, g in zip(alphas, a0, g1):
        assert torch.allclose(a, x - 0.1 * g)
    g2 = _grads(model, b2, alphas)
    method.step(b2)
    for a, x, ga, gb in zip(alphas, a0, g1, g2):
        assert torch.allclose(a, x - 0.1 * ga - 0.1 * (0.9 * ga + gb))
    from gradnas.search.loop import Search
    from test_search import tiny_config
    run = tiny_config(method="single-level", relax="sigmoid", epochs=2, threads=1,
                      data={"subset": 32, "eval_batches": 1},
                      arch_optim={"type": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True})
    full = Search(run, tmp_path / "full", progress=False)
    full.run()
    Search(run, tmp_path / "resumed", progress=False).run(stop_after=1)
    resumed = Search(run, tmp_path / "resumed", resume=True, progress=False)
    resumed.run()
    for a, b in zip(full.model.arch_parameters(), resumed.model.arch_parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(full.model.arch_parameters()[0], Search(run, tmp_path / "new", progress=False)
                           .model.arch_parameters()[0])  # alpha moved
    with pytest.raises(GradnasError, match="arch_optim.betas is read by arch_optim.type adam"):
        SearchConfig.from_dict({"arch_optim": {"type": "sgd", "betas": [0.9, 0.999]}})
    with pytest.raises(GradnasError, match="arch_optim.momentum is read by arch_optim.type sgd"):
        SearchConfig.from_dict({"arch_optim": {"momentum": 0.9}})
