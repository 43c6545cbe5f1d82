"""Cell diagrams with Graphviz, in the style of the MiLeNAS supplementary Figure 1 (and DARTS Figs. 4-5).

The builtin spaces draw them so. DARTS: inputs c_{k-2} and c_{k-1} on the left, the intermediate nodes
numbered as in the genotype string, one arrow per kept edge labelled with its op, and every intermediate
node feeding the output c_{k}. NAS-Bench-201: nodes 0 (input) .. 3 (output), one arrow per edge labelled
with its op. Parameter-free ops are dashed (the single-level paper's "non-learnable" operations).

Each space draws its own cells (its plug-in's ``draw``, gradnas.space.base), with the helpers
:func:`digraph` and :func:`op_edge` here so every diagram looks alike. Reading genotypes is
gradnas.space.genotype's (every registered space's strings and JSON).
"""
from __future__ import annotations

import os
from pathlib import Path

from gradnas.errors import GradnasError
from gradnas.space.base import space_of
from gradnas.space.drawing import digraph, op_edge  # noqa: F401  (re-exported: the house style)
from gradnas.space.genotype import load_genotype

DOT_MISSING = ("the Graphviz program `dot` is needed to draw cells and was not found on PATH; install Graphviz "
               "(Debian/Ubuntu: `sudo apt-get install graphviz`; Fedora: `sudo dnf install graphviz`; macOS: "
               "`brew install graphviz`; conda: `conda install -c conda-forge graphviz`) and run again")


def read_genotype(source):
    """A genotype of any space from a string, a genotype JSON file or a run folder (its genotype.json)."""
    from gradnas.run import GENOTYPE_FILE
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


GRAPHVIZ_MISSING = ("the Python package `graphviz` is needed to draw cells and is not installed; install it with "
                    "`pip install 'gradnas[draw]'` (or `pip install graphviz`), plus Graphviz's `dot` program, and run "
                    "again")


def _graphviz():
    """The graphviz module (an optional dependency: the ``draw`` extra), or the GradnasError saying how to get it."""
    try:
        import graphviz
    except ModuleNotFoundError as exc:
        if exc.name != "graphviz":
            raise
        raise GradnasError(GRAPHVIZ_MISSING) from None
    return graphviz


def cell_graphs(genotype) -> dict:
    """{name: graphviz.Digraph} for every cell of the genotype, drawn by its space."""
    _graphviz()  # the spaces' drawings import it when they draw
    return space_of(genotype).draw(genotype)


def render(graph, path: Path) -> Path:
    """Write the graph as an image; the format follows the file suffix (.png, .svg, .pdf)."""
    graphviz = _graphviz()
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
