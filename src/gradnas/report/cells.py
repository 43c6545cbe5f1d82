"""Cell diagrams with Graphviz, in the style of the MiLeNAS supplementary Figure 1 (and DARTS Figs. 4-5).

DARTS: inputs c_{k-2} and c_{k-1} on the left, the intermediate nodes numbered as in the genotype string,
one arrow per kept edge labelled with its op, and every intermediate node feeding the output c_{k}.
NAS-Bench-201: nodes 0 (input) .. 3 (output), one arrow per edge labelled with its op.
Parameter-free ops are dashed (the single-level paper's "non-learnable" operations).

A search space plugs its genotype type in with one registration, ``register_drawer(space)``: a function
from a genotype to named ``graphviz.Digraph`` objects, keyed by the genotype's ``space``. Reading
genotypes is gradnas.space.genotype's (every space's strings and JSON).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from gradnas.errors import GradnasError
from gradnas.space.genotype import Genotype, NB201Genotype, load_genotype
from gradnas.space.ops import PARAMETER_FREE_OPS

DOT_MISSING = ("the Graphviz program `dot` is needed to draw cells and was not found on PATH; install Graphviz "
               "(Debian/Ubuntu: `sudo apt-get install graphviz`; Fedora: `sudo dnf install graphviz`; macOS: "
               "`brew install graphviz`; conda: `conda install -c conda-forge graphviz`) and run again")

# space -> genotype -> {diagram name: graphviz.Digraph}
DRAWERS: dict[str, Callable] = {}


def register_drawer(space: str):
    def wrap(fn):
        DRAWERS[space] = fn
        return fn
    return wrap


def read_genotype(source):
    """A genotype of any space from a string, a genotype JSON file or a run folder (its genotype.json)."""
    from gradnas.search.loop import GENOTYPE_FILE
    text = str(source).strip()
    try:
        is_dir = Path(text).is_dir()
    except OSError:  # a genotype string longer than a file name may be
        is_dir = False
    if is_dir:
        path = Path(text) / GENOTYPE_FILE
        if not path.is_file():
            raise GradnasError(f"{text} has no {GENOTYPE_FILE}; it is not a run folder with a finished epoch")
        text = str(path)
    return load_genotype(text)


def cell_graphs(genotype) -> dict:
    """{name: graphviz.Digraph} for every cell of the genotype, by its space's drawer."""
    space = getattr(genotype, "space", None)
    if space not in DRAWERS:
        raise GradnasError(f"no cell drawer for space {space!r}; spaces with one: {', '.join(sorted(DRAWERS))}")
    return DRAWERS[space](genotype)


@register_drawer("darts")
def darts_cells(genotype: Genotype) -> dict:
    return {"normal": _darts_cell(genotype.normal, genotype.normal_concat, "normal cell"),
            "reduce": _darts_cell(genotype.reduce, genotype.reduce_concat, "reduction cell")}


def _digraph(title: str):
    import graphviz
    g = graphviz.Digraph(name=title, format="png")
    g.attr(rankdir="LR", label=title, labelloc="b", fontname="Helvetica", fontsize="18", dpi="110")
    g.attr("node", style="filled,rounded", shape="box", fontname="Helvetica", fontsize="16", height="0.45",
           penwidth="1.5")
    g.attr("edge", fontname="Helvetica", fontsize="13", penwidth="1.4", arrowsize="0.8")
    return g


def _op_edge(g, source: str, target: str, op: str) -> None:
    free = op in PARAMETER_FREE_OPS
    g.edge(source, target, label=op, color="gray40" if free else "black", fontcolor="gray30" if free else "black",
           style="dashed" if free else "solid")


def _darts_cell(cell, concat, title: str):
    g = _digraph(title)
    names = {0: "c_{k-2}", 1: "c_{k-1}"}
    for j in (0, 1):
        g.node(names[j], label=f"<c<sub>{names[j][3:-1]}</sub>>", fillcolor="darkseagreen2")
    steps = len(cell) // 2
    for i in range(steps):
        names[i + 2] = str(i + 2)
        g.node(names[i + 2], fillcolor="lightblue")
    for i in range(steps):
        for op, j in cell[2 * i: 2 * i + 2]:
            _op_edge(g, names[j], names[i + 2], op)
    g.node("c_{k}", label="<c<sub>k</sub>>", fillcolor="palegoldenrod")
    for i in concat:
        g.edge(names[i], "c_{k}", color="gray60")
    return g


@register_drawer("nb201")
def nb201_cell(genotype: NB201Genotype) -> dict:
    """The one NAS-Bench-201 cell; `none` edges (the benchmark's zeroed edges) are left out, as they carry
    nothing, and listed in the title so the cell stays readable and complete."""
    zeroed = [f"{i}<-{j}" for (i, j), op in genotype.edges() if op == "none"]
    g = _digraph("cell" + (f" (none: {', '.join(zeroed)})" if zeroed else ""))
    last = len(genotype.nodes)
    for i in range(last + 1):  # numbered as in the string (op~i reads node i)
        label = f"{i}: input" if i == 0 else f"{i}: output" if i == last else str(i)
        g.node(str(i), label=label,
               fillcolor="darkseagreen2" if i == 0 else "palegoldenrod" if i == last else "lightblue")
    for (i, j), op in genotype.edges():
        if op != "none":
            _op_edge(g, str(j), str(i), op)
    return {"nb201": g}


def render(graph, path: Path) -> Path:
    """Write the graph as an image; the format follows the file suffix (.png, .svg, .pdf)."""
    import graphviz
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    try:
        data = graph.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise GradnasError(DOT_MISSING) from None
    except graphviz.CalledProcessError as exc:
        raise GradnasError(f"Graphviz `dot` failed to draw {path.name}: {exc}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def draw_genotype(genotype, out_dir, *, fmt: str = "png", prefix: str = "cell") -> list:
    """Render every cell of the genotype to ``out_dir/<prefix>-<name>.<fmt>``; returns the paths."""
    return [render(graph, Path(out_dir) / f"{prefix}-{name}.{fmt}") for name, graph in cell_graphs(genotype).items()]
