"""The DARTS reference code's genotype form, read and written as data.

The DARTS code (and MiLeNAS, P-DARTS and most DARTS-space papers after it) prints a cell pair as::

    Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ...], normal_concat=range(2, 6),
             reduce=[('max_pool_3x3', 0), ...], reduce_concat=[2, 3, 4, 5])

Its node numbering is gradnas's: inputs 0 and 1 are the outputs of the two previous cells (c_{k-2},
c_{k-1}), intermediate node i (from 2) reads edges 2(i-2) and 2(i-2)+1 of the list, and the concat lists
the nodes whose outputs are concatenated. So the conversion changes no index; gradnas only sorts the two
edges of a node by (input, op) (its canonical order; a node sums its two edges, so the network is the same).

The text is parsed into a syntax tree and only literals are read from it (``ast.literal_eval`` on the
list parts, ``range(a, b)`` recognised by its shape): nothing in it is ever evaluated as code, so a
crafted string is refused as malformed data.
"""
from __future__ import annotations

import ast
import re

from gradnas.errors import GradnasError

DARTS_FORM = ("Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=range(2, 6), reduce=[...], "
              "reduce_concat=[2, 3, 4, 5])")
FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")
# ``Genotype(`` opens the form; a pasted ``NAME = Genotype(...)`` line keeps its assignment, which is dropped.
_START = re.compile(r"\s*(?:[A-Za-z_][A-Za-z0-9_]*\s*=\s*)?Genotype\s*\(")
_ASSIGNMENT = re.compile(r"\s*[A-Za-z_][A-Za-z0-9_]*\s*=\s*(?=Genotype\s*\()")


def is_darts_form(text: str) -> bool:
    """True when ``text`` is written in the DARTS form (it may still be malformed)."""
    return _START.match(str(text)) is not None


def parse_darts_form(text: str) -> dict:
    """{normal, normal_concat, reduce, reduce_concat} of a DARTS-form genotype: cells as lists of
    (op, input) pairs, concats as lists of ints (``range(2, 6)`` -> [2, 3, 4, 5]; an absent concat is None).
    A GradnasError names what is malformed."""
    body = _ASSIGNMENT.sub("", str(text), count=1).strip()
    try:
        tree = ast.parse(body, mode="eval")
    except SyntaxError as exc:
        raise _error(text, f"it is not well formed ({exc.msg}, column {exc.offset})") from None
    call = tree.body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Genotype"):
        raise _error(text, "it must be one Genotype(...) with nothing after it")
    if len(call.args) > len(FIELDS) or any(isinstance(a, ast.Starred) for a in call.args):
        raise _error(text, f"Genotype takes at most {len(FIELDS)} fields ({', '.join(FIELDS)})")
    fields = dict(zip(FIELDS, call.args))
    for kw in call.keywords:
        if kw.arg not in FIELDS:
            raise _error(text, f"unknown field {kw.arg or '**'!r}; the fields are {', '.join(FIELDS)}")
        if kw.arg in fields:
            raise _error(text, f"field {kw.arg!r} is given twice")
        fields[kw.arg] = kw.value
    missing = [k for k in ("normal", "reduce") if k not in fields]
    if missing:
        raise _error(text, f"field(s) {', '.join(missing)} missing")
    out = {k: _cell(text, k, fields[k]) for k in ("normal", "reduce")}
    for k in ("normal_concat", "reduce_concat"):
        out[k] = _concat(text, k, fields[k]) if k in fields else None
    return out


def format_darts_form(normal, normal_concat, reduce, reduce_concat) -> str:
    """The DARTS form of a cell pair (concats as lists, as DARTS_V2 is published)."""
    def cell(edges):
        return "[" + ", ".join(f"('{op}', {j})" for op, j in edges) + "]"

    def concat(nodes):
        return "[" + ", ".join(str(int(i)) for i in nodes) + "]"
    return (f"Genotype(normal={cell(normal)}, normal_concat={concat(normal_concat)}, reduce={cell(reduce)}, "
            f"reduce_concat={concat(reduce_concat)})")


# ---- helpers -----------------------------------------------------------------------------------

def _short(text: str, limit: int = 70) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _error(text: str, problem: str) -> GradnasError:
    return GradnasError(f"DARTS genotype {_short(text)!r}: {problem}; expected {DARTS_FORM} (read as data, "
                        "never run)")


def _literal(text: str, field: str, node):
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise _error(text, f"{field} must be written as literals, not {_short(ast.unparse(node), 40)!r}") from None


def _cell(text: str, field: str, node) -> list:
    value = _literal(text, field, node)
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(e, tuple) and len(e) == 2 and isinstance(e[0], str) and isinstance(e[1], int)
        and not isinstance(e[1], bool) for e in value)
    if not ok:
        raise _error(text, f"{field} must be a list of ('op', input) pairs")
    return [(op, j) for op, j in value]


def _concat(text: str, field: str, node) -> list:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
        args = [_literal(text, field, a) for a in node.args]
        if node.keywords or not 1 <= len(args) <= 3 or not all(
                isinstance(a, int) and not isinstance(a, bool) for a in args):
            raise _error(text, f"{field}: range takes one to three integers, e.g. range(2, 6)")
        return list(range(*args))
    value = _literal(text, field, node)
    if not (isinstance(value, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool) for i in value)):
        raise _error(text, f"{field} must be a list of node indices or range(a, b)")
    return list(value)
