"""Cell diagrams with Graphviz, in the style of the MiLeNAS supplementary Figure 1 (and DARTS Figs. 4-5).

Inputs c_{k-2} and c_{k-1} on the left, the intermediate nodes numbered as in the genotype string, one
arrow per kept edge labelled with its op, and every intermediate node feeding the output c_{k}.

A search space plugs in its own genotype type with two registrations: a reader (``register_reader``)
that recognises its strings / JSON, and a drawer (``register_drawer``) that turns a genotype into named
``graphviz.Digraph`` objects. Both are keyed by the genotype's ``space`` name.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from gradnas.errors import GradnasError
from gradnas.space.genotype import Genotype, load_genotype
from gradnas.space.ops import PARAMETER_FREE_OPS

DOT_MISSING = ("the Graphviz program `dot` is needed to draw cells and was not found on PATH; install Graphviz "
               "(Debian/Ubuntu: `sudo apt-get install graphviz`; Fedora: `sudo dnf install graphviz`; macOS: "
               "`brew install graphviz`; conda: `conda install -c conda-forge graphviz`) and run again")

# space -> (claims(text or JSON dict) -> bool, load(text or path) -> genotype)
READERS: dict[str, tuple[Callable, Callable]] = {}
# space -> genotype -> {diagram name: graphviz.Digraph}
DRAWERS: dict[str, Callable] = {}


def register_reader(space: str, claims: Callable, load: Callable) -> None:
    READERS[space] = (claims, load)


def register_drawer(space: str):
    def wrap(fn):
        DRAWERS[space] = fn
        return fn
    return wrap


def read_genotype(source) -> object:
    """A genotype from a canonical string, a genotype JSON file or a run folder (its genotype.json)."""
    from gradnas.search.loop import GENOTYPE_FILE
    text = str(source).strip()
    for claims, load in READERS.values():  # a string first: it may be too long to be a file name
        if claims(text):
            return load(text)
    path = Path(text)
    if path.is_dir():
        path = path / GENOTYPE_FILE
        if not path.is_file():
            raise GradnasError(f"{source} has no {GENOTYPE_FILE}; it is not a run folder with a finished epoch")
    known = ", ".join(sorted(READERS))
    if not path.is_file():
        raise GradnasError(f"{text!r} is neither a file, a run folder nor a genotype string of a known space "
                           f"({known}); a DARTS genotype reads 'normal=|op~0|op~1|+...;reduce=|...|'")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise GradnasError(f"genotype file {path} is not valid JSON; write it with `gradnas search` or "
                           "`gradnas genotype --json`") from None
    for claims, load in READERS.values():
        if claims(data):
            return load(str(path))
    raise GradnasError(f"{path} is not a genotype file of a known space ({known})")


def _darts_claims(probe) -> bool:
    if isinstance(probe, str):
        return probe.startswith("normal=")
    return isinstance(probe, dict) and probe.get("space", "darts") == "darts" and "normal" in probe


register_reader("darts", _darts_claims, load_genotype)


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


def _darts_cell(cell, concat, title: str):
    import graphviz
    g = graphviz.Digraph(name=title, format="png")
    g.attr(rankdir="LR", label=title, labelloc="b", fontname="Helvetica", fontsize="18", dpi="110")
    g.attr("node", style="filled,rounded", shape="box", fontname="Helvetica", fontsize="16", height="0.45",
           penwidth="1.5")
    g.attr("edge", fontname="Helvetica", fontsize="13", penwidth="1.4", arrowsize="0.8")
    names = {0: "c_{k-2}", 1: "c_{k-1}"}
    for j in (0, 1):
        g.node(names[j], label=f"<c<sub>{names[j][3:-1]}</sub>>", fillcolor="darkseagreen2")
    steps = len(cell) // 2
    for i in range(steps):
        names[i + 2] = str(i + 2)
        g.node(names[i + 2], fillcolor="lightblue")
    for i in range(steps):
        for op, j in cell[2 * i: 2 * i + 2]:
            # parameter-free ops dashed: the single-level paper's "non-learnable" operations
            free = op in PARAMETER_FREE_OPS
            g.edge(names[j], names[i + 2], label=op, color="gray40" if free else "black",
                   fontcolor="gray30" if free else "black", style="dashed" if free else "solid")
    g.node("c_{k}", label="<c<sub>k</sub>>", fillcolor="palegoldenrod")
    for i in concat:
        g.edge(names[i], "c_{k}", color="gray60")
    return g


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
