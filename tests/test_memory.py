"""Activation memory of the supernet ops: what separable and dilated convs keep for backward, and that
keeping less changes no number (values, gradients, BN running statistics equal the plain ops bit for bit)."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from gradnas.space.ops import DilConv, SepConv, _ConvsBN, twice_differentiable


def _plain(op, x, scale=None):
    """The separable or dilated conv as plain autograd ops (what it computed before keeping less)."""
    blocks = [op.first, op.second] if isinstance(op, SepConv) else [op]
    for i, b in enumerate(blocks):
        y = b.pointwise(b.depthwise(F.relu(x)))
        x = b.bn(y) if scale is None or i < len(blocks) - 1 else b._scaled_bn(y, scale)
    return x


def _pair(affine, stride, k, channels_last, train, kind="sep"):
    torch.manual_seed(1)
    make = (lambda: SepConv(4, 4, k, stride, affine=affine)) if kind == "sep" else (
        lambda: DilConv(4, 4, k, stride, 2, affine=affine))
    op, ref = make(), make()
    ref.load_state_dict(op.state_dict())
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for m in (op, ref):
        m.train(train)
        m.to(memory_format=fmt)
        if affine:  # non-trivial affine BN parameters, so their gradients are tested too
            with torch.no_grad():
                for p in m.parameters():
                    if p.dim() == 1:
                        p.copy_(torch.linspace(0.5, 1.5, p.numel()))
    x = torch.randn(3, 4, 9, 9).contiguous(memory_format=fmt).requires_grad_(True)
    return op, ref, x


@pytest.mark.parametrize("kind,affine,stride,k,channels_last,train", list(itertools.product(
    ["sep", "dil"], [False, True], [1, 2], [3, 5], [False, True], [True, False])))
def test_conv_recompute_is_bitwise_the_plain_ops(kind, affine, stride, k, channels_last, train):
    op, ref, x = _pair(affine, stride, k, channels_last, train, kind)
    scale = None if affine else torch.tensor(0.7, requires_grad=True)
    out, want = op(x, scale=scale), _plain(ref, x, scale)
    assert torch.equal(out, want)
    upstream = torch.randn_like(want)
    extra = [scale] if scale is not None else []
    grads = torch.autograd.grad(out, [x, *op.parameters(), *extra], upstream)
    ref_grads = torch.autograd.grad(want, [x, *ref.parameters(), *extra], upstream)
    for a, b in zip(grads, ref_grads):
        assert torch.equal(a, b), (a - b).abs().max()
    # BN running statistics (and the batch counter) are updated once, as by the plain ops
    for (name, a), b in zip(op.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("kind,train", list(itertools.product(["sep", "dil"], [True, False])))
def test_conv_recompute_alpha_only_pass(kind, train):
    """No weight needs a gradient (an alpha-only pass): the input and scale gradients still equal the plain ops'.

    The separable conv's first half takes the input-only shortcut of _DepthwisePointwise (its 1x1 conv's input
    gradient as a forward conv with the transposed weight), which on one thread rounds differently from
    autograd's conv backward (measured 1e-6 on the input gradient; equal on two threads): there the input
    gradient is compared to 1e-5, the scale's (alpha's) gradient still bit for bit."""
    op, ref, x = _pair(False, 1, 3, True, train, kind)
    for p in [*op.parameters(), *ref.parameters()]:
        p.requires_grad_(False)
    scale = torch.tensor(1.3, requires_grad=True)
    up = torch.randn(3, 4, 9, 9)
    (gx, gs) = torch.autograd.grad(op(x, scale=scale), [x, scale], up)
    (wx, ws) = torch.autograd.grad(_plain(ref, x, scale), [x, scale], up)
    assert torch.equal(gs, ws)
    assert torch.equal(gx, wx) if kind == "dil" else torch.allclose(gx, wx, rtol=0, atol=1e-5)


@pytest.mark.parametrize("with_in_bn", [True, False])
def test_convs_bn_gradcheck(with_in_bn):
    """Finite differences against the recomputing backward: batch statistics, affine BNs (float64)."""
    torch.manual_seed(0)
    bn_in, bn_out = torch.nn.BatchNorm2d(2).double(), torch.nn.BatchNorm2d(3).double()
    y = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    iw = torch.rand(2, dtype=torch.float64).add_(0.5).requires_grad_(True) if with_in_bn else None
    ib = torch.randn(2, dtype=torch.float64, requires_grad=True) if with_in_bn else None
    dw = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    pw = torch.randn(3, 2, 1, 1, dtype=torch.float64, requires_grad=True)
    ow = torch.rand(3, dtype=torch.float64).add_(0.5).requires_grad_(True)
    ob = torch.randn(3, dtype=torch.float64, requires_grad=True)
    args = [t for t in (y, iw, ib, dw, pw, ow, ob) if t is not None]

    def f(*a):
        a = list(a)
        y_, iw_, ib_ = (a.pop(0), a.pop(0), a.pop(0)) if with_in_bn else (a.pop(0), None, None)
        return _ConvsBN.apply(y_, iw_, ib_, *a, bn_in if with_in_bn else None, bn_out, 1, 1)
    assert torch.autograd.gradcheck(f, args, fast_mode=True)


def _saved_bytes(fn):
    """Bytes of the distinct storages autograd keeps for backward while ``fn()`` runs, and its output."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(storages.values()), out


