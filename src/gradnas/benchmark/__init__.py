"""Tabular benchmarks: the known accuracy of a cell, looked up instead of trained. A space that has one
names it as its plug-in's ``benchmark`` (gradnas.space.base.Benchmark: key, lookup)."""
from __future__ import annotations

from gradnas.space.base import get_space


def benchmark_for(space: str):
    """The space's Benchmark, a (metrics key, lookup(genotype) -> {dataset: test accuracy %}) tuple, or None
    if it has none; an unknown space is a GradnasError."""
    return get_space(space).benchmark


def format_benchmark(figures: dict) -> str:
    """'cifar10 94.37  cifar100 73.51  imagenet16-120 47.31'."""
    return "  ".join(f"{name} {acc:.2f}" for name, acc in figures.items())
