"""Genotypes in users' hands: the published cells by name, and the three written forms of a genotype.

``named()`` is the table of published cells (DARTS_V1, DARTS_V2, PDARTS and the MiLeNAS repository's cells,
``MILENAS_<name>``), each with its source; a name works wherever a genotype is read (``--genotype DARTS_V2``,
``load_genotype("DARTS_V2")``, ``gradnas.load_network("DARTS_V2")``). A genotype is written three ways, and
:func:`convert` turns any of them into any other (``load_genotype`` reads all three):

* ``gradnas``: the canonical string, ``normal=|sep_conv_3x3~0|sep_conv_3x3~1|+...;reduce=|...|`` (NB-201
  cells: ``|op~0|+|op~0|op~1|+|...|``);
* ``darts``: the DARTS code's ``Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], ...)``
  (DARTS space only; read as data, gradnas.space.darts_form);
* ``json``: the genotype file gradnas writes (``genotype.json``).
"""
from __future__ import annotations

import json
from typing import NamedTuple

from gradnas.errors import GradnasError
from gradnas.space.genotype import (Genotype, NB201Genotype, genotype_from_dict, load_genotype, named_genotypes,
                                    save_genotype)

__all__ = ["FORMS", "NamedGenotype", "named", "get", "to_form", "convert", "Genotype", "NB201Genotype",
           "load_genotype", "save_genotype", "genotype_from_dict"]

FORMS = ("gradnas", "darts", "json")


class NamedGenotype(NamedTuple):
    genotype: object  # a Genotype (DARTS space)
    source: str       # the paper and the file the cell was published in


def named() -> dict:
    """{name: NamedGenotype(genotype, source)} of every published cell gradnas knows, in table order."""
    from gradnas.space.published import PUBLISHED
    cells = named_genotypes()
    return {name: NamedGenotype(cells[name], entry.source) for name, entry in PUBLISHED.items()}


def get(name: str):
    """The published cell called ``name`` (a GradnasError naming close names when there is none)."""
    table = named()
    if name not in table:
        import difflib
        close = difflib.get_close_matches(str(name), list(table), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(list(table)[:3])}, ..."
        raise GradnasError(f"no published cell is called {name!r}; {hint} (gradnas.genotypes.named() lists them)")
    return table[name].genotype


def to_form(genotype, form: str) -> str:
    """``genotype`` written in ``form`` (one of :data:`FORMS`)."""
    if form not in FORMS:
        raise GradnasError(f"unknown genotype form {form!r}; valid forms: {', '.join(FORMS)}")
    if form == "gradnas":
        return genotype.to_string()
    if form == "json":
        return json.dumps(genotype.to_dict(), indent=2)
    if not isinstance(genotype, Genotype):
        raise GradnasError(f"the DARTS Genotype(...) form holds DARTS-space cell pairs; this is a cell of the "
                           f"{getattr(genotype, 'space', '?')!r} space (write it as gradnas or json)")
    return genotype.to_darts()


def convert(source, to: str) -> str:
    """Any genotype source (a string of any form, JSON text, a name or a JSON file) written in the form ``to``."""
    return to_form(load_genotype(source), to)
