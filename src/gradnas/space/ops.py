"""Candidate operations of the DARTS cell space (MiLeNAS supplementary A.1) and of NAS-Bench-201, defined once.

The supernets and the evaluation networks of both spaces build their edges from ``OPS``. Search networks
use BatchNorm without affine parameters (``affine=False``), evaluation networks with them. NAS-Bench-201's
residual reduction block (:class:`ResNetBlock`) is here too.

Two things here are about speed on CPU, not about the math (see ../shared/notes/cpu-supernet-profile.md):

* Ops that start with a ReLU (separable, dilated and factorized-reduce convolutions) accept
  ``pre_activated=True``: the supernet applies the ReLU once per node output and feeds the result to
  every such op on every edge leaving that node, instead of one ReLU (and one stored copy) per op.
* A dilation-2 depthwise convolution is computed as an undilated one on the polyphase sub-grids of its
  input, which gives the same numbers and is several times faster on CPU backward passes.
* Separable and dilated convs keep little for backward and recompute the rest there (``_DepthwisePointwise``,
  ``_ConvsBN``): their convs' forwards and BNs are cheap next to a depthwise conv's backward, and the
  activations they would store are most of a supernet's memory. Same numbers bit for bit.

The table is open: :func:`register_op` adds an op (``unregister_op`` / the ``registered_op`` context
manager remove it again). ``OPS``, ``PARAMETER_FREE_OPS`` and ``CONV_OPS`` are live read-only views, so
every reader sees the ops registered so far.
"""
from __future__ import annotations

import re
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from types import MappingProxyType

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from gradnas.errors import GradnasError

# Names as in the DARTS paper and code, so genotypes stay interchangeable with published ones.
DARTS_OPS = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
# NAS-Bench-201's five ops, in the benchmark's order (Dong & Yang 2020; single-level paper 4.1.1).
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# PARAMETER_FREE_OPS and CONV_OPS (live views of the op table) are defined with OPS, at the end.


