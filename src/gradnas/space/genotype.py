"""Discrete cells: derivation from relaxed weights, one canonical string, JSON; one class per space.

:class:`Genotype` is a DARTS-space cell pair, :class:`NB201Genotype` a NAS-Bench-201 cell. Both carry
``space``, write ``to_string()`` / ``to_dict()``, and :func:`load_genotype` reads either back from a
string or a JSON file (dispatching on the file's ``space`` field).

DARTS space:

A cell with ``steps`` intermediate nodes numbers its nodes 0, 1 (the two inputs) and 2 .. steps+1.
Each intermediate node keeps two incoming edges ``(op, input node)``. The canonical string writes a
cell as node groups in the NAS-Bench-201 style, inputs sorted within a node, e.g.::

    normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|skip_connect~0|sep_conv_3x3~1|+...;reduce=|...|

so two genotypes are equal exactly when their strings are, and the string can key a table.

NAS-Bench-201: nodes 0 (the cell input) .. 3 (the output); node i reads every earlier node through one
op, written in the benchmark's own form ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``, which is also the key
of its accuracy table.

Nothing here is ever evaluated as code.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

from gradnas.errors import GradnasError
from gradnas.space.base import SPACES, space_of
from gradnas.space.ops import NB201_OPS, OPS, PARAMETER_FREE_OPS, check_op_name

FORMAT = "gradnas.genotype/1"

Cell = tuple  # tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Genotype:
    normal: Cell
    normal_concat: tuple
    reduce: Cell
    reduce_concat: tuple
    space: str = "darts"

    def __post_init__(self):
        # Canonical order: node by node, and within a node by (input, op).
        object.__setattr__(self, "normal", _canonical_cell(self.normal))
        object.__setattr__(self, "reduce", _canonical_cell(self.reduce))
        object.__setattr__(self, "normal_concat", tuple(int(i) for i in self.normal_concat))
        object.__setattr__(self, "reduce_concat", tuple(int(i) for i in self.reduce_concat))

    @property
    def steps(self) -> int:
        return len(self.normal) // 2

    def to_string(self) -> str:
        return f"normal={_cell_string(self.normal)};reduce={_cell_string(self.reduce)}"

    __str__ = to_string

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "space": self.space,
            "string": self.to_string(),
            "normal": [[op, j] for op, j in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, j] for op, j in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "genotype") -> "Genotype":
        if not isinstance(d, dict):
            raise GradnasError(f"{source}: expected a JSON object with 'normal' and 'reduce', got {type(d).__name__}")
        if d.get("format", FORMAT) != FORMAT:
            raise GradnasError(f"{source}: unknown genotype format {d.get('format')!r}; expected {FORMAT!r}")
        space = d.get("space", "darts")
        if space != "darts":
            raise GradnasError(f"{source}: genotype is for space {space!r}, this reader handles 'darts' genotypes")
        missing = [k for k in ("normal", "reduce") if k not in d]
        if missing:
            raise GradnasError(f"{source}: missing key(s) {missing}")
        cells = {k: _cell_from_json(d[k], f"{source}: '{k}'") for k in ("normal", "reduce")}
        steps = len(cells["normal"]) // 2
        concat = {}
        for k in ("normal_concat", "reduce_concat"):
            value = d.get(k, list(range(2, steps + 2)))
            if not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
                raise GradnasError(f"{source}: '{k}' must be a list of node indices, got {value!r}")
            concat[k] = value
        geno = cls(cells["normal"], concat["normal_concat"], cells["reduce"], concat["reduce_concat"])
        if "string" in d and d["string"] != geno.to_string():
            raise GradnasError(f"{source}: the 'string' field does not match the cells; the file was edited "
                               "inconsistently. Remove 'string' or fix the cells.")
        return geno

    @classmethod
    def from_string(cls, text: str) -> "Genotype":
        parts = dict(_split_once(p, "=", text) for p in text.strip().split(";"))
        if set(parts) != {"normal", "reduce"}:
            raise GradnasError(f"genotype string {text!r}: expected 'normal=|...|;reduce=|...|'")
        normal, reduce = (_parse_cell(parts[k], text) for k in ("normal", "reduce"))
        return cls(normal, range(2, len(normal) // 2 + 2), reduce, range(2, len(reduce) // 2 + 2))

    @classmethod
    def from_darts(cls, text: str) -> "Genotype":
        """Read the DARTS code's ``Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=range(2, 6), ...)``
        as data (gradnas.space.darts_form: same node numbering, nothing evaluated) and check it against the op
        table, so a published cell with an op gradnas lacks (or a partial concat) is refused here by name."""
        from gradnas.space.darts_form import parse_darts_form
        d = parse_darts_form(text)
        steps = len(d["normal"]) // 2
        concat = {k: d[k] if d[k] is not None else range(2, steps + 2) for k in ("normal_concat", "reduce_concat")}
        geno = cls(d["normal"], concat["normal_concat"], d["reduce"], concat["reduce_concat"])
        if len(geno.reduce) != len(geno.normal):
            raise GradnasError(f"DARTS genotype: the normal cell has {len(geno.normal) // 2} nodes, the reduction "
                               f"cell {len(geno.reduce) // 2}; gradnas cells of a pair have the same node count")
        return geno.validate(tuple(OPS), steps)

    def to_darts(self) -> str:
        """The DARTS code's form, ``Genotype(normal=[...], normal_concat=[2, 3, 4, 5], reduce=[...], ...)``."""
        from gradnas.space.darts_form import format_darts_form
        return format_darts_form(self.normal, self.normal_concat, self.reduce, self.reduce_concat)

    def validate(self, ops: Sequence[str], steps: int) -> "Genotype":
        """Raise a GradnasError if this genotype does not fit a DARTS space with these ops and steps."""
        for name, cell, concat in (("normal", self.normal, self.normal_concat),
                                   ("reduce", self.reduce, self.reduce_concat)):
            if len(cell) != 2 * steps:
                raise GradnasError(f"genotype {name} cell has {len(cell)} edges, the space has {steps} nodes x 2 "
                                   f"= {2 * steps}; set the space's node count to {len(cell) // 2} or use "
                                   "another genotype")
            for node in range(steps):
                pair = cell[2 * node: 2 * node + 2]
                for op, j in pair:
                    if op not in ops or op == "none":
                        valid = [o for o in ops if o != "none"]
                        # An op this process has not registered yet is the likely cause for a custom name.
                        hint = "" if op in OPS else " (a custom op must be registered with register_op first)"
                        raise GradnasError(f"genotype {name} cell, node {node + 2}: op {op!r} is not in the space; "
                                           f"valid ops: {', '.join(valid)}{hint}")
                    if not 0 <= j < node + 2:
                        raise GradnasError(f"genotype {name} cell, node {node + 2}: input {j} is out of range; "
                                           f"node {node + 2} may read nodes 0..{node + 1}")
                if pair[0][1] == pair[1][1]:
                    raise GradnasError(f"genotype {name} cell, node {node + 2}: both edges read node {pair[0][1]}; "
                                       "a node takes two distinct inputs")
            if sorted(concat) != list(range(2, steps + 2)):
                raise GradnasError(f"genotype {name}_concat {list(concat)} must list the intermediate nodes "
                                   f"{list(range(2, steps + 2))}")
        return self


