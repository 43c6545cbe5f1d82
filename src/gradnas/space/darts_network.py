"""The DARTS-space evaluation network: a discrete cell from a genotype, stacked and trained from scratch.

As in DARTS / MiLeNAS (section 4.3, supplementary A.2): a stem, then ``cells`` cells with reduction cells
(stride 2, channels doubled) at 1/3 and 2/3 of the depth, global average pooling and a linear classifier;
an auxiliary classifier reads the output of the cell at the 2/3 point during training. Every intermediate
node sums its two chosen ops, built from the same op table as the supernet (``space/ops.py``) with
affine BatchNorm and their own ReLUs (no supernet sharing). Drop path zeroes whole op outputs per sample
on every op that is not an identity.

Two stems: ``cifar`` (3x3 conv, stride 1, 3C channels) and ``imagenet`` (three stride-2 3x3 convs, input
side / 8 before the first cell, so 224 -> 28).
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from gradnas.errors import GradnasError
from gradnas.space.genotype import Genotype
from gradnas.space.ops import OPS, FactorizedReduce, Identity, ReLUConvBN, check_op_names, op_table_version

STEMS = ("cifar", "imagenet")
AUX_CHANNELS = (128, 768)  # the auxiliary head's two convs, as in NASNet / DARTS


def drop_path(x: torch.Tensor, prob: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero each sample's whole tensor with probability ``prob`` and scale survivors by 1 / (1 - prob)
    (FractalNet / NASNet drop path), so the expected output is unchanged."""
    if prob <= 0.0:
        return x
    keep = 1.0 - prob
    if torch.jit.is_scripting():  # (decided when compiling) a scripted Generator has no .device
        gen_device = x.device
    else:
        gen_device = generator.device if generator is not None else x.device
    mask = torch.rand(x.shape[0], 1, 1, 1, generator=generator, device=gen_device).to(x.device) < keep
    return x * mask.to(x.dtype) / keep


