"""Search spaces, by name: each is one registered plug-in object (gradnas.space.base.SearchSpace) that
builds its supernet (weight_parameters(), arch_parameters(), genotype(), edge_weights()), reads and checks
its genotypes (to_string(), to_dict()), builds the evaluation network ``gradnas train`` trains, and
answers the size, drawing and benchmark questions. The functions here take a space's name and delegate.

Importing this package registers the builtin spaces (darts, nb201); a new one calls ``register_space``.
"""
from __future__ import annotations

import torch

from gradnas.errors import GradnasError
from gradnas.relax import Relaxation, make_relaxation
from gradnas.space.base import (SPACES, Benchmark, SearchSpace, SupernetCells, get_space, register_space, space_of,
                                space_of_model)
# The builtin spaces register themselves on import.
from gradnas.space import darts_space, nb201_space  # noqa: E402,F401  (imported for their registration)
from gradnas.space.darts_network import DartsNetwork, darts_params_m


def space_class(space: str):
    """The supernet class of a named space (a GradnasError for an unknown name)."""
    return get_space(space).supernet_class


def check_genotype(genotype, space: str, cfg):
    """``genotype`` if it is a cell of ``space`` configured by ``cfg``; a clear error otherwise."""
    return get_space(space).check_genotype(genotype, cfg)


def build_supernet(space: str, space_cfg, relax: str | Relaxation, *, in_channels: int, num_classes: int,
                   seed: int = 0):
    """The supernet of a named space with its config and relaxation (a name, or a built Relaxation);
    alpha is initialised from its own generator seeded with `seed`."""
    spec = get_space(space)
    if not isinstance(space_cfg, spec.config_class):
        raise GradnasError(f"space {space!r} is configured by {spec.config_class.__name__}, got "
                           f"{type(space_cfg).__name__}")
    relaxation = make_relaxation(relax) if isinstance(relax, str) else relax
    torch.manual_seed(seed)  # weight initialisation
    generator = torch.Generator().manual_seed(seed)
    return spec.build_supernet(space_cfg, relaxation, in_channels=in_channels, num_classes=num_classes,
                               generator=generator)


def build_network(genotype, net_cfg, *, in_channels: int, num_classes: int):
    """The evaluation network of ``genotype``, built by its space and shaped by ``net_cfg`` (a train
    NetworkConfig: cells, channels, stem, auxiliary_weight, drop_path)."""
    return space_of(genotype).build_network(genotype, net_cfg, in_channels=in_channels, num_classes=num_classes)


__all__ = ["SPACES", "SearchSpace", "SupernetCells", "Benchmark", "register_space", "get_space", "space_of",
           "space_of_model", "space_class", "check_genotype", "build_supernet", "build_network", "darts_params_m",
           "DartsNetwork"]