def derive_cell(weights: Sequence[Sequence[float]], ops: Sequence[str], steps: int) -> Cell:
    """DARTS rule: per intermediate node, the two incoming edges whose strongest non-`none` op is strongest,
    each with that op. ``weights`` rows are the edges in supernet order (node 2's inputs 0,1; node 3's 0,1,2;
    ...). Ties go to the lower input / lower op index, as a stable sort does."""
    candidates = [k for k, name in enumerate(ops) if name != "none"]
    cell, row = [], 0
    for node in range(steps):
        n_in = node + 2
        rows = [list(map(float, weights[row + j])) for j in range(n_in)]
        strength = [max(r[k] for k in candidates) for r in rows]
        best_inputs = sorted(range(n_in), key=lambda j: -strength[j])[:2]
        for j in sorted(best_inputs):
            best_op = max(candidates, key=lambda k: (rows[j][k], -k))
            cell.append((ops[best_op], j))
        row += n_in
    return tuple(cell)


def derive_genotype(normal_weights, reduce_weights, ops: Sequence[str], steps: int) -> Genotype:
    concat = range(2, steps + 2)
    return Genotype(derive_cell(normal_weights, ops, steps), concat, derive_cell(reduce_weights, ops, steps), concat)


NB201_NODES = 4  # node 0 is the cell input, node 3 its output
NB201_FORM = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"


