"""Continuous relaxations: how architecture parameters alpha become per-op weights on an edge.

A relaxation owns three decisions: the initial alpha, the map alpha -> op weights, and the alpha
weight decay it is meant to be used with. Register a new one with ``@register_relaxation``; the
supernet calls nothing but :meth:`Relaxation.weights`.
"""
from __future__ import annotations

import math

import torch

from gradnas.errors import GradnasError

RELAXATIONS: dict[str, type["Relaxation"]] = {}


def register_relaxation(cls):
    RELAXATIONS[cls.name] = cls
    return cls


class Relaxation:
    name = "base"
    #: alpha weight decay used when the config leaves it unset
    default_arch_weight_decay = 0.0

    def init_alpha(self, num_edges: int, num_ops: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def weights(self, alpha: torch.Tensor) -> torch.Tensor:
        """(edges, ops) alpha -> (edges, ops) op weights, differentiable."""
        raise NotImplementedError


@register_relaxation
class Softmax(Relaxation):
    """DARTS / MiLeNAS eq. 9: p = softmax(alpha) per edge; alpha ~ 1e-3 N(0, 1)."""

    name = "softmax"
    default_arch_weight_decay = 1e-3

    def init_alpha(self, num_edges, num_ops, generator):
        return 1e-3 * torch.randn(num_edges, num_ops, generator=generator)

    def weights(self, alpha):
        return torch.softmax(alpha, dim=-1)


@register_relaxation
class Sigmoid(Relaxation):
    """Single-level paper, section 3.3 / 4.2: p = sigmoid(alpha), ops do not compete for a unit budget.

    alpha starts at -ln(n - 1) so every op starts at weight 1/n, as softmax would; the paper uses no alpha
    weight decay with sigmoid ("to avoid extra gradients on zero-op").
    """

    name = "sigmoid"
    default_arch_weight_decay = 0.0

    def init_alpha(self, num_edges, num_ops, generator):
        if num_ops < 2:
            raise GradnasError("the sigmoid relaxation needs at least 2 ops per edge")
        return torch.full((num_edges, num_ops), -math.log(num_ops - 1))

    def weights(self, alpha):
        return torch.sigmoid(alpha)


def make_relaxation(name: str) -> Relaxation:
    try:
        return RELAXATIONS[name]()
    except KeyError:
        raise GradnasError(f"unknown relaxation {name!r}; valid: {', '.join(sorted(RELAXATIONS))}") from None