def polyphase_depthwise_conv(x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    """A depthwise conv with dilation 2 and 'same' padding (k - 1), computed without dilation.

    Output position p of a dilation-2 conv only reads input positions of the same parity as p, so it
    is an ordinary (undilated, padding k//2) conv on each of the four parity sub-grids. With stride 2
    only the even sub-grid is ever read. Exact: same products, same sums.
    """
    k = weight.shape[-1]
    pad = k // 2
    channels = weight.shape[0]
    if stride == 2:
        return F.conv2d(x[:, :, ::2, ::2], weight, padding=pad, groups=channels)
    channels_last = x.is_contiguous(memory_format=torch.channels_last)
    n, c, h, w = x.shape
    # Odd sizes: a zero row/column at the end is what the conv's own zero padding would read there.
    if h % 2 or w % 2:
        x = F.pad(x, (0, w % 2, 0, h % 2))
    hh, ww = (h + h % 2) // 2, (w + w % 2) // 2
    # Sub-grid (a, b) of channel c goes to channel (2a + b) * C + c, built in the NHWC view so each
    # copy moves whole runs of C values; the kernels are tiled 4 times to match. One conv, no dilation.
    sub = (x.permute(0, 2, 3, 1).reshape(n, hh, 2, ww, 2, c).permute(0, 1, 3, 2, 4, 5)
           .reshape(n, hh, ww, 4 * c).permute(0, 3, 1, 2))
    y = F.conv2d(sub, weight.repeat(4, 1, 1, 1), padding=pad, groups=4 * channels)
    y = (y.permute(0, 2, 3, 1).reshape(n, hh, ww, 2, 2, c).permute(0, 1, 3, 2, 4, 5)
         .reshape(n, 2 * hh, 2 * ww, c).permute(0, 3, 1, 2))
    if h % 2 or w % 2:
        y = y[:, :, :h, :w]
    return y if channels_last else y.contiguous()


def depthwise_conv(x: torch.Tensor, weight: torch.Tensor, stride: int, dilation: int) -> torch.Tensor:
    """Depthwise conv with 'same' padding; dilation 2 goes through :func:`polyphase_depthwise_conv`."""
    if dilation == 2:
        return polyphase_depthwise_conv(x, weight, stride)
    k = weight.shape[-1]
    return F.conv2d(x, weight, stride=stride, padding=dilation * (k - 1) // 2, dilation=dilation,
                    groups=weight.shape[0])


_TWICE_DIFFERENTIABLE = False


@contextmanager
def twice_differentiable():
    """Build graphs that can be differentiated twice (create_graph=True), e.g. for an exact
    Hessian-vector product. Inside, separable/dilated convs use plain autograd instead of
    :class:`_DepthwisePointwise`, whose memory-saving backward is differentiable only once."""
    global _TWICE_DIFFERENTIABLE
    previous, _TWICE_DIFFERENTIABLE = _TWICE_DIFFERENTIABLE, True
    try:
        yield
    finally:
        _TWICE_DIFFERENTIABLE = previous


class _DepthwisePointwise(torch.autograd.Function):
    """pointwise(depthwise(x)) that keeps only x for backward and recomputes the depthwise output there.

    The depthwise output is as large as x and is otherwise stored for the pointwise weight gradient; its
    forward is cheap next to any backward, so recomputing it halves the memory of a separable conv for
    a few percent of its time. Weight gradients are computed only for weights that require grad.
    """

    @staticmethod
    def forward(ctx, x, dw_weight, pw_weight, stride, dilation):
        ctx.stride, ctx.dilation = stride, dilation
        # Under autocast the forward convs run in the autocast dtype; the recomputation in backward (which
        # runs outside the autocast region) must do the same to reproduce the forward's numbers.
        ctx.device_type = x.device.type
        ctx.autocast = torch.is_autocast_enabled(ctx.device_type)
        ctx.autocast_dtype = torch.get_autocast_dtype(ctx.device_type)
        ctx.save_for_backward(x, dw_weight, pw_weight)
        out = F.conv2d(depthwise_conv(x, dw_weight, stride, dilation), pw_weight)
        ctx.conv_dtype = out.dtype  # the dtype both convs ran in
        return out

    @staticmethod
    @once_differentiable  # a second derivative through here raises instead of being silently wrong
    def backward(ctx, grad):
        x, dw_weight, pw_weight = ctx.saved_tensors
        need_x, need_dw, need_pw = ctx.needs_input_grad[:3]
        if need_x and not (need_dw or need_pw) and ctx.dilation == 1:
            # Only the input gradient (an alpha-only pass): both are transposed convolutions that need no
            # activation, so the depthwise output is not recomputed. 1x1 conv: grad_t = W_pw^T grad.
            dtype = ctx.conv_dtype
            grad_t = F.conv2d(grad.to(dtype), pw_weight.to(dtype).transpose(0, 1))
            k = dw_weight.shape[-1]
            grad_x = torch.ops.aten.convolution_backward(
                grad_t, x.to(dtype), dw_weight.to(dtype), None, [ctx.stride] * 2, [(k - 1) // 2] * 2, [1, 1], False,
                [0, 0], dw_weight.shape[0], [True, False, False])[0]
            return grad_x, None, None, None, None
        with torch.enable_grad(), torch.autocast(ctx.device_type, dtype=ctx.autocast_dtype, enabled=ctx.autocast):
            xd = x.detach().requires_grad_(need_x)
            dwd = dw_weight.detach().requires_grad_(need_dw)
            t = depthwise_conv(xd, dwd, ctx.stride, ctx.dilation)
        # The pointwise conv ran in t's dtype (autograd casts a gradient back to its parameter's dtype).
        grad_t, grad_pw, _ = torch.ops.aten.convolution_backward(
            grad.to(t.dtype), t.detach(), pw_weight.to(t.dtype), None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
            [True, need_pw, False])
        inputs = [v for v, need in ((xd, need_x), (dwd, need_dw)) if need]
        grads = iter(torch.autograd.grad(t, inputs, grad_t) if inputs else ())
        grad_x = next(grads) if need_x else None
        grad_dw = next(grads) if need_dw else None
        return grad_x, grad_dw, grad_pw if need_pw else None, None, None


def _recomputes(op: nn.Module) -> bool:
    """Does a separable / dilated conv keep little and recompute in backward now: its ``recompute`` is on,
    autograd records, and the graph need not be differentiated twice (plain ops then)?"""
    return op.recompute and torch.is_grad_enabled() and not _TWICE_DIFFERENTIABLE


def set_recompute(module: nn.Module, on: bool) -> None:
    """Turn the recomputation of the separable / dilated convs inside ``module`` on (the default) or off
    (they store their activations: measured on the DARTS supernet at batch 64, DARTS-1st and MiLeNAS-1st
    steps about a fifth faster, since an alpha-only pass then recomputes nothing, for about 1.7x the peak
    memory)."""
    for m in module.modules():
        if isinstance(m, (SepConv, DilConv)):
            m.recompute = bool(on)


def _out_bn_weights(bn: nn.BatchNorm2d, scale):
    """(weight, bias) of the op's last BN: its own (None without affine), or ``scale`` as the weight of an
    affine-free search BN (see :func:`scaled_batch_norm`)."""
    if scale is None:
        return bn.weight, bn.bias
    if bn.affine:
        raise ValueError("scaled_batch_norm is for affine-free (search) BatchNorm")
    # A real (contiguous) weight vector: torch 2.13's CPU BN backward returns a wrong input gradient for
    # channels_last input when the weight is a stride-0 expand (checked by tests/test_space.py).
    return scale.expand(bn.num_features).contiguous(), None


class _ConvsBN(torch.autograd.Function):
    """``bn_out(pointwise(depthwise(a)))`` with ``a = relu(bn_in(y))`` (the second half of a separable conv) or
    ``a = y`` (``in_bn`` None: a dilated conv of an activated input), keeping only ``y`` for backward.

    Stored by plain autograd: the BN inputs and the ReLU output, each as large as ``y``. Backward instead
    recomputes the block from ``y`` (the BN forwards, the ReLU, the two convs' forwards, cheap next to a
    depthwise conv's backward) and differentiates that with autograd, so values, gradients and statistics
    updates equal the plain ops' bit for bit, and only the gradients asked for are computed (an alpha-only
    pass computes no weight gradient). The BNs run in forward as they would outside (:func:`_batch_norm`:
    running statistics and their counter updated once); backward uses the same batch's statistics
    (training) or the running statistics as they were at forward time (eval). Beyond its (shared, activated)
    input, a separable conv then keeps one activation instead of five and a dilated conv none instead of two:
    the DARTS supernet's forward at batch 64 keeps 1.55 GB for backward instead of 2.94.
    """

    @staticmethod
    def forward(ctx, y, in_weight, in_bias, dw_weight, pw_weight, out_weight, out_bias, in_bn, out_bn, stride,
                dilation):
        ctx.stride, ctx.dilation = stride, dilation
        ctx.has_in = in_bn is not None
        bns = (in_bn, out_bn) if ctx.has_in else (out_bn,)
        ctx.eps = tuple(bn.eps for bn in bns)
        ctx.batch_stats = tuple(bn.training or not bn.track_running_stats for bn in bns)
        ctx.device_type = y.device.type
        ctx.autocast = torch.is_autocast_enabled(ctx.device_type)
        ctx.autocast_dtype = torch.get_autocast_dtype(ctx.device_type)
        stats = [None, None] if not ctx.has_in else []
        for bn, batch in zip(bns, ctx.batch_stats):
            stats += [None, None] if batch else [bn.running_mean.clone(), bn.running_var.clone()]
        ctx.save_for_backward(y, in_weight, in_bias, dw_weight, pw_weight, out_weight, out_bias, *stats)
        r = F.relu(_batch_norm(in_bn, y, in_weight, in_bias)) if ctx.has_in else y
        t = depthwise_conv(r, dw_weight, stride, dilation)
        return _batch_norm(out_bn, F.conv2d(t, pw_weight), out_weight, out_bias)

    @staticmethod
    @once_differentiable  # a second derivative through here raises instead of being silently wrong
    def backward(ctx, grad):
        y, in_w, in_b, dw_w, pw_w, out_w, out_b, m1, v1, m2, v2 = ctx.saved_tensors
        needs = ctx.needs_input_grad[:7]
        with torch.enable_grad(), torch.autocast(ctx.device_type, dtype=ctx.autocast_dtype, enabled=ctx.autocast):
            leaves = [None if v is None else v.detach().requires_grad_(need)
                      for v, need in zip((y, in_w, in_b, dw_w, pw_w, out_w, out_b), needs)]
            yd, iw, ib, dw, pw, ow, ob = leaves
            r = F.relu(F.batch_norm(yd, m1, v1, iw, ib, ctx.batch_stats[0], 0.0, ctx.eps[0])) if ctx.has_in else yd
            y2 = F.conv2d(depthwise_conv(r, dw, ctx.stride, ctx.dilation), pw)
            out = F.batch_norm(y2, m2, v2, ow, ob, ctx.batch_stats[-1], 0.0, ctx.eps[-1])
        inputs = [v for v, need in zip(leaves, needs) if need]
        grads = iter(torch.autograd.grad(out, inputs, grad) if inputs else ())
        return (*[next(grads) if need else None for need in needs], None, None, None, None)


class DepthwiseConv(nn.Conv2d):
    """Depthwise conv; dilation 2 goes through :func:`polyphase_depthwise_conv`."""

    def __init__(self, channels: int, kernel_size: int, stride: int, dilation: int):
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(channels, channels, kernel_size, stride, padding, dilation, groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv(x, self.weight, self.stride[0], self.dilation[0])


def _batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, weight, bias) -> torch.Tensor:
    """``bn(x)`` with ``weight`` and ``bias`` in place of the module's own: the same call torch's BatchNorm
    forward makes (batch counter, momentum, which statistics), so the same numbers and statistics updates."""
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    keep = not bn.training or bn.track_running_stats
    return F.batch_norm(x, bn.running_mean if keep else None, bn.running_var if keep else None, weight, bias,
                        batch_stats, momentum, bn.eps)


def scaled_batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """``scale * bn(x)`` for an affine-free BN, computed as a BN whose affine weight is ``scale``.

    The supernet multiplies every op output by its relaxed weight p. Done as a separate multiply,
    autograd must keep the BN output to get dL/dp; as the BN's own weight, BN backward derives dL/dp
    from the input it keeps anyway. Same numbers, one stored tensor and one pass over memory less.
    """
    if scale is None:
        return bn(x)
    return _batch_norm(bn, x, *_out_bn_weights(bn, scale))


class _ScalesInBN(nn.Module):
    """An op ending in ``self.bn`` that takes the supernet's relaxed weight as ``scale``."""

    @torch.jit.unused  # the supernet's path; evaluation networks (and so scripted ones) pass no scale
    def _scaled_bn(self, y, scale):  # (unannotated: TorchScript reads an unused method's types as Tensors)
        return scaled_batch_norm(self.bn, y, scale)


class ReLUConvBN(_ScalesInBN):
    """ReLU -> conv -> BN: the preprocessing of DARTS cell inputs and NAS-Bench-201's nor_conv ops."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor, pre_activated: bool = False, scale: torch.Tensor | None = None) -> torch.Tensor:
        y = self.conv(x if pre_activated else F.relu(x))
        return self.bn(y) if scale is None else self._scaled_bn(y, scale)


class ResNetBlock(nn.Module):
    """NAS-Bench-201's residual reduction block between stages (He et al. basic block, stride 2):
    ReLU-Conv3x3(stride 2)-BN -> ReLU-Conv3x3-BN, plus a shortcut of 2x2 average pooling and a 1x1 conv.
    Always built with affine BN, in the search network too, as in the benchmark's code."""

    def __init__(self, c_in: int, c_out: int, stride: int = 2):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride, 1, affine=True)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1, affine=True)
        if stride == 2:
            # ceil_mode: odd sizes give the conv path's ceil(H/2) too; even sizes are unaffected.
            self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2, ceil_mode=True), nn.Conv2d(c_in, c_out, 1, bias=False))
        elif c_in != c_out:
            self.shortcut = ReLUConvBN(c_in, c_out, 1, 1, 0, affine=True)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