@dataclass(frozen=True)
class NB201Genotype:
    """A NAS-Bench-201 cell: ``nodes[i - 1]`` holds the (op, input) pairs of node i, inputs 0 .. i-1 in order.

    Every instance is a cell of the space (checked at construction), so its string is always a key of
    the benchmark table. ``none`` is a valid op here: the benchmark includes cells with zeroed edges.
    """

    nodes: tuple
    space: ClassVar[str] = "nb201"

    def __post_init__(self):
        try:
            nodes = tuple(tuple(sorted(((str(op), int(j)) for op, j in node), key=lambda e: e[1]))
                          for node in self.nodes)
        except (TypeError, ValueError):
            raise GradnasError(f"an NB-201 cell is a list of nodes of (op, input) pairs, got {self.nodes!r}") from None
        if len(nodes) != NB201_NODES - 1:
            raise GradnasError(f"an NB-201 cell has {NB201_NODES - 1} nodes after its input, got {len(nodes)}; "
                               f"expected {NB201_FORM}")
        for i, node in enumerate(nodes, start=1):
            if [j for _, j in node] != list(range(i)):
                raise GradnasError(f"NB-201 cell node {i} must read each of nodes 0..{i - 1} once, got inputs "
                                   f"{[j for _, j in node]}; expected {NB201_FORM}")
            for op, _ in node:
                if op not in NB201_OPS:
                    raise GradnasError(f"NB-201 cell node {i}: op {op!r} is not in the space; valid ops: "
                                       f"{', '.join(NB201_OPS)}")
        object.__setattr__(self, "nodes", nodes)

    def edges(self) -> list:
        """((target, source), op) per edge, in alpha-row order (1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2)."""
        return [((i, j), op) for i, node in enumerate(self.nodes, start=1) for op, j in node]

    def to_string(self) -> str:
        return "+".join("|" + "|".join(f"{op}~{j}" for op, j in node) + "|" for node in self.nodes)

    __str__ = to_string

    def to_dict(self) -> dict:
        return {"format": FORMAT, "space": self.space, "string": self.to_string(),
                "nodes": [[[op, j] for op, j in node] for node in self.nodes]}

    @classmethod
    def from_string(cls, text: str) -> "NB201Genotype":
        """Parse the benchmark's string form, e.g. ``|nor_conv_3x3~0|+|skip_connect~0|none~1|+|...|``."""
        text = str(text).strip()
        nodes = []
        for part in text.split("+"):
            if not (len(part) >= 2 and part.startswith("|") and part.endswith("|")):
                raise GradnasError(f"{text!r} is not an NB-201 cell string: node {part!r} must look like "
                                   f"|op~0|op~1|; expected {NB201_FORM}")
            node = []
            for item in part[1:-1].split("|"):
                op, _, j = item.partition("~")
                if not j.isdigit():
                    raise GradnasError(f"{text!r} is not an NB-201 cell string: edge {item!r} must look like "
                                       f"op~input; expected {NB201_FORM}")
                node.append((op, int(j)))
            nodes.append(tuple(node))
        return cls(tuple(nodes))

    @classmethod
    def from_weights(cls, weights: Sequence[Sequence[float]], ops: Sequence[str] = NB201_OPS) -> "NB201Genotype":
        """Derivation (NAS-Bench-201): the strongest op of every edge, ``none`` included; ties go to the lower
        op index. ``weights`` rows are the edges in alpha-row order (see :meth:`edges`)."""
        rows = [list(map(float, r)) for r in weights]
        if len(rows) != NB201_NODES * (NB201_NODES - 1) // 2:
            raise GradnasError(f"NB-201 derivation needs 6 edge rows, got {len(rows)}")
        best = [ops[max(range(len(r)), key=lambda k: (r[k], -k))] for r in rows]
        it = iter(best)
        return cls(tuple(tuple((next(it), j) for j in range(i)) for i in range(1, NB201_NODES)))

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "genotype") -> "NB201Genotype":
        if "nodes" not in d and "string" not in d:
            raise GradnasError(f"{source}: a genotype of space 'nb201' needs 'nodes' (or 'string'), found keys "
                               f"{sorted(d)}")
        if "nodes" in d:
            value = d["nodes"]
            ok = isinstance(value, list) and all(
                isinstance(n, list) and all(isinstance(e, list) and len(e) == 2 and isinstance(e[0], str)
                                            and isinstance(e[1], int) and not isinstance(e[1], bool) for e in n)
                for n in value)
            if not ok:
                raise GradnasError(f"{source}: 'nodes' must be a list of nodes, each a list of [op name, input] "
                                   "pairs")
            geno = cls(tuple(tuple((op, j) for op, j in n) for n in value))
            if "string" in d and d["string"] != geno.to_string():
                raise GradnasError(f"{source}: the 'string' field does not match 'nodes'; the file was edited "
                                   "inconsistently. Remove 'string' or fix 'nodes'.")
            return geno
        if not isinstance(d["string"], str):
            raise GradnasError(f"{source}: 'string' must be a string like {NB201_FORM}")
        return cls.from_string(d["string"])


