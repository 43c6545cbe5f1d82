"""Activation memory of the supernet ops: what a separable conv keeps for backward, and that keeping less
changes no number (values, gradients, BN running statistics equal the plain ops bit for bit)."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from gradnas.space.ops import SepConv, _BNReLUDepthwisePointwise, twice_differentiable


def _plain(op, x, scale=None):
    """The separable conv as plain autograd ops (what it computed before keeping less)."""
    h = op.first.bn(op.first.pointwise(op.first.depthwise(F.relu(x))))
    y = op.second.pointwise(op.second.depthwise(F.relu(h)))
    return op.second.bn(y) if scale is None else op.second._scaled_bn(y, scale)


def _pair(affine, stride, k, channels_last, train):
    torch.manual_seed(1)
    op = SepConv(4, 4, k, stride, affine=affine)
    ref = SepConv(4, 4, k, stride, affine=affine)
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


@pytest.mark.parametrize("affine,stride,k,channels_last,train",
                         list(itertools.product([False, True], [1, 2], [3, 5], [False, True], [True, False])))
def test_separable_conv_recompute_is_bitwise_the_plain_ops(affine, stride, k, channels_last, train):
    op, ref, x = _pair(affine, stride, k, channels_last, train)
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


@pytest.mark.parametrize("train", [True, False])
def test_separable_conv_recompute_alpha_only_pass(train):
    """No weight needs a gradient (an alpha-only pass): the input and scale gradients still equal the plain ops'."""
    op, ref, x = _pair(False, 1, 3, True, train)
    for p in [*op.parameters(), *ref.parameters()]:
        p.requires_grad_(False)
    scale = torch.tensor(1.3, requires_grad=True)
    up = torch.randn(3, 4, 9, 9)
    got = torch.autograd.grad(op(x, scale=scale), [x, scale], up)
    want = torch.autograd.grad(_plain(ref, x, scale), [x, scale], up)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_bn_relu_depthwise_pointwise_gradcheck():
    """Finite differences against the recomputing backward, batch statistics and affine BN (float64)."""
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(2).double()
    y = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    bw = torch.rand(2, dtype=torch.float64).add_(0.5).requires_grad_(True)
    bb = torch.randn(2, dtype=torch.float64, requires_grad=True)
    dw = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    pw = torch.randn(3, 2, 1, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: _BNReLUDepthwisePointwise.apply(*a, bn, 1, 1), (y, bw, bb, dw, pw),
                                    fast_mode=True)


def _saved_bytes(fn):
    """Bytes of the distinct storages autograd keeps for backward while ``fn()`` runs, and its output."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(storages.values()), out


def test_separable_conv_keeps_two_activations_not_three():
    """A separable conv in a supernet (its input already activated and kept by the shared ReLU) stores the
    inputs of its two BNs; the ReLU output between them is recomputed, not kept."""
    torch.manual_seed(0)
    op = SepConv(8, 8, 3, 1, affine=False)
    x = F.relu(torch.randn(4, 8, 16, 16, requires_grad=True))
    act = x.numel() * x.element_size()
    scale = torch.tensor(0.5, requires_grad=True)
    kept, _ = _saved_bytes(lambda: op(x, pre_activated=True, scale=scale))
    extra = kept - act  # the shared input itself is counted once
    assert 2 * act <= extra < 2 * act + 64 * 1024, (extra, act)
    with twice_differentiable():  # the plain ops (a graph that can be differentiated twice) keep three
        kept_plain, _ = _saved_bytes(lambda: op(x, pre_activated=True, scale=scale))
    assert kept_plain - act >= 3 * act


def test_recompute_refuses_a_second_derivative():
    op = SepConv(4, 4, 3, 1, affine=False)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    g, = torch.autograd.grad(op(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|differentiable"):
        g.sum().backward()
