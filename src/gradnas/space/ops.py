"""Candidate operations of the DARTS cell space (MiLeNAS supplementary A.1), defined once.

The supernet and the evaluation network both build their edges from ``OPS``. Search networks use
BatchNorm without affine parameters (``affine=False``), evaluation networks with them.

Two things here are about speed on CPU, not about the math (see ../shared/notes/cpu-supernet-profile.md):

* Ops that start with a ReLU (separable, dilated and factorized-reduce convolutions) accept
  ``pre_activated=True``: the supernet applies the ReLU once per node output and feeds the result to
  every such op on every edge leaving that node, instead of one ReLU (and one stored copy) per op.
* A dilation-2 depthwise convolution is computed as an undilated one on the polyphase sub-grids of its
  input, which gives the same numbers and is several times faster on CPU backward passes.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

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
# Ops without learnable weights: the single-level paper's "non-learnable" operations.
PARAMETER_FREE_OPS = frozenset({"none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"})
CONV_OPS = frozenset({"sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"})


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
    h, w = x.shape[-2:]
    # Odd sizes: a zero row/column at the end is what the conv's own zero padding would read there.
    if h % 2 or w % 2:
        x = F.pad(x, (0, w % 2, 0, h % 2))
    # pixel_unshuffle puts sub-grid (a, b) of channel c at channel 4c + 2a + b, so a depthwise conv with
    # each kernel repeated 4 times convolves every sub-grid with its channel's kernel. Unlike stacking the
    # sub-grids in the batch, this keeps the channels_last layout and costs no extra copies.
    y = F.conv2d(F.pixel_unshuffle(x, 2), weight.repeat_interleave(4, dim=0), padding=pad, groups=4 * channels)
    y = F.pixel_shuffle(y, 2)
    return y[:, :, :h, :w] if (h % 2 or w % 2) else y


class DepthwiseConv(nn.Conv2d):
    """Depthwise conv; dilation 2 goes through :func:`polyphase_depthwise_conv`."""

    def __init__(self, channels: int, kernel_size: int, stride: int, dilation: int):
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(channels, channels, kernel_size, stride, padding, dilation, groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dilation == (2, 2):
            return polyphase_depthwise_conv(x, self.weight, self.stride[0])
        return super().forward(x)


class ReLUConvBN(nn.Module):
    """ReLU -> conv -> BN: the preprocessing of cell inputs."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor, pre_activated: bool = False) -> torch.Tensor:
        return self.bn(self.conv(x if pre_activated else F.relu(x)))


class DilConv(nn.Module):
    """ReLU -> depthwise (dilated) conv -> pointwise conv -> BN."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, dilation: int, affine: bool = True):
        super().__init__()
        self.depthwise = DepthwiseConv(c_in, kernel_size, stride, dilation)
        self.pointwise = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor, pre_activated: bool = False) -> torch.Tensor:
        return self.bn(self.pointwise(self.depthwise(x if pre_activated else F.relu(x))))


class SepConv(nn.Module):
    """Two stacked DilConv blocks with dilation 1, the second with stride 1 (DARTS's separable conv)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, affine: bool = True):
        super().__init__()
        self.first = DilConv(c_in, c_in, kernel_size, stride, 1, affine)
        self.second = DilConv(c_in, c_out, kernel_size, 1, 1, affine)

    def forward(self, x: torch.Tensor, pre_activated: bool = False) -> torch.Tensor:
        return self.second(self.first(x, pre_activated))


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
# so a caller may hand them an already activated input.
OPS = {
    "none": lambda c, stride, affine: Zero(stride),
    "max_pool_3x3": lambda c, stride, affine: Pool("max", stride),
    "avg_pool_3x3": lambda c, stride, affine: Pool("avg", stride),
    "skip_connect": lambda c, stride, affine: Identity() if stride == 1 else FactorizedReduce(c, c, affine),
    "sep_conv_3x3": lambda c, stride, affine: SepConv(c, c, 3, stride, affine),
    "sep_conv_5x5": lambda c, stride, affine: SepConv(c, c, 5, stride, affine),
    "dil_conv_3x3": lambda c, stride, affine: DilConv(c, c, 3, stride, 2, affine),
    "dil_conv_5x5": lambda c, stride, affine: DilConv(c, c, 5, stride, 2, affine),
}
STARTS_WITH_RELU = (SepConv, DilConv, FactorizedReduce, ReLUConvBN)


def check_op_names(names, *, known=tuple(OPS)) -> None:
    """Raise a GradnasError naming any op not in the table, and the valid ones."""
    unknown = [n for n in names if n not in known]
    if unknown:
        raise GradnasError(f"unknown operation(s) {unknown}; valid operations: {', '.join(known)}")