def chosen_ops(genotype) -> list:
    """Every op the discrete cell(s) use, one per kept edge (DARTS both cells, 2 x 2 per node; NB-201 the
    6 edges), as the genotype's space lists them."""
    return space_of(genotype).chosen_ops(genotype)


SHARE_CELLS = ("normal", "all")


def non_learnable_share(genotype, cells: str = "all") -> float:
    """The share of parameter-free ops (PARAMETER_FREE_OPS: none, pooling, skip_connect and ops registered
    with parameter_free=True, a live view) among the genotype's chosen ops: the single-level paper's collapse
    indicator (section 4.1.4: decrease the weight lr above ~0.3).

    ``cells``: ``all`` counts every op of the genotype (DARTS: both cells); ``normal`` counts the normal cell
    only, in a space whose genotype has one (DARTS; the collapse the paper describes is the normal cell's,
    a reduction cell of pooling ops is usual: DARTS_V2 is 0.25 normal, 0.625 both). A space with one cell
    (NB-201) counts that cell either way."""
    if cells not in SHARE_CELLS:
        raise GradnasError(f"non_learnable_share: cells must be one of {', '.join(SHARE_CELLS)}, got {cells!r}")
    normal = getattr(genotype, "normal", None) if cells == "normal" else None
    ops = [op for op, _ in normal] if normal is not None else chosen_ops(genotype)
    return sum(op in PARAMETER_FREE_OPS for op in ops) / len(ops)


def genotype_from_dict(d, *, source: str = "genotype"):
    """A genotype of any registered space from its JSON object (``space`` picks the space's reader; absent
    means darts)."""
    if not isinstance(d, dict):
        raise GradnasError(f"{source}: expected a JSON object with a genotype, got {type(d).__name__}")
    if d.get("format", FORMAT) != FORMAT:
        raise GradnasError(f"{source}: unknown genotype format {d.get('format')!r}; expected {FORMAT!r}")
    space = d.get("space", "darts")
    if not isinstance(space, str) or space not in SPACES:
        raise GradnasError(f"{source}: genotype of unknown space {space!r}; valid spaces: {', '.join(SPACES)}")
    return SPACES[space].genotype_from_dict(d, source=source)


def save_genotype(genotype, path: str | os.PathLike) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(genotype.to_dict(), indent=2) + "\n")
    os.replace(tmp, path)


def named_genotypes() -> dict:
    """{name: genotype} of the published cells (gradnas.space.published), built once (a copy each call)."""
    if not _NAMED:
        from gradnas.space.published import PUBLISHED
        _NAMED.update((name, load_genotype(entry.text)) for name, entry in PUBLISHED.items())
    return dict(_NAMED)


_NAMED: dict = {}


def is_genotype_name(text) -> bool:
    """True when ``text`` is the name of a published cell (gradnas.genotypes.named())."""
    from gradnas.space.published import PUBLISHED
    return str(text).strip() in PUBLISHED


def looks_like_genotype(text) -> bool:
    """True when ``text`` is written as a genotype (a registered space's string form, malformed or not, or a
    published cell's name), so that it is never taken for a path."""
    text = str(text)
    for space in SPACES.values():
        try:
            if space.parse_genotype(text) is not None:
                return True
        except GradnasError:  # of this space's form, but malformed: still not a path
            return True
    return is_genotype_name(text) or text.lstrip().startswith("{")


