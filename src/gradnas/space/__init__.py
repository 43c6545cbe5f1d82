"""Search spaces, by name. Each builds a supernet exposing weight_parameters(), arch_parameters(),
genotype() and edge_weights(); its genotype writes to_string() and to_dict(); and each builds the
evaluation network of one of its genotypes, trained from scratch by ``gradnas train``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from gradnas.errors import GradnasError
from gradnas.relax import Relaxation, make_relaxation
from gradnas.space.darts import DartsSpaceConfig, DartsSupernet
from gradnas.space.darts_network import DartsNetwork, darts_params_m
from gradnas.space.nb201 import NB201SpaceConfig, NB201Supernet, build_nb201_network
from gradnas.space.ops import OPS


@dataclass(frozen=True)
class Space:
    supernet: type
    config: type         # the frozen config class of the supernet's shape
    section: str         # the SearchConfig section holding that config
    check: Callable      # (genotype, config) -> genotype, raising a GradnasError if it does not fit
    # (genotype, train NetworkConfig, in_channels=, num_classes=) -> the evaluation network; its forward(x)
    # returns logits (and takes return_aux=True if it has an auxiliary head)
    network: Callable


def _darts_network(genotype, net, *, in_channels: int, num_classes: int):
    genotype.validate(tuple(OPS), genotype.steps)  # any op of the table; the node count is the genotype's
    return DartsNetwork(genotype, cells=net.cells, channels=net.channels, num_classes=num_classes,
                        in_channels=in_channels, auxiliary=net.auxiliary_weight > 0, stem=net.stem)


def _nb201_network(genotype, net, *, in_channels: int, num_classes: int):
    if net.stem != "cifar":
        raise GradnasError(f"NAS-Bench-201 networks have one stem (a 3x3 conv, network.stem: cifar), not "
                           f"{net.stem!r}")
    # network.cells is N, the cells per stage (3 stages), as the benchmark counts them
    return build_nb201_network(genotype, C=net.channels, N=net.cells, in_channels=in_channels,
                               num_classes=num_classes)


SPACES = {
    "darts": Space(DartsSupernet, DartsSpaceConfig, "supernet", lambda g, cfg: g.validate(cfg.ops, cfg.nodes),
                   _darts_network),
    # An NB201Genotype is checked against the (fixed) space when it is built.
    "nb201": Space(NB201Supernet, NB201SpaceConfig, "nb201", lambda g, cfg: g, _nb201_network),
}


def get_space(space: str) -> Space:
    if space not in SPACES:
        raise GradnasError(f"unknown space {space!r}; valid spaces: {', '.join(sorted(SPACES))}")
    return SPACES[space]


def space_class(space: str):
    return get_space(space).supernet


def check_genotype(genotype, space: str, cfg):
    """``genotype`` if it is a cell of ``space`` configured by ``cfg``; a clear error otherwise."""
    spec = get_space(space)
    if genotype.space != space:
        raise GradnasError(f"the genotype is a cell of the {genotype.space!r} space, not of {space!r}; use "
                           f"--space {genotype.space} (or a {space} genotype)")
    return spec.check(genotype, cfg)


def build_supernet(space: str, space_cfg, relax: str | Relaxation, *, in_channels: int, num_classes: int,
                   seed: int = 0):
    """The supernet of a named space with its config and relaxation (a name, or a built Relaxation);
    alpha is initialised from its own generator seeded with `seed`."""
    spec = get_space(space)
    if not isinstance(space_cfg, spec.config):
        raise GradnasError(f"space {space!r} is configured by {spec.config.__name__}, got {type(space_cfg).__name__}")
    relaxation = make_relaxation(relax) if isinstance(relax, str) else relax
    torch.manual_seed(seed)  # weight initialisation
    generator = torch.Generator().manual_seed(seed)
    return spec.supernet(space_cfg, relaxation, in_channels=in_channels, num_classes=num_classes,
                         generator=generator)


def build_network(genotype, net_cfg, *, in_channels: int, num_classes: int):
    """The evaluation network of ``genotype``, built by its space (``Space.network``) and shaped by
    ``net_cfg`` (a train NetworkConfig: cells, channels, stem, auxiliary_weight, drop_path)."""
    return get_space(genotype.space).network(genotype, net_cfg, in_channels=in_channels, num_classes=num_classes)


__all__ = ["SPACES", "Space", "get_space", "space_class", "check_genotype", "build_supernet", "build_network",
           "darts_params_m", "DartsNetwork"]
