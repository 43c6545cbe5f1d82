"""Tabular benchmarks: the known accuracy of a cell, looked up instead of trained. One per space that has one."""
from __future__ import annotations

from gradnas.benchmark import nb201

# space -> (metrics key, lookup(genotype) -> {dataset: test accuracy %})
BENCHMARKS = {"nb201": ("nb201", nb201.lookup)}


def benchmark_for(space: str):
    """(metrics key, lookup) of the space's benchmark, or None if it has none."""
    return BENCHMARKS.get(space)


def format_benchmark(figures: dict) -> str:
    """'cifar10 94.37  cifar100 73.51  imagenet16-120 47.31'."""
    return "  ".join(f"{name} {acc:.2f}" for name, acc in figures.items())
