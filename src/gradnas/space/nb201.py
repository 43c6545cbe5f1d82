"""The NAS-Bench-201 search space (Dong & Yang 2020; single-level paper section 4.1): supernet and discrete network.

Skeleton (the benchmark's): a 3x3 conv stem with C channels + BN; three stages of N cells with C, 2C
and 4C channels, separated by residual reduction blocks (stride 2, channels doubled); BN + ReLU, global
average pooling, a linear classifier. N = 5, C = 16 in the benchmark.

Cell: nodes 0 (the cell input) .. 3 (the output); node i sums one edge from every earlier node, 6 edges
in all, each one of none / skip_connect / nor_conv_1x1 / nor_conv_3x3 / avg_pool_3x3 (nor_conv =
ReLU-Conv-BN; the pool has no BN, unlike DARTS's). Every cell of the supernet shares one alpha matrix
(6 edges x 5 ops); derivation takes the argmax op of each edge (``none`` included).

The supernet computes exactly sum_k p_k o_k(x) on every edge, avoiding repeated work as the DARTS one
does: ``none`` is never computed, the ReLU that starts both convs is applied once per node, and the
parameter-free ops (skip, pool) are computed once per source node and shared by the edges leaving it.
A sampling relaxation (gumbel) names the ops to compute per edge; the others are not run at all.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from gradnas.errors import GradnasError
from gradnas.relax import Relaxation
from gradnas.space.genotype import NB201_NODES, NB201Genotype
from gradnas.space.ops import NB201_OPS, OPS, PARAMETER_FREE_OPS, SCALES_IN_BN, STARTS_WITH_RELU, ResNetBlock


def nb201_edges() -> list:
    """(target, source) per edge in alpha-row order: 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2 (the string's order)."""
    return [(i, j) for i in range(1, NB201_NODES) for j in range(i)]


@dataclass(frozen=True)
class NB201SpaceConfig:
    """Shape of the NAS-Bench-201 network. Defaults: the benchmark's (N = 5 cells per stage, C = 16).
    The op list and the cell (4 nodes) are fixed: they define the benchmark."""

    cells_per_stage: int = 5
    channels: int = 16
    channels_last: bool = True  # memory format of activations and weights; faster convs on CPU

    def __post_init__(self):
        if self.cells_per_stage < 1:
            raise GradnasError(f"nb201.cells_per_stage must be >= 1, got {self.cells_per_stage}")
        if self.channels < 1:
            raise GradnasError(f"nb201.channels must be >= 1, got {self.channels}")

    @property
    def ops(self) -> tuple:
        return NB201_OPS

    @property
    def num_edges(self) -> int:
        return len(nb201_edges())


def _skeleton(make_cell, *, channels: int, cells_per_stage: int, in_channels: int, num_classes: int):
    """(stem, layers, lastact, classifier) of the benchmark's macro network; ``make_cell(c)`` builds one cell."""
    c = channels
    stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
    layers = nn.ModuleList()
    for stage in range(3):
        if stage > 0:
            layers.append(ResNetBlock(c, 2 * c, stride=2))
            c *= 2
        layers.extend(make_cell(c) for _ in range(cells_per_stage))
    lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU())
    return stem, layers, lastact, nn.Linear(c, num_classes)


class NB201SearchCell(nn.Module):
    """The mixed cell: weighted ops on every edge; parameter-free ops shared per source node."""

    def __init__(self, c: int, ops=NB201_OPS):
        super().__init__()
        self.ops = tuple(ops)
        self.col = {name: k for k, name in enumerate(self.ops)}
        # Ops with weights get a module per edge, keyed "target_source"; parameter-free ones (skip, pool)
        # one shared module, computed once per source node.
        self.edges = nn.ModuleDict({
            f"{i}_{j}": nn.ModuleDict({name: OPS[name](c, 1, False) for name in self.ops
                                       if name not in PARAMETER_FREE_OPS})
            for i, j in nb201_edges()})
        self.shared = nn.ModuleDict({name: OPS[name](c, 1, False) for name in self.ops
                                     if name in PARAMETER_FREE_OPS and name != "none"})
        # Optional observer of every node (the input, then the others), on_node(node index, tensor); probes set it.
        self.on_node = None

    def forward(self, x: torch.Tensor, weights: torch.Tensor, active=None) -> torch.Tensor:
        """``weights``: (6, ops) op weights; ``active``: per edge the op columns to compute, None for all."""
        states = [x]
        if self.on_node is not None:  # the input node too (the exact grad_corr probe reads it)
            self.on_node(0, x)
        relu_cache: dict = {}
        shared_cache: dict = {}
        row = 0
        for i in range(1, NB201_NODES):
            node = None
            for j in range(i):
                w = weights[row]
                for name in (self.ops if active is None else [self.ops[k] for k in active[row]]):
                    if name == "none":
                        continue
                    wk = w[self.col[name]]
                    if name in self.shared:
                        if (j, name) not in shared_cache:
                            shared_cache[j, name] = self.shared[name](states[j])
                        term = shared_cache[j, name] * wk
                    else:
                        op = self.edges[f"{i}_{j}"][name]
                        if isinstance(op, STARTS_WITH_RELU):
                            if j not in relu_cache:
                                relu_cache[j] = F.relu(states[j])
                            term = (op(relu_cache[j], pre_activated=True, scale=wk) if isinstance(op, SCALES_IN_BN)
                                    else op(relu_cache[j], pre_activated=True) * wk)
                        else:
                            term = op(states[j]) * wk
                    # A running sum frees each term at once; plain adds keep nothing for backward.
                    node = term if node is None else node + term
                row += 1
            node = torch.zeros_like(x) if node is None else node  # all `none`: exactly zero
            if self.on_node is not None:
                self.on_node(i, node)
            states.append(node)
        return states[-1]