def load_genotype(source: str | os.PathLike):
    """A genotype of any registered space from a string (DARTS ``normal=|...|;reduce=|...|`` or the DARTS code's
    ``Genotype(normal=[...], ...)``, NB-201 ``|op~0|+|...|``; each space recognises its own forms), the name of
    a published cell (``DARTS_V2``; gradnas.genotypes.named()), a genotype file's JSON (text starting with
    ``{``) or a JSON file. Parsed as data, never evaluated; a string written as a genotype is never taken for
    a path."""
    text = str(source)
    for space in SPACES.values():
        genotype = space.parse_genotype(text)
        if genotype is not None:
            return genotype
    if is_genotype_name(text):
        return named_genotypes()[text.strip()]
    if text.lstrip().startswith("{"):  # a genotype file's JSON, pasted
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GradnasError(f"genotype {_short(text)!r} looks like JSON but is not valid JSON ({exc})") from None
        return genotype_from_dict(data, source="genotype JSON")
    path = Path(text)
    try:
        is_file = path.is_file()
    except OSError:  # e.g. longer than a file name may be: not a file, and not a disk problem
        is_file = False
    if not is_file:
        forms = " or ".join(space.string_form for space in SPACES.values())
        raise GradnasError(f"genotype {_short(text)!r} is neither a file nor a genotype string ({forms}) nor the "
                           f"name of a published cell ({_name_hint(text)})")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
        raise GradnasError(f"genotype file {path} is not valid JSON ({exc}); write it with `gradnas search` or "
                           "Genotype.to_dict()") from None
    return genotype_from_dict(data, source=str(path))


def _short(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _name_hint(text: str) -> str:
    import difflib
    from gradnas.space.published import PUBLISHED
    close = difflib.get_close_matches(text.strip(), list(PUBLISHED), n=3)
    if close:
        return "did you mean " + ", ".join(close) + "?"
    return "e.g. DARTS_V2; `gradnas genotype --list` lists them"


# ---- helpers -----------------------------------------------------------------------------------

def _canonical_cell(cell) -> Cell:
    # Every op name must survive the string form (no | ~ + ; =), whichever way the cell was made.
    edges = [(check_op_name(str(op)), int(j)) for op, j in cell]
    if len(edges) % 2:
        raise GradnasError(f"a cell needs two edges per node, got {len(edges)} edges")
    out = []
    for i in range(0, len(edges), 2):
        out.extend(sorted(edges[i:i + 2], key=lambda e: (e[1], e[0])))
    return tuple(out)


def _cell_string(cell: Cell) -> str:
    nodes = ["|" + "|".join(f"{op}~{j}" for op, j in cell[i:i + 2]) + "|" for i in range(0, len(cell), 2)]
    return "+".join(nodes)


def _split_once(part: str, sep: str, text: str):
    if sep not in part:
        raise GradnasError(f"genotype string {text!r}: expected 'normal=|...|;reduce=|...|'")
    key, value = part.split(sep, 1)
    return key.strip(), value.strip()


def _parse_cell(cell_text: str, text: str) -> Cell:
    edges = []
    for node in cell_text.split("+"):
        node = node.strip()
        if not (node.startswith("|") and node.endswith("|")):
            raise GradnasError(f"genotype string {text!r}: node {node!r} must look like |op~i|op~j|")
        for item in node.strip("|").split("|"):
            op, _, j = item.partition("~")
            if not j.isdigit():
                raise GradnasError(f"genotype string {text!r}: edge {item!r} must look like op~input")
            edges.append((op, int(j)))
        if len(node.strip("|").split("|")) != 2:
            raise GradnasError(f"genotype string {text!r}: node {node!r} must have exactly two edges")
    return tuple(edges)


def _cell_from_json(value, where: str) -> Cell:
    if not isinstance(value, list):
        raise GradnasError(f"{where} must be a list of [op, input] pairs")
    edges = []
    for e in value:
        if not (isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) and isinstance(e[1], int)
                and not isinstance(e[1], bool)):
            raise GradnasError(f"{where}: edge {e!r} must be [op name, input node index]")
        edges.append((e[0], e[1]))
    return tuple(edges)