class EvalCell(nn.Module):
    """One discrete cell: node i = op_a(state a) + op_b(state b) for its two genotype edges."""

    def __init__(self, cell, concat, c_pp: int, c_p: int, c: int, *, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.pre0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0)
        self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0)
        self.inputs = [j for _, j in cell]
        self.concat = list(concat)
        # affine=True: evaluation networks learn their BN scale and shift (search networks do not).
        self.ops = nn.ModuleList(OPS[name](c, 2 if reduction and j < 2 else 1, True) for name, j in cell)
        self.multiplier = len(self.concat)
        # DARTS drops every op but the identity (dropping a skip connection would cut the path).
        self.droppable = [not isinstance(op, Identity) for op in self.ops]

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        first = states[0]  # the node's first op output, while its second is computed
        # One pass over the ops (edges 2n and 2n+1 feed node n + 2), the form TorchScript can unroll.
        for k, op in enumerate(self.ops):
            h = op(states[self.inputs[k]])
            if self.training and drop_prob > 0 and self.droppable[k]:
                h = drop_path(h, drop_prob, generator)
            if k % 2 == 0:
                first = h
            else:
                states.append(first + h)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """ReLU -> 5x5 average pool to 2x2 -> 1x1 conv (128) -> BN -> ReLU -> 2x2 conv (768) -> BN -> ReLU -> linear.

    DARTS pools the 8x8 CIFAR map with stride 3 and the 7x7 ImageNet map with stride 2: in both cases the
    5x5 window sits at the two ends of each axis and gives 2x2. The same rule (stride = side - 5) serves
    every side from 6 to 10; other sides are average pooled to 2x2 adaptively, so any input size works.
    """

    def __init__(self, c_in: int, num_classes: int):
        super().__init__()
        mid, out = AUX_CHANNELS
        self.conv1 = nn.Conv2d(c_in, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, out, 2, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.classifier = nn.Linear(out, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        h, w = x.shape[-2:]
        if 6 <= h <= 10 and 6 <= w <= 10:
            x = F.avg_pool2d(x, 5, stride=(h - 5, w - 5), count_include_pad=False)
        else:
            x = F.adaptive_avg_pool2d(x, 2)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.classifier(x.flatten(1))


class DartsNetwork(nn.Module):
    """The evaluation network of a DARTS genotype.

    ``forward(x)`` returns the logits; ``forward(x, return_aux=True)`` returns ``(logits, aux_logits)``
    where ``aux_logits`` is None unless the network has an auxiliary head and is in training mode.
    Set ``drop_path_prob`` (and optionally ``drop_path_generator``) before a training epoch.
    ``torch.jit.script`` compiles it (gradnas export); the scripted forward computes the same numbers.
    """

    def __init__(self, genotype: Genotype, *, cells: int, channels: int, num_classes: int, in_channels: int = 3,
                 auxiliary: bool = False, stem: str = "cifar", stem_multiplier: int = 3):
        super().__init__()
        if stem not in STEMS:
            raise GradnasError(f"unknown network stem {stem!r}; valid stems: {', '.join(STEMS)}")
        if cells < 3:
            raise GradnasError(f"network.cells must be >= 3 (two reduction cells and a normal one), got {cells}")
        if channels < 2 or channels % 2:
            raise GradnasError(f"network.channels must be an even number >= 2, got {channels}")
        # A genotype may name an op that this process never registered (register_op): say so, not KeyError.
        check_op_names(sorted({op for op, _ in genotype.normal + genotype.reduce}))
        self.genotype = genotype
        self.cells_count = cells
        self.stem_kind = stem
        self.drop_path_prob = 0.0
        self.drop_path_generator: torch.Generator | None = None
        c = channels
        if stem == "cifar":
            c_curr = stem_multiplier * c
            self.stem = nn.Sequential(nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
            self.stem1 = None
            c_pp = c_p = c_curr
            reduction_prev = False
        else:
            # DARTS's ImageNet stem: /4 in stem0, /2 more in stem1; cell 0 then sees a reduced previous input.
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, c // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c // 2),
                nn.ReLU(inplace=True),
                nn.Conv2d(c // 2, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c))
            self.stem1 = nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(c, c, 3, stride=2, padding=1, bias=False),
                                       nn.BatchNorm2d(c))
            c_pp = c_p = c
            reduction_prev = True
        self.reductions = (cells // 3, 2 * cells // 3)
        self.aux_position = 2 * cells // 3
        self.cells = nn.ModuleList()
        c_curr, c_aux = c, None
        for k in range(cells):
            reduction = k in self.reductions
            if reduction:
                c_curr *= 2
            cell_def, concat = (genotype.reduce, genotype.reduce_concat) if reduction else (
                genotype.normal, genotype.normal_concat)
            cell = EvalCell(cell_def, concat, c_pp, c_p, c_curr, reduction=reduction, reduction_prev=reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.multiplier * c_curr
            if k == self.aux_position:
                c_aux = c_p
        self.auxiliary_head = AuxiliaryHead(c_aux, num_classes) if auxiliary else None
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x: torch.Tensor, return_aux: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        s0 = self.stem(x)
        s1 = self.stem1(s0) if self.stem1 is not None else s0
        aux: torch.Tensor | None = None
        for k, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob, self.drop_path_generator)
            if k == self.aux_position and self.auxiliary_head is not None and self.training and return_aux:
                aux = self.auxiliary_head(s1)
        logits = self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))
        if return_aux:
            return logits, aux
        return logits

    def main_parameters(self) -> list:
        """Every parameter but the auxiliary head's: what the papers count as the model size."""
        aux = {id(p) for p in self.auxiliary_head.parameters()} if self.auxiliary_head is not None else set()
        return [p for p in self.parameters() if id(p) not in aux]


def count_params_m(model: nn.Module) -> float:
    """Parameters of a network in millions, the auxiliary head excluded when it has one."""
    params = model.main_parameters() if hasattr(model, "main_parameters") else list(model.parameters())
    return sum(p.numel() for p in params) / 1e6


def darts_params_m(genotype: Genotype, *, cells: int = 20, channels: int = 36, num_classes: int = 10,
                   in_channels: int = 3, stem: str = "cifar") -> float:
    """Parameters (M, auxiliary head excluded) of the evaluation network of ``genotype``; defaults: the
    CIFAR setting (20 cells, 36 channels, 10 classes). Built on the meta device, so no weight is allocated
    (about 0.1-0.25 s of CPU for 20 cells, all Python module construction), and remembered per genotype and
    shape, so a search that derives the same genotype epoch after epoch pays once."""
    # The op table's version is part of the key: a name re-registered with another factory counts anew.
    return _darts_params_m(genotype, cells, channels, num_classes, in_channels, stem, op_table_version())


@functools.lru_cache(maxsize=1024)
def _darts_params_m(genotype: Genotype, cells: int, channels: int, num_classes: int, in_channels: int, stem: str,
                    table_version: int) -> float:
    with torch.device("meta"):
        net = DartsNetwork(genotype, cells=cells, channels=channels, num_classes=num_classes,
                           in_channels=in_channels, auxiliary=False, stem=stem)
    return count_params_m(net)
