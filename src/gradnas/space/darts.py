"""The DARTS cell search space as a supernet (DARTS; MiLeNAS supplementary A.1).

A stem conv, then ``cells`` cells; the cells at 1/3 and 2/3 of the depth are reduction cells (stride 2,
channels doubled). Cell k reads the outputs of cells k-2 and k-1, preprocesses them to C channels, and
computes ``nodes`` intermediate nodes; node i sums one mixed edge from each earlier node. The cell output
concatenates the intermediate nodes. All normal cells share one alpha matrix, all reduction cells
another: alpha has one row per edge and one column per op.

The supernet computes exactly sum_k p_k o_k(x) on every edge; it only avoids repeated work:

* ``none`` contributes exactly zero and is never computed (its alpha still gets its softmax gradient);
* the ReLU that starts every conv op is applied once per node output, not once per op;
* pooling (+ its affine-free BN) depends only on the source node and the stride, which depends only on
  the source node, so it is computed once per source node and shared by all edges leaving it.

A sampling relaxation (gumbel) names the ops to compute per edge; the others are not run at all.

``stem: imagenet`` replaces the single stride-1 stem conv by the ImageNet search stem of the single-level
paper (section 4.2.2, after PC-DARTS): three stride-2 3x3 convs bring the input to 1/8 of its side before
the cells (224 -> 28); the first cell reads the 1/4 and 1/8 outputs, so it reduces its first input.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from gradnas.errors import GradnasError
from gradnas.relax import Relaxation
from gradnas.space.genotype import Genotype, derive_genotype
from gradnas.space.ops import (DARTS_OPS, OPS, SCALES_IN_BN, STARTS_WITH_RELU, FactorizedReduce, ReLUConvBN,
                               check_op_names, set_recompute)

POOLS = {"max_pool_3x3": "max", "avg_pool_3x3": "avg"}
STEMS = ("cifar", "imagenet")


@dataclass(frozen=True)
class DartsSpaceConfig:
    """Shape of the DARTS supernet. Defaults: the papers' search network (8 cells, 16 channels)."""

    cells: int = 8
    channels: int = 16
    nodes: int = 4
    ops: tuple = DARTS_OPS
    stem_multiplier: int = 3
    channels_last: bool = True  # memory format of activations and weights; ~1.5x faster convs on CPU
    stem: str = "cifar"          # cifar: one stride-1 conv; imagenet: three stride-2 convs (input / 8)
    # separable / dilated convs keep only their input for backward and recompute the rest (gradnas.space.ops
    # _ConvsBN): about half the activation memory, bitwise the same numbers, some time (false: store them)
    recompute: bool = True

    def __post_init__(self):
        object.__setattr__(self, "ops", tuple(self.ops))
        check_op_names(self.ops)
        if len(set(self.ops)) != len(self.ops):
            raise GradnasError(f"space.ops lists an op twice: {list(self.ops)}")
        if len([o for o in self.ops if o != "none"]) < 1:
            raise GradnasError("space.ops needs at least one op besides 'none'")
        if self.cells < 3:
            raise GradnasError(f"space.cells must be >= 3 (two reduction cells and a normal one), got {self.cells}")
        if self.nodes < 2:
            raise GradnasError(f"space.nodes must be >= 2 (each node keeps two inputs), got {self.nodes}")
        if self.channels < 2 or self.channels % 2:
            raise GradnasError(f"space.channels must be an even number >= 2, got {self.channels}")
        if self.stem not in STEMS:
            raise GradnasError(f"supernet.stem must be one of {', '.join(STEMS)}, got {self.stem!r}")

    @property
    def num_edges(self) -> int:
        return sum(i + 2 for i in range(self.nodes))

    def reduction_cells(self) -> tuple:
        return (self.cells // 3, 2 * self.cells // 3)


def edge_list(nodes: int) -> list:
    """(target node, source node) per edge in alpha-row order; nodes 0,1 are the cell inputs."""
    return [(i + 2, j) for i in range(nodes) for j in range(i + 2)]


class SearchCell(nn.Module):
    def __init__(self, cfg: DartsSpaceConfig, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.nodes = cfg.nodes
        self.ops = cfg.ops
        self.pre0 = FactorizedReduce(c_pp, c, affine=False) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, False)
        self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=False)
        # Weighted ops per edge, keyed "target_source"; pools and `none` are not per edge (see module doc).
        # Registered ops (register_op), parameter-free or not, are per edge: the supernet knows nothing of
        # them but the (C, stride, affine) factory and forward(x), so it computes p_k * o_k(x) like that.
        self.edges = nn.ModuleDict()
        for target, source in edge_list(cfg.nodes):
            stride = 2 if reduction and source < 2 else 1
            self.edges[f"{target}_{source}"] = nn.ModuleDict(
                {name: OPS[name](c, stride, False) for name in cfg.ops if name != "none" and name not in POOLS})
        # One affine-free BN per (source node, pool kind), as DARTS appends a BN to every pooling op.
        self.pool_bn = nn.ModuleDict({f"{j}_{POOLS[name]}": nn.BatchNorm2d(c, affine=False)
                                      for j in range(cfg.nodes + 1) for name in cfg.ops if name in POOLS})
        # column index of each op in an alpha row
        self.col = {name: k for k, name in enumerate(cfg.ops)}
        # Optional observer of every node (the two inputs, then each intermediate node), on_node(node index,
        # tensor); probes set it.
        self.on_node = None

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor, active=None) -> torch.Tensor:
        """``active``: per edge the op columns to compute (a sampling relaxation), None for all."""
        states = [self.pre0(s0), self.pre1(s1)]
        if self.on_node is not None:  # the cell's input nodes too (the exact grad_corr probe reads them)
            self.on_node(0, states[0])
            self.on_node(1, states[1])
        relu_cache: dict = {}
        pool_cache: dict = {}

        def relu(j):
            if j not in relu_cache:
                relu_cache[j] = F.relu(states[j])
            return relu_cache[j]

        def pool(j, name):
            key = (j, name)
            if key not in pool_cache:
                stride = 2 if self.reduction and j < 2 else 1
                x = states[j]
                kind = POOLS[name]
                y = F.max_pool2d(x, 3, stride, 1) if kind == "max" else F.avg_pool2d(x, 3, stride, 1,
                                                                                     count_include_pad=False)
                pool_cache[key] = self.pool_bn[f"{j}_{kind}"](y)
            return pool_cache[key]

        row = 0
        for i in range(self.nodes):
            target = i + 2
            node = None
            for j in range(target):
                w = weights[row]
                for name in (self.ops if active is None else [self.ops[k] for k in active[row]]):
                    if name == "none":
                        continue
                    wk = w[self.col[name]]
                    op = self.edges[f"{target}_{j}"][name] if name not in POOLS else None
                    if op is None:
                        term = pool(j, name) * wk
                    elif isinstance(op, SCALES_IN_BN):
                        term = op(relu(j), pre_activated=True, scale=wk)
                    elif isinstance(op, STARTS_WITH_RELU):
                        term = op(relu(j), pre_activated=True) * wk
                    else:
                        term = op(states[j]) * wk
                    # A running sum frees each term at once; plain adds keep nothing for backward.
                    node = term if node is None else node + term
                row += 1
            if node is None:  # every edge sampled `none`: the node is exactly zero
                stride = 2 if self.reduction else 1
                n, c, h, w_ = states[1].shape
                node = states[1].new_zeros(n, c, -(-h // stride), -(-w_ // stride))
            if self.on_node is not None:
                self.on_node(target, node)
            states.append(node)
        return torch.cat(states[2:], dim=1)


class DartsSupernet(nn.Module):
    """The DARTS search network. ``weight_parameters()`` and ``arch_parameters()`` split its parameters."""

    def __init__(self, cfg: DartsSpaceConfig, relaxation: Relaxation, *, in_channels: int, num_classes: int,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.cfg = cfg
        self.relaxation = relaxation
        c = cfg.channels
        if cfg.stem == "imagenet":
            # stem0: two stride-2 convs (1/4 of the side), stem1: a third (1/8); C channels each.
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, c // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c // 2),
                nn.ReLU(inplace=True),
                nn.Conv2d(c // 2, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c))
            self.stem1 = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, stride=2, padding=1, bias=False),
                                       nn.BatchNorm2d(c))
            c_pp, c_p = c, c
            reduction_prev = True  # the first cell's s0 is twice the size of its s1
        else:
            c_curr = cfg.stem_multiplier * c
            self.stem = nn.Sequential(nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(c_curr))
            self.stem1 = None
            c_pp, c_p = c_curr, c_curr
            reduction_prev = False
        c_curr = c
        self.cells = nn.ModuleList()
        for k in range(cfg.cells):
            reduction = k in cfg.reduction_cells()
            if reduction:
                c_curr *= 2
            self.cells.append(SearchCell(cfg, c_pp, c_p, c_curr, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, cfg.nodes * c_curr
        self.classifier = nn.Linear(c_p, num_classes)
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        n_edges, n_ops = cfg.num_edges, len(cfg.ops)
        self.alpha_normal = nn.Parameter(relaxation.init_alpha(n_edges, n_ops, generator))
        self.alpha_reduce = nn.Parameter(relaxation.init_alpha(n_edges, n_ops, generator))
        if cfg.channels_last:
            self.to(memory_format=torch.channels_last)
        set_recompute(self, cfg.recompute)

    # -- parameter split: the only place that decides what is a weight and what is an architecture parameter
    def arch_parameters(self) -> list:
        return [self.alpha_normal, self.alpha_reduce]

    def weight_parameters(self) -> list:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def op_weights(self) -> tuple:
        """(normal, reduce) relaxed op weights, differentiable w.r.t. alpha."""
        return self.relaxation.weights(self.alpha_normal), self.relaxation.weights(self.alpha_reduce)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        normal, reduce = (self.relaxation.forward_weights(a, training=self.training) for a in self.arch_parameters())
        s0 = s1 = self.stem(x)
        if self.stem1 is not None:
            s1 = self.stem1(s0)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, *(reduce if cell.reduction else normal))
        out = F.adaptive_avg_pool2d(s1, 1).flatten(1)
        logits = self.classifier(out)
        if normal[1] is not None:  # sampled ops: see NB201Supernet.forward
            logits = logits + 0.0 * (normal[0].sum() + reduce[0].sum())
        return logits

    @torch.no_grad()
    def genotype(self) -> Genotype:
        w_normal, w_reduce = (w.detach().cpu().tolist() for w in self.op_weights())
        return derive_genotype(w_normal, w_reduce, self.cfg.ops, self.cfg.nodes)

    @torch.no_grad()
    def edge_weights(self) -> dict:
        """Relaxed op weights per edge, for the metrics: {'normal': {'2<-0': {op: p}}, 'reduce': ...}."""
        out = {}
        for kind, w in zip(("normal", "reduce"), self.op_weights()):
            rows = w.detach().cpu().tolist()
            out[kind] = {f"{t}<-{s}": {op: round(p, 6) for op, p in zip(self.cfg.ops, r)}
                         for (t, s), r in zip(edge_list(self.cfg.nodes), rows)}
        return out
