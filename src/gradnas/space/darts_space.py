"""The DARTS cell space as a plug-in (gradnas.space.base): everything gradnas asks of the darts space.

The supernet is gradnas.space.darts's, the evaluation network gradnas.space.darts_network's and the
genotype gradnas.space.genotype's :class:`Genotype` (a normal and a reduction cell).
"""
from __future__ import annotations

import torch

import gradnas.space.ops as op_table  # read at call time: the op table can be extended after import
from gradnas.errors import GradnasError
from gradnas.space.base import SearchSpace, SupernetCells, register_space
from gradnas.space.darts import DartsSpaceConfig, DartsSupernet, edge_list
from gradnas.space.darts_form import is_darts_form
from gradnas.space.darts_network import DartsNetwork, darts_params_m
from gradnas.space.genotype import Genotype


class DartsSpace(SearchSpace):
    name = "darts"
    section = "supernet"
    config_class = DartsSpaceConfig
    genotype_class = Genotype
    supernet_class = DartsSupernet
    shape_keys = {"cells": "cells", "channels": "channels"}
    string_form = "DARTS 'normal=|...|;reduce=|...|' or 'Genotype(normal=[...], ...)'"
    params_note = ("the genotype's cells in the search network (its cells, channels, stem and classifier; "
                   "affine-free BatchNorm, no auxiliary head), counted from the supernet's modules; not the size "
                   "of the evaluation network that `gradnas train` builds and reports as params_m")

    def searched_cells(self, model) -> SupernetCells:
        cells = list(model.cells)
        return SupernetCells(cells=cells, kinds=["reduce" if c.reduction else "normal" for c in cells],
                             weight_arg=2,  # cell(s0, s1, weights, active)
                             edges=edge_list(model.cfg.nodes))

    # -- genotypes
    def parse_genotype(self, text: str):
        text = str(text)
        if is_darts_form(text):  # the DARTS code's Genotype(normal=[...], ...), as data
            return Genotype.from_darts(text)
        return Genotype.from_string(text) if text.lstrip().startswith("normal=") else None

    def check_fit(self, genotype, space_cfg):
        return genotype.validate(space_cfg.ops, space_cfg.nodes)

    def chosen_ops(self, genotype) -> list:
        return [op for op, _ in genotype.normal] + [op for op, _ in genotype.reduce]

    def conv_counts(self, genotype) -> tuple:
        conv = op_table.CONV_OPS
        return sum(op in conv for op, _ in genotype.normal), sum(op in conv for op, _ in genotype.reduce)

    def check_stop_size(self, size, space_cfg) -> tuple:
        size = tuple(size)
        if len(size) != 2:
            raise GradnasError(f"config: stop.at_size {list(size)}: give N,R, the conv ops in the normal and in the "
                               "reduction cell (e.g. 6,0)")
        most = 2 * space_cfg.nodes if any(op in op_table.CONV_OPS for op in space_cfg.ops) else 0
        if max(size) > most:
            raise GradnasError(f"config: stop.at_size {size[0]},{size[1]}: a cell of this space has at most {most} "
                               f"conv ops ({space_cfg.nodes} nodes x 2 edges), so the rule could never fire")
        return size

    def eval_params_m(self, genotype) -> float:
        # the CIFAR-10 setting of the papers: 20 cells, 36 channels, auxiliary head excluded (DARTS_V2: 3.35)
        return darts_params_m(genotype)

    def search_width_params(self, genotype, space_cfg, *, in_channels: int, num_classes: int) -> int:
        # There is no search-width discrete network, so count the supernet's modules of the kept ops.
        from gradnas.relax import make_relaxation
        with torch.device("meta"):  # shapes only: nothing is allocated or initialised for real
            model = self.build_supernet(space_cfg, make_relaxation("softmax"), in_channels=in_channels,
                                        num_classes=num_classes, generator=torch.Generator().manual_seed(0))
        total = _numel(model.stem) + _numel(model.classifier)
        for cell in model.cells:
            total += _numel(cell.pre0) + _numel(cell.pre1)
            kept = genotype.reduce if cell.reduction else genotype.normal
            for k, (op, source) in enumerate(kept):
                ops = cell.edges[f"{k // 2 + 2}_{source}"]
                if op in ops:  # pools, `none` and stride-1 skip have no module with weights
                    total += _numel(ops[op])
        return total

    def draw(self, genotype) -> dict:
        return {"normal": _draw_cell(genotype.normal, genotype.normal_concat, "normal cell"),
                "reduce": _draw_cell(genotype.reduce, genotype.reduce_concat, "reduction cell")}

    # -- the evaluation network
    def build_network(self, genotype, net_cfg, *, in_channels: int, num_classes: int):
        genotype.validate(tuple(op_table.OPS), genotype.steps)  # any op of the table; the node count is the genotype's
        return DartsNetwork(genotype, cells=net_cfg.cells, channels=net_cfg.channels, num_classes=num_classes,
                            in_channels=in_channels, auxiliary=net_cfg.auxiliary_weight > 0, stem=net_cfg.stem)


def _numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _draw_cell(cell, concat, title: str):
    """Inputs c_{k-2} and c_{k-1} on the left, the intermediate nodes numbered as in the genotype string,
    one arrow per kept edge labelled with its op, every intermediate node feeding the output c_{k}."""
    from gradnas.space.drawing import digraph, op_edge  # graphviz is needed only to draw
    g = digraph(title)
    names = {0: "c_{k-2}", 1: "c_{k-1}"}
    for j in (0, 1):
        g.node(names[j], label=f"<c<sub>{names[j][3:-1]}</sub>>", fillcolor="darkseagreen2")
    steps = len(cell) // 2
    for i in range(steps):
        names[i + 2] = str(i + 2)
        g.node(names[i + 2], fillcolor="lightblue")
    for i in range(steps):
        for op, j in cell[2 * i: 2 * i + 2]:
            op_edge(g, names[j], names[i + 2], op)
    g.node("c_{k}", label="<c<sub>k</sub>>", fillcolor="palegoldenrod")
    for i in concat:
        g.edge(names[i], "c_{k}", color="gray60")
    return g


DARTS = register_space(DartsSpace())
