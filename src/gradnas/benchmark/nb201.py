"""NAS-Bench-201 lookup: the 200-epoch test accuracy of every cell of the space, shipped with gradnas.

``nb201-test-accuracy.csv.gz`` (next to this file) is the table of all 15,625 NAS-Bench-201 cells with their
200-epoch test accuracy (%) on CIFAR-10, CIFAR-100 and ImageNet16-120, as given by the NATS-Bench topology
API (public repository v-tao/nats-bench-landscape, file nats_bench.csv; sha256 below). It matches the
published tables: best test accuracy 94.37 (CIFAR-10), 73.51 (CIFAR-100), 47.31 (ImageNet16-120); the
all-skip_connect cell 54.30 / 15.61 / 16.32. Columns: CIFAR10TestAccuracy200Epochs,
CIFAR100TestAccuracy200Epochs, ImageNetTestAccuracy200Epochs, ArchitectureString, UniqueString.
"""
from __future__ import annotations

import bisect
import csv
import gzip
import io
from functools import lru_cache
from pathlib import Path

from gradnas.errors import GradnasError
from gradnas.space.genotype import NB201Genotype

TABLE = Path(__file__).with_name("nb201-test-accuracy.csv.gz")
SHA256 = "dc7af2acf43c500ebd5d014fb8e4cd7d1aa8e63a103239bd8ee66b2fea43bdd3"
# Our dataset names -> the table's columns, in the order they are reported.
COLUMNS = {
    "cifar10": "CIFAR10TestAccuracy200Epochs",
    "cifar100": "CIFAR100TestAccuracy200Epochs",
    "imagenet16-120": "ImageNetTestAccuracy200Epochs",
}
NUM_CELLS = 5 ** 6


@lru_cache(maxsize=1)
def load_table() -> dict:
    """{arch string: {"cifar10": acc, "cifar100": acc, "imagenet16-120": acc}} for all 15,625 cells (read once)."""
    try:
        with gzip.open(TABLE, "rb") as f:
            rows = list(csv.DictReader(io.TextIOWrapper(f, encoding="utf-8")))
    except (OSError, EOFError, csv.Error) as exc:
        raise GradnasError(f"the NAS-Bench-201 table {TABLE} is missing or damaged ({exc}); reinstall gradnas") from None
    table = {row["ArchitectureString"]: {name: float(row[col]) for name, col in COLUMNS.items()} for row in rows}
    if len(table) != NUM_CELLS:
        raise GradnasError(f"the NAS-Bench-201 table {TABLE} has {len(table)} cells, expected {NUM_CELLS}; "
                           "reinstall gradnas")
    return table


def lookup(cell) -> dict:
    """Test accuracy (%) after 200 epochs of an NB-201 cell (an NB201Genotype or its string):
    {"cifar10": .., "cifar100": .., "imagenet16-120": ..}. A cell outside the space is a GradnasError."""
    if isinstance(cell, str):
        cell = NB201Genotype.from_string(cell)
    if not isinstance(cell, NB201Genotype):
        space = getattr(cell, "space", type(cell).__name__)
        raise GradnasError(f"NAS-Bench-201 covers only cells of the nb201 space, not a {space!r} genotype")
    key = cell.to_string()
    try:
        return dict(load_table()[key])
    except KeyError:  # pragma: no cover - every NB201Genotype is one of the 15,625 cells
        raise GradnasError(f"cell {key} is not in the NAS-Bench-201 table") from None


@lru_cache(maxsize=1)
def _sorted_columns() -> dict:
    """{dataset: every cell's accuracy, sorted high to low}."""
    table = load_table()
    return {name: sorted((row[name] for row in table.values()), reverse=True) for name in COLUMNS}


def rank(cell) -> dict:
    """The cell's rank among all 15,625 on each dataset by 200-epoch test accuracy (1 = best):
    {dataset: {"rank": r, "of": 15625, "tied": k}}, where r is 1 + the number of cells with a strictly higher
    accuracy (cells with equal accuracy share the rank) and k the number of *other* cells with the same accuracy."""
    figures = lookup(cell)
    out = {}
    for name, column in _sorted_columns().items():
        acc = figures[name]
        higher = bisect.bisect_left([-v for v in column], -acc)  # column is descending
        equal = bisect.bisect_right([-v for v in column], -acc) - higher
        out[name] = {"rank": higher + 1, "of": len(column), "tied": equal - 1}
    return out
