"""The NAS-Bench-201 space as a plug-in (gradnas.space.base): everything gradnas asks of the nb201 space.

Supernet and discrete network are gradnas.space.nb201's, the genotype gradnas.space.genotype's
:class:`NB201Genotype` (one cell, no searched reduction cell), the benchmark gradnas.benchmark.nb201's.
"""
from __future__ import annotations

import functools

import torch

import gradnas.space.ops as op_table  # read at call time: the op table can be extended after import
from gradnas.errors import GradnasError
from gradnas.space.base import Benchmark, SearchSpace, SupernetCells, register_space
from gradnas.space.darts_network import count_params_m
from gradnas.space.genotype import NB201_FORM, NB201Genotype
from gradnas.space.nb201 import NB201SearchCell, NB201SpaceConfig, NB201Supernet, build_nb201_network, nb201_edges


def _lookup(genotype) -> dict:
    # Imported here: gradnas.benchmark.nb201 imports gradnas.space.genotype, which registers this space.
    from gradnas.benchmark.nb201 import lookup
    return lookup(genotype)


@functools.lru_cache(maxsize=1024)
def _eval_params_m(genotype: NB201Genotype) -> float:
    with torch.device("meta"):  # shapes only, no weight is allocated
        net = build_nb201_network(genotype, C=16, N=5, in_channels=3, num_classes=10)
    return count_params_m(net)


class NB201Space(SearchSpace):
    name = "nb201"
    section = "nb201"
    config_class = NB201SpaceConfig
    genotype_class = NB201Genotype
    supernet_class = NB201Supernet
    shape_keys = {"cells": "cells_per_stage", "channels": "channels"}
    string_form = f"NB-201 '{NB201_FORM}'"
    params_note = ("the NAS-Bench-201 network of the cell (the benchmark's skeleton) with the search's channels C "
                   "and cells per stage N; at C = 16, N = 5 it is the network the benchmark trained")
    benchmark = Benchmark("nb201", _lookup)

    def searched_cells(self, model) -> SupernetCells:
        cells = [m for m in model.layers if isinstance(m, NB201SearchCell)]
        return SupernetCells(cells=cells, kinds=["cell"] * len(cells),
                             weight_arg=1,  # cell(x, weights, active)
                             edges=nb201_edges())

    # -- genotypes
    def parse_genotype(self, text: str):
        text = str(text)
        return NB201Genotype.from_string(text) if text.lstrip().startswith("|") else None

    def check_fit(self, genotype, space_cfg):
        return genotype  # checked against the (fixed) cell when built; the config does not change the cell

    def chosen_ops(self, genotype) -> list:
        return [op for _, op in genotype.edges()]

    def conv_counts(self, genotype) -> tuple:
        # the reduction blocks are fixed residual blocks, not searched: R = 0
        return sum(op in op_table.CONV_OPS for _, op in genotype.edges()), 0

    def check_stop_size(self, size, space_cfg) -> tuple:
        size = tuple(size)
        if not 1 <= len(size) <= 2 or (len(size) == 2 and size[1] != 0):
            raise GradnasError(f"config: stop.at_size {list(size)}: an NB-201 cell has no searched reduction "
                               "cell; give N alone or N,0")
        edges = len(nb201_edges())
        if size[0] > edges:
            raise GradnasError(f"config: stop.at_size {size[0]}: an NB-201 cell has {edges} edges, so at most "
                               f"{edges} convs")
        return size[0], 0

    def eval_params_m(self, genotype) -> float:
        # the benchmark's network in the CIFAR-10 setting: N = 5, C = 16, 10 classes (1.53 for all-3x3)
        return _eval_params_m(genotype)

    def search_width_params(self, genotype, space_cfg, *, in_channels: int, num_classes: int) -> int:
        with torch.device("meta"):  # shapes only: nothing is allocated or initialised for real
            net = build_nb201_network(genotype, C=space_cfg.channels, N=space_cfg.cells_per_stage,
                                      in_channels=in_channels, num_classes=num_classes)
        return sum(p.numel() for p in net.parameters())

    def draw(self, genotype) -> dict:
        """The one cell; `none` edges (the benchmark's zeroed edges) are left out, as they carry nothing,
        and listed in the title so the cell stays readable and complete."""
        from gradnas.space.drawing import digraph, op_edge  # graphviz is needed only to draw
        zeroed = [f"{i}<-{j}" for (i, j), op in genotype.edges() if op == "none"]
        g = digraph("cell" + (f" (none: {', '.join(zeroed)})" if zeroed else ""))
        last = len(genotype.nodes)
        for i in range(last + 1):  # numbered as in the string (op~i reads node i)
            label = f"{i}: input" if i == 0 else f"{i}: output" if i == last else str(i)
            g.node(str(i), label=label,
                   fillcolor="darkseagreen2" if i == 0 else "palegoldenrod" if i == last else "lightblue")
        for (i, j), op in genotype.edges():
            if op != "none":
                op_edge(g, str(j), str(i), op)
        return {"nb201": g}

    # -- the evaluation network
    def build_network(self, genotype, net_cfg, *, in_channels: int, num_classes: int):
        if net_cfg.stem != "cifar":
            raise GradnasError(f"NAS-Bench-201 networks have one stem (a 3x3 conv, network.stem: cifar), not "
                               f"{net_cfg.stem!r}")
        # network.cells is N, the cells per stage (3 stages), as the benchmark counts them
        return build_nb201_network(genotype, C=net_cfg.channels, N=net_cfg.cells, in_channels=in_channels,
                                   num_classes=num_classes)


NB201 = register_space(NB201Space())