class DilConv(_ScalesInBN):
    """ReLU -> depthwise (dilated) conv -> pointwise conv -> BN."""

    #: with gradients, keep only the input for backward and recompute the rest there (_ConvsBN)
    recompute: bool = True

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, dilation: int, affine: bool = True):
        super().__init__()
        self.depthwise = DepthwiseConv(c_in, kernel_size, stride, dilation)
        self.pointwise = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor, pre_activated: bool = False, scale: torch.Tensor | None = None) -> torch.Tensor:
        x = x if pre_activated else F.relu(x)
        if torch.jit.is_scripting():  # a scripted network (inference): the plain convs, the same numbers
            y = self.pointwise(self.depthwise(x))
        elif self._recomputes():
            return self._convs_bn(x, scale)  # keeps only x for backward (_ConvsBN)
        else:
            y = self._eager_convs(x)
        return self.bn(y) if scale is None else self._scaled_bn(y, scale)

    @torch.jit.unused
    def _recomputes(self) -> bool:
        return _recomputes(self)

    @torch.jit.unused
    def _convs_bn(self, x, scale):  # (unannotated: TorchScript reads an unused method's types as Tensors)
        out_w, out_b = _out_bn_weights(self.bn, scale)
        return _ConvsBN.apply(x, None, None, self.depthwise.weight, self.pointwise.weight, out_w, out_b, None, self.bn,
                              self.depthwise.stride[0], self.depthwise.dilation[0])

    @torch.jit.unused
    def _eager_convs(self, x):  # (unannotated: TorchScript reads an unused method's types as Tensors)
        if torch.is_grad_enabled() and not _TWICE_DIFFERENTIABLE:
            return _DepthwisePointwise.apply(x, self.depthwise.weight, self.pointwise.weight, self.depthwise.stride[0],
                                             self.depthwise.dilation[0])
        return self.pointwise(self.depthwise(x))