class NB201Supernet(nn.Module):
    """The NAS-Bench-201 search network. ``weight_parameters()`` and ``arch_parameters()`` split its parameters."""

    def __init__(self, cfg: NB201SpaceConfig, relaxation: Relaxation, *, in_channels: int, num_classes: int,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.cfg = cfg
        self.relaxation = relaxation
        self.stem, self.layers, self.lastact, self.classifier = _skeleton(
            NB201SearchCell, channels=cfg.channels, cells_per_stage=cfg.cells_per_stage, in_channels=in_channels,
            num_classes=num_classes)
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        self.alpha = nn.Parameter(relaxation.init_alpha(cfg.num_edges, len(cfg.ops), generator))
        if cfg.channels_last:
            self.to(memory_format=torch.channels_last)

    # -- parameter split: the only place that decides what is a weight and what is an architecture parameter
    def arch_parameters(self) -> list:
        return [self.alpha]

    def weight_parameters(self) -> list:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def op_weights(self) -> torch.Tensor:
        """(6, 5) relaxed op weights, differentiable w.r.t. alpha."""
        return self.relaxation.weights(self.alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        weights, active = self.relaxation.forward_weights(self.alpha, training=self.training)
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x, weights, active) if isinstance(layer, NB201SearchCell) else layer(x)
        logits = self.classifier(F.adaptive_avg_pool2d(self.lastact(x), 1).flatten(1))
        if active is not None:
            # A sample can cut alpha off the output (all inputs of node 3 `none`: a zero cell). Its gradient is
            # then exactly zero; this term (value 0) keeps alpha in the graph so every method gets that zero
            # rather than no gradient at all.
            logits = logits + 0.0 * weights.sum()
        return logits

    @torch.no_grad()
    def genotype(self) -> NB201Genotype:
        return NB201Genotype.from_weights(self.op_weights().detach().cpu().tolist(), self.cfg.ops)

    @torch.no_grad()
    def edge_weights(self) -> dict:
        """Relaxed op weights per edge, for the metrics: {'cell': {'1<-0': {op: p}, ...}}."""
        rows = self.op_weights().detach().cpu().tolist()
        return {"cell": {f"{t}<-{s}": {op: round(p, 6) for op, p in zip(self.cfg.ops, r)}
                         for (t, s), r in zip(nb201_edges(), rows)}}


class NB201Cell(nn.Module):
    """A discrete NAS-Bench-201 cell: one op per edge (affine BN), ``none`` edges left out."""

    def __init__(self, genotype: NB201Genotype, c: int):
        super().__init__()
        kept = [(i, j, op) for (i, j), op in genotype.edges() if op != "none"]  # target ascending, then source
        self.edges = nn.ModuleDict({f"{i}_{j}": OPS[op](c, 1, True) for i, j, op in kept})
        self.targets = [i for i, _, _ in kept]
        self.sources = [j for _, j, _ in kept]
        self.nodes = NB201_NODES

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One pass over the kept edges (the form TorchScript can unroll): node i is the sum of its edges'
        # outputs in source order, or zeros when every edge into it is `none`.
        states = [x]
        node, started = x, False  # the sum so far of the current target's edges (when started)
        for k, op in enumerate(self.edges.values()):
            while len(states) < self.targets[k]:  # every edge into the nodes before this target is done
                states.append(node if started else torch.zeros_like(x))
                started = False
            h = op(states[self.sources[k]])
            node = node + h if started else h
            started = True
        while len(states) < self.nodes:
            states.append(node if started else torch.zeros_like(x))
            started = False
        return states[-1]


class NB201Network(nn.Module):
    """The network NAS-Bench-201 trains for a cell: the benchmark's skeleton with fixed cells."""

    def __init__(self, genotype: NB201Genotype, *, C: int, N: int, in_channels: int, num_classes: int):
        super().__init__()
        self.genotype = genotype
        self.stem, self.layers, self.lastact, self.classifier = _skeleton(
            lambda c: NB201Cell(genotype, c), channels=C, cells_per_stage=N, in_channels=in_channels,
            num_classes=num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        return self.classifier(F.adaptive_avg_pool2d(self.lastact(x), 1).flatten(1))


def build_nb201_network(genotype, *, C: int = 16, N: int = 5, in_channels: int = 3,
                        num_classes: int = 10) -> NB201Network:
    """The discrete NAS-Bench-201 network of ``genotype`` (an NB201Genotype or its string), C initial channels
    and N cells per stage; the benchmark trains it with C = 16, N = 5."""
    if isinstance(genotype, str):
        genotype = NB201Genotype.from_string(genotype)
    if not isinstance(genotype, NB201Genotype):
        space = getattr(genotype, "space", type(genotype).__name__)
        raise GradnasError(f"build_nb201_network needs an NB-201 genotype, got one of space {space!r}")
    if C < 1 or N < 1:
        raise GradnasError(f"build_nb201_network: C and N must be >= 1, got C={C}, N={N}")
    return NB201Network(genotype, C=C, N=N, in_channels=in_channels, num_classes=num_classes)
