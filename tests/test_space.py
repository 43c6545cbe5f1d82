"""The DARTS supernet: shapes, the parameter split, and equality with a naive mixed-op reference."""
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import batch, tiny_supernet
from gradnas.errors import GradnasError
from gradnas.relax import RELAXATIONS, make_relaxation
from gradnas.space import build_supernet
from gradnas.space.darts import DartsSpaceConfig, edge_list
from gradnas.space.ops import OPS, polyphase_depthwise_conv


def test_default_supernet_size_and_split():
    model = build_supernet("darts", DartsSpaceConfig(), "softmax", in_channels=3, num_classes=10)
    weights, alphas = model.weight_parameters(), model.arch_parameters()
    # 1,930,618 weights: the figure measured for the reference DARTS search network (8 cells, 16 channels)
    assert sum(p.numel() for p in weights) == 1_930_618
    assert [a.shape for a in alphas] == [torch.Size([14, 8])] * 2
    ids_w, ids_a = {id(p) for p in weights}, {id(p) for p in alphas}
    assert not ids_w & ids_a
    assert ids_w | ids_a == {id(p) for p in model.parameters()}


@pytest.mark.parametrize("in_channels,size,classes", [(3, 32, 10), (1, 28, 10), (3, 20, 7)])
def test_output_shape_and_reduction_cells(in_channels, size, classes):
    model = tiny_supernet(cells=5, channels=4, nodes=3, in_channels=in_channels, classes=classes)
    assert [c.reduction for c in model.cells] == [False, True, False, True, False]
    x, _ = batch(3, in_channels, size)
    assert model(x).shape == (3, classes)


def test_search_ops_have_no_affine_bn_and_no_none_module():
    model = tiny_supernet()
    for cell in model.cells:
        for m in cell.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                assert not m.affine
        for edge in cell.edges.values():
            assert "none" not in edge  # `none` is never built or run in the supernet


def _reference_cell(cell, s0, s1, weights, active, ops):
    """Naive DARTS mixed op: every op (or every sampled op) on every edge computed on its own, `none` as
    explicit zeros, a separate ReLU per conv op and a separate pool + affine-free BN per edge."""
    states = [cell.pre0(s0), cell.pre1(s1)]
    row = 0
    for i in range(cell.nodes):
        acc = 0
        for j in range(i + 2):
            stride = 2 if cell.reduction and j < 2 else 1
            for k, name in enumerate(ops):
                if active is not None and k not in active[row]:
                    continue
                x = states[j]
                if name == "none":
                    out = OPS["none"](x.shape[1], stride, False)(x)
                elif name in ("max_pool_3x3", "avg_pool_3x3"):
                    out = F.batch_norm(OPS[name](x.shape[1], stride, False)(x), None, None, training=True)
                else:
                    out = cell.edges[f"{i + 2}_{j}"][name](x)  # the op applies its own ReLU
                acc = acc + weights[row, k] * out
            row += 1
        states.append(acc)
    return torch.cat(states[2:], 1)


def _reseed(model):
    """Restart the relaxation's per-epoch random stream, so the next forward pass samples what the last did."""
    model.relaxation.start_epoch(epoch=1, epochs=3, seed=0)


@pytest.mark.parametrize("relax", sorted(RELAXATIONS))
@pytest.mark.parametrize("channels_last", [False, True])
def test_supernet_equals_naive_mixed_ops(relax, channels_last):
    model = tiny_supernet(relax, cells=3, nodes=3, channels_last=channels_last, dtype=torch.float64)
    x, y = batch(4, 3, 8, dtype=torch.float64)
    _reseed(model)
    fast = model(x)

    def reference(x):
        _reseed(model)
        (wn, an), (wr, ar) = (model.relaxation.forward_weights(a, training=True) for a in model.arch_parameters())
        s0 = s1 = model.stem(x)
        for cell in model.cells:
            s0, s1 = s1, _reference_cell(cell, s0, s1, *((wr, ar) if cell.reduction else (wn, an)), model.cfg.ops)
        return model.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))

    slow = reference(x)
    assert torch.allclose(fast, slow, atol=1e-10)
    # alpha gradients, including the `none` column, which the fast path never computes an op for
    g_fast = torch.autograd.grad(F.cross_entropy(fast, y), model.arch_parameters())
    g_slow = torch.autograd.grad(F.cross_entropy(slow, y), model.arch_parameters())
    for a, b in zip(g_fast, g_slow):
        assert torch.allclose(a, b, atol=1e-10), (a - b).abs().max()
    if relax == "softmax":
        assert g_fast[0][:, 0].abs().sum() > 0  # none's alpha still learns through the softmax
    if model.relaxation.name == "gumbel":  # straight-through: every alpha of an edge that ran an op learns
        _reseed(model)
        for g, (_, active) in zip(g_fast, (model.relaxation.forward_weights(a, training=True)
                                           for a in model.arch_parameters())):
            ran = [row for row, (k,) in enumerate(active) if model.cfg.ops[k] != "none"]
            assert ran and (g[ran] != 0).all()


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [8, 7])
@pytest.mark.parametrize("channels_last", [False, True])
def test_polyphase_dilated_conv_is_exact(k, stride, size, channels_last):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, size, size, generator=g, dtype=torch.float64)
    w = torch.randn(3, 1, k, k, generator=g, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    w.requires_grad_(True)
    ref = F.conv2d(x, w, stride=stride, padding=k - 1, dilation=2, groups=3)
    out = polyphase_depthwise_conv(x, w, stride)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-12)
    grads_ref = torch.autograd.grad(ref.square().sum(), (x, w))
    grads = torch.autograd.grad(out.square().sum(), (x, w))
    for a, b in zip(grads, grads_ref):
        assert torch.allclose(a, b, atol=1e-10), (a - b).abs().max()