class SepConv(nn.Module):
    """Two stacked DilConv blocks with dilation 1, the second with stride 1 (DARTS's separable conv)."""

    #: with gradients, keep the first block's input and output only and recompute the rest (_ConvsBN)
    recompute: bool = True

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, affine: bool = True):
        super().__init__()
        self.first = DilConv(c_in, c_in, kernel_size, stride, 1, affine)
        self.second = DilConv(c_in, c_out, kernel_size, 1, 1, affine)

    def forward(self, x: torch.Tensor, pre_activated: bool = False, scale: torch.Tensor | None = None) -> torch.Tensor:
        if torch.jit.is_scripting():  # a scripted network (inference): the plain blocks, the same numbers
            return self.second(self.first(x, pre_activated), scale=scale)
        return self._eager(x, pre_activated, scale)

    @torch.jit.unused
    def _eager(self, x, pre_activated, scale):  # (unannotated: TorchScript reads an unused method's types as Tensors)
        if not _recomputes(self):
            return self.second(self.first(x, pre_activated), scale=scale)
        # With gradients: the first block as its own (_DepthwisePointwise, keeping its input), the rest as one
        # recomputed block (_ConvsBN, keeping the first block's output only).
        first, second = self.first, self.second
        y = first._eager_convs(x if pre_activated else F.relu(x))
        out_w, out_b = _out_bn_weights(second.bn, scale)
        return _ConvsBN.apply(y, first.bn.weight, first.bn.bias, second.depthwise.weight, second.pointwise.weight,
                              out_w, out_b, first.bn, second.bn, second.depthwise.stride[0],
                              second.depthwise.dilation[0])


