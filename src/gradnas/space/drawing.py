"""The house style of cell diagrams (Graphviz), for the ``draw`` of each search space's plug-in. Graphviz is
imported only when a diagram is made."""
from __future__ import annotations

import gradnas.space.ops as op_table  # read at call time: the op table can be extended after import


def digraph(title: str):
    """An empty left-to-right diagram titled ``title`` in the house style, for a space's ``draw``."""
    import graphviz
    g = graphviz.Digraph(name=title, format="png")
    g.attr(rankdir="LR", label=title, labelloc="b", fontname="Helvetica", fontsize="18", dpi="110")
    g.attr("node", style="filled,rounded", shape="box", fontname="Helvetica", fontsize="16", height="0.45",
           penwidth="1.5")
    g.attr("edge", fontname="Helvetica", fontsize="13", penwidth="1.4", arrowsize="0.8")
    return g


def op_edge(g, source: str, target: str, op: str) -> None:
    """An arrow labelled with its op; parameter-free ops are dashed and grey."""
    free = op in op_table.PARAMETER_FREE_OPS
    g.edge(source, target, label=op, color="gray40" if free else "black", fontcolor="gray30" if free else "black",
           style="dashed" if free else "solid")