def test_factorized_reduce_odd_input():
    op = OPS["skip_connect"](4, 2, False)
    assert op(torch.randn(2, 4, 7, 7)).shape == (2, 4, 4, 4)
    assert op(torch.randn(2, 4, 8, 8)).shape == (2, 4, 4, 4)


def test_relaxations():
    g = torch.Generator().manual_seed(0)
    soft = make_relaxation("softmax")
    a = soft.init_alpha(14, 8, g)
    assert a.abs().max() < 1e-2
    assert torch.allclose(soft.weights(a).sum(1), torch.ones(14, dtype=a.dtype))
    sig = make_relaxation("sigmoid")
    a = sig.init_alpha(14, 8, g)
    assert torch.allclose(a, torch.full((14, 8), -math.log(7)))
    assert torch.allclose(sig.weights(a), torch.full((14, 8), 1 / 8))
    assert sig.default_arch_weight_decay == 0.0 and soft.default_arch_weight_decay == 1e-3
    with pytest.raises(GradnasError, match="valid: gumbel, sigmoid, softmax"):
        make_relaxation("gumbel-typo")


def test_space_config_errors():
    with pytest.raises(GradnasError, match="unknown operation"):
        DartsSpaceConfig(ops=("none", "conv_7x7"))
    with pytest.raises(GradnasError, match="even"):
        DartsSpaceConfig(channels=5)
    with pytest.raises(GradnasError, match="valid spaces"):
        build_supernet("nasnet", DartsSpaceConfig(), "softmax", in_channels=3, num_classes=10)


def test_custom_op_list_and_nodes():
    ops = ("none", "skip_connect", "sep_conv_3x3")
    model = tiny_supernet(ops=ops, nodes=3)
    assert model.alpha_normal.shape == (len(edge_list(3)), 3)
    x, _ = batch()
    assert model(x).shape == (4, 5)
    geno = model.genotype()
    assert {op for op, _ in geno.normal + geno.reduce} <= {"skip_connect", "sep_conv_3x3"}


@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
def test_depthwise_pointwise_recompute_gradients(dilation, stride, channels_last):
    from gradnas.space.ops import _DepthwisePointwise
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    dw = torch.randn(3, 1, 3, 3, generator=g, dtype=torch.float64)
    pw = torch.randn(4, 3, 1, 1, generator=g, dtype=torch.float64)
    inputs = tuple(t.requires_grad_(True) for t in (x, dw, pw))
    # finite differences against the custom backward
    assert torch.autograd.gradcheck(lambda *a: _DepthwisePointwise.apply(*a, stride, dilation), inputs)
    # and it skips the gradients nobody asked for
    pw.requires_grad_(False)
    out = _DepthwisePointwise.apply(x, dw, pw, stride, dilation)
    gx, = torch.autograd.grad(out.sum(), (x,))
    ref = F.conv2d(F.conv2d(x, dw, stride=stride, padding=dilation, dilation=dilation, groups=3), pw)
    assert torch.allclose(out, ref, atol=1e-12)
    assert torch.allclose(gx, torch.autograd.grad(ref.sum(), (x,))[0], atol=1e-12)
    # input gradient only (an alpha-only pass: no weight needs a gradient)
    dw.requires_grad_(False)
    upstream = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    gx, = torch.autograd.grad(_DepthwisePointwise.apply(x, dw, pw, stride, dilation), (x,), upstream)
    ref = F.conv2d(F.conv2d(x, dw, stride=stride, padding=dilation, dilation=dilation, groups=3), pw)
    assert torch.allclose(gx, torch.autograd.grad(ref, (x,), upstream)[0], atol=1e-12)


def test_scaled_batch_norm_matches_scale_times_bn():
    from gradnas.space.ops import scaled_batch_norm
    bn_a, bn_b = torch.nn.BatchNorm2d(4, affine=False).double(), torch.nn.BatchNorm2d(4, affine=False).double()
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()
    p = torch.tensor(0.37, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    a = bn_a(x) * p
    b = scaled_batch_norm(bn_b, x, p)
    assert torch.allclose(a, b, atol=1e-12)
    for ga, gb in zip(torch.autograd.grad(a, (x, p), g), torch.autograd.grad(b, (x, p), g)):
        assert torch.allclose(ga, gb, atol=1e-10)
    assert torch.allclose(bn_a.running_mean, bn_b.running_mean) and torch.allclose(bn_a.running_var, bn_b.running_var)
    assert bn_a.num_batches_tracked == bn_b.num_batches_tracked == 1