class FactorizedReduce(nn.Module):
    """ReLU -> two stride-2 1x1 convs on offset grids, concatenated -> BN: halves the resolution."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        if c_out % 2:
            raise GradnasError(f"FactorizedReduce needs an even channel count, got {c_out}; use an even --channels.")
        self.conv_a = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_b = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor, pre_activated: bool = False) -> torch.Tensor:
        x = x if pre_activated else F.relu(x)
        # The second conv reads the odd grid; pad so odd input sizes give the same output size.
        shifted = F.pad(x[:, :, 1:, 1:], (0, x.shape[3] % 2, 0, x.shape[2] % 2))
        return self.bn(torch.cat([self.conv_a(x), self.conv_b(shifted)], dim=1))


class Identity(nn.Module):
    def forward(self, x: torch.Tensor, pre_activated: bool = False) -> torch.Tensor:
        return x


class Pool(nn.Module):
    """3x3 max or average pooling (average excludes the padding, as in DARTS)."""

    def __init__(self, kind: str, stride: int):
        super().__init__()
        self.kind, self.stride = kind, stride

    def forward(self, x: torch.Tensor, pre_activated: bool = False) -> torch.Tensor:
        if self.kind == "max":
            return F.max_pool2d(x, 3, self.stride, 1)
        return F.avg_pool2d(x, 3, self.stride, 1, count_include_pad=False)


class Zero(nn.Module):
    """The `none` op. The supernet never calls it (its contribution is exactly zero); it exists for
    completeness of the op table, e.g. for an evaluation network built from a hand-written genotype."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor, pre_activated: bool = False) -> torch.Tensor:
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


