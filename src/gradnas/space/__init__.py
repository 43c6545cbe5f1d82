"""Search spaces, by name. Each builds a supernet exposing weight_parameters(), arch_parameters(),
genotype() and edge_weights(); its genotype writes to_string() and to_dict()."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from gradnas.errors import GradnasError
from gradnas.relax import Relaxation, make_relaxation
from gradnas.space.darts import DartsSpaceConfig, DartsSupernet
from gradnas.space.nb201 import NB201SpaceConfig, NB201Supernet


@dataclass(frozen=True)
class Space:
    supernet: type
    config: type         # the frozen config class of the supernet's shape
    section: str         # the SearchConfig section holding that config
    check: Callable      # (genotype, config) -> genotype, raising a GradnasError if it does not fit


SPACES = {
    "darts": Space(DartsSupernet, DartsSpaceConfig, "supernet", lambda g, cfg: g.validate(cfg.ops, cfg.nodes)),
    # An NB201Genotype is checked against the (fixed) space when it is built.
    "nb201": Space(NB201Supernet, NB201SpaceConfig, "nb201", lambda g, cfg: g),
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