@pytest.mark.parametrize("kind,extra,plain_extra", [("sep", 1, 5), ("dil", 0, 2)])
def test_what_a_conv_keeps_for_backward(kind, extra, plain_extra):
    """In a supernet (input already activated and kept by the shared ReLU) a separable conv stores one
    activation of its own (its first half's output) and a dilated conv none; plain autograd (the graph that
    can be differentiated twice) stores five and two."""
    torch.manual_seed(0)
    op = SepConv(8, 8, 3, 1, affine=False) if kind == "sep" else DilConv(8, 8, 3, 1, 2, affine=False)
    x = F.relu(torch.randn(4, 8, 16, 16, requires_grad=True))
    act = x.numel() * x.element_size()
    scale = torch.tensor(0.5, requires_grad=True)
    kept, _ = _saved_bytes(lambda: op(x, pre_activated=True, scale=scale))
    assert extra * act <= kept - act < extra * act + 64 * 1024, (kept - act, act)  # x itself counted once
    with twice_differentiable():
        kept_plain, _ = _saved_bytes(lambda: op(x, pre_activated=True, scale=scale))
    assert plain_extra * act <= kept_plain - act < plain_extra * act + 64 * 1024, (kept_plain - act, act)


@pytest.mark.parametrize("kind", ["sep", "dil"])
def test_recompute_refuses_a_second_derivative(kind):
    op = SepConv(4, 4, 3, 1, affine=False) if kind == "sep" else DilConv(4, 4, 3, 1, 2, affine=False)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    g, = torch.autograd.grad(op(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|differentiable"):
        g.sum().backward()


def test_supernet_recompute_switch_changes_memory_not_numbers():
    """supernet.recompute (default true) against false: the same MiLeNAS-1st steps (weights and BN statistics
    bit for bit; alphas to 1e-8: the alpha-only pass's conv input gradients round differently on one thread, see
    test_conv_recompute_alpha_only_pass; measured 1.2e-10), and the recomputing supernet keeps less: 70% here
    (stem and preprocessing weigh more in this small one; 53% in the default supernet at batch 64)."""
    from dataclasses import replace

    from gradnas.config import SearchConfig
    from gradnas.search.loop import build_optimizers
    from gradnas.search.methods import make_method
    from gradnas.space.darts import DartsSpaceConfig, DartsSupernet
    from gradnas.relax import make_relaxation

    cfg = DartsSpaceConfig(cells=3, channels=8, nodes=2, channels_last=True)
    assert cfg.recompute
    models, kept = [], []
    for c in (cfg, replace(cfg, recompute=False)):
        torch.manual_seed(0)
        model = DartsSupernet(c, make_relaxation("softmax"), in_channels=3, num_classes=5,
                              generator=torch.Generator().manual_seed(0))
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(4, 3, 16, 16, generator=g), torch.randint(0, 5, (4,), generator=g)
        kept.append(_saved_bytes(lambda: F.cross_entropy(model(x), y))[0])
        w, a, _ = build_optimizers(SearchConfig(relax="softmax"), model)
        method = make_method("milenas", model, w_optim=w, a_optim=a, grad_clip=5.0, order=1, lam=1.0)
        for _ in range(2):
            method.step((x, y), (x.flip(0), y.flip(0)))
        models.append(model)
    assert kept[0] <= 0.75 * kept[1], kept
    for (name, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        if name.startswith("alpha_"):
            assert torch.allclose(a, b, rtol=0, atol=1e-8), name
        else:
            assert torch.equal(a, b), name