# Op name -> constructor(C, stride, affine). Ops that begin with a ReLU declare it (`STARTS_WITH_RELU`)
# so a caller may hand them an already activated input; ops ending in an affine-free BN take the
# relaxed weight as `scale` (`SCALES_IN_BN`). `OPS` is a read-only live view: add ops with register_op.
_OPS = {
    "none": lambda c, stride, affine: Zero(stride),
    "max_pool_3x3": lambda c, stride, affine: Pool("max", stride),
    "avg_pool_3x3": lambda c, stride, affine: Pool("avg", stride),
    "skip_connect": lambda c, stride, affine: Identity() if stride == 1 else FactorizedReduce(c, c, affine),
    "sep_conv_3x3": lambda c, stride, affine: SepConv(c, c, 3, stride, affine),
    "sep_conv_5x5": lambda c, stride, affine: SepConv(c, c, 5, stride, affine),
    "dil_conv_3x3": lambda c, stride, affine: DilConv(c, c, 3, stride, 2, affine),
    "dil_conv_5x5": lambda c, stride, affine: DilConv(c, c, 5, stride, 2, affine),
    "nor_conv_1x1": lambda c, stride, affine: ReLUConvBN(c, c, 1, stride, 0, affine),
    "nor_conv_3x3": lambda c, stride, affine: ReLUConvBN(c, c, 3, stride, 1, affine),
}
OPS = MappingProxyType(_OPS)
STARTS_WITH_RELU = (SepConv, DilConv, FactorizedReduce, ReLUConvBN)
SCALES_IN_BN = (SepConv, DilConv, ReLUConvBN)
BUILTIN_OPS = frozenset(_OPS)
_PARAMETER_FREE = {"none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"}
_CONV = {"sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "nor_conv_1x1", "nor_conv_3x3"}
# Bumped by every change of the table, so caches keyed by op names (e.g. darts_params_m) can tell that a
# name now builds something else.
_VERSION = [0]


class _LiveOpSet(AbstractSet):
    """A read-only set that always shows the current members of one of the table's flag sets.

    Modules import PARAMETER_FREE_OPS / CONV_OPS by name at import time; a view (rather than a frozenset
    rebuilt on registration) means every such reader sees ops registered later."""

    def __init__(self, members: set, what: str):
        self._members, self._what = members, what

    def __contains__(self, name) -> bool:
        return name in self._members

    def __iter__(self):
        return iter(sorted(self._members))

    def __len__(self) -> int:
        return len(self._members)

    def __repr__(self) -> str:
        return f"<{self._what}: {', '.join(self)}>"

    @classmethod
    def _from_iterable(cls, it):
        # Set algebra (a | b, a - b) gives a plain frozenset snapshot, not another view.
        return frozenset(it)


# Ops without learnable weights: the single-level paper's "non-learnable" operations (its collapse watch).
# At stride 1 their output depends only on the input.
PARAMETER_FREE_OPS = _LiveOpSet(_PARAMETER_FREE, "parameter-free ops")
# Ops that count as a convolution in MiLeNAS's model sizes (gradnas.search.sizes.conv_counts).
CONV_OPS = _LiveOpSet(_CONV, "conv ops")

# What a genotype string can hold: it separates edges, inputs and cells with | ~ + ; =.
OP_NAME = re.compile(r"[A-Za-z0-9_]+")
_MODULE_DICT_ATTRS = frozenset(dir(nn.ModuleDict()))  # a supernet keys its per-edge ModuleDict by op name
_PROBE = (2, 8, 8, 8)  # N x C x H x W of the probe input register_op runs each new op on


def op_table_version() -> int:
    """A number that changes whenever an op is registered, replaced or unregistered."""
    return _VERSION[0]


def check_op_name(name) -> str:
    """``name`` if it can be an op name (letters, digits, '_': it must survive a genotype string)."""
    if not isinstance(name, str) or not OP_NAME.fullmatch(name):
        raise GradnasError(f"op name {name!r} is not valid; use letters, digits and '_' only (genotype strings "
                           "separate ops with | ~ + ; =)")
    return name


def _probe_op(name: str, factory, parameter_free: bool) -> None:
    """Build ``factory`` at stride 1 and 2 and run it once on a small input, so a wrong factory fails here,
    with its name, instead of deep inside a supernet. The global RNG is left as it was."""
    n, c, h, w = _PROBE
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        for stride in (1, 2):
            call = f"register_op({name!r}): factory({c}, {stride}, affine=False)"
            try:
                module = factory(c, stride, False)
            except Exception as exc:  # noqa: BLE001 - re-raised as the one clear error
                raise GradnasError(f"{call} raised {type(exc).__name__}: {exc}; a factory takes (C, stride, "
                                   "affine) and returns an nn.Module") from exc
            if not isinstance(module, nn.Module):
                raise GradnasError(f"{call} returned {type(module).__name__}, not an nn.Module; return a module "
                                   "whose forward(x) maps N x C x H x W to N x C x H/stride x W/stride")
            try:
                out = module(torch.randn(n, c, h, w))
            except Exception as exc:  # noqa: BLE001
                raise GradnasError(f"{call}: its forward on a {n}x{c}x{h}x{w} input raised {type(exc).__name__}: "
                                   f"{exc}") from exc
            want = (n, c, -(-h // stride), -(-w // stride))
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise GradnasError(f"{call}: forward maps a {n}x{c}x{h}x{w} input to {got}, expected "
                                   f"{'x'.join(map(str, want))}; keep the channels and divide the side by stride")
            learnable = sum(p.numel() for p in module.parameters())
            if parameter_free and stride == 1 and learnable:
                raise GradnasError(f"{call} has {learnable} learnable parameters, so it is not parameter-free; "
                                   "drop parameter_free=True")


def register_op(name: str, factory=None, *, parameter_free: bool = False, conv: bool = False,
                replace: bool = False):
    """Add op ``name`` to the op table: ``factory(C, stride, affine) -> nn.Module`` whose forward(x) maps
    N x C x H x W to N x C x ceil(H/stride) x ceil(W/stride) (search networks pass affine=False, evaluation
    networks affine=True).

    ``parameter_free``: the op has no learnable weights (at stride 1); it then counts in the non-learnable
    share / collapse watch (PARAMETER_FREE_OPS). ``conv``: it counts as a convolution in MiLeNAS model sizes
    (CONV_OPS). ``replace``: allow a new factory for a name registered earlier with register_op; the
    built-in ops are never replaced (the supernets special-case some by name). The factory is built and run
    once on a small CPU input as a check, without touching the global RNG.

    The op is then usable wherever a built-in one is: ``supernet.ops``, genotypes, evaluation networks and
    derivation (NAS-Bench-201's op list is the benchmark's and stays fixed). Returns ``factory``; called
    without one it returns a decorator: ``@register_op("my_op", conv=True)`` over the factory.
    """
    if factory is None:
        return lambda f: register_op(name, f, parameter_free=parameter_free, conv=conv, replace=replace)
    check_op_name(name)
    if name in _MODULE_DICT_ATTRS:
        raise GradnasError(f"op name {name!r} is an attribute of torch's ModuleDict, which holds a supernet's "
                           "ops by name; choose another name")
    if name in BUILTIN_OPS:
        raise GradnasError(f"op {name!r} is a built-in op and cannot be replaced; register yours under another "
                           "name")
    if name in _OPS and not replace:
        raise GradnasError(f"op {name!r} is already registered; pass replace=True to replace it, or "
                           "unregister_op it first")
    if not callable(factory):
        raise GradnasError(f"register_op({name!r}): the factory must be callable (C, stride, affine) -> "
                           f"nn.Module, got {type(factory).__name__}")
    if parameter_free and conv:
        raise GradnasError(f"register_op({name!r}): a convolution has learnable weights; pass parameter_free=True "
                           "or conv=True, not both")
    _probe_op(name, factory, parameter_free)
    _OPS[name] = factory
    for flag, members in ((parameter_free, _PARAMETER_FREE), (conv, _CONV)):
        (members.add if flag else members.discard)(name)
    _VERSION[0] += 1
    return factory


def unregister_op(name: str) -> None:
    """Remove an op added with :func:`register_op` (built-in ops stay); a GradnasError if it is not one."""
    if name in BUILTIN_OPS:
        raise GradnasError(f"op {name!r} is a built-in op and cannot be unregistered")
    if name not in _OPS:
        raise GradnasError(f"op {name!r} is not registered; registered ops: "
                           f"{', '.join(n for n in _OPS if n not in BUILTIN_OPS) or 'none'}")
    del _OPS[name]
    _PARAMETER_FREE.discard(name)
    _CONV.discard(name)
    _VERSION[0] += 1


@contextmanager
def registered_op(name: str, factory, *, parameter_free: bool = False, conv: bool = False):
    """``register_op`` for the duration of a ``with`` block (tests, experiments), unregistered afterwards."""
    register_op(name, factory, parameter_free=parameter_free, conv=conv)
    try:
        yield factory
    finally:
        unregister_op(name)


def check_op_names(names, *, known=None) -> None:
    """Raise a GradnasError naming any op not in ``known`` (default: the op table as it is now)."""
    known = tuple(_OPS) if known is None else tuple(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise GradnasError(f"unknown operation(s) {unknown}; valid operations: {', '.join(known)} (add your own "
                           "with gradnas.space.ops.register_op)")

