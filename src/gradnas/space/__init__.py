"""Search spaces, by name. Each builds a supernet exposing weight_parameters(), arch_parameters(),
genotype() and edge_weights()."""
from __future__ import annotations

import torch

from gradnas.errors import GradnasError
from gradnas.relax import make_relaxation
from gradnas.space.darts import DartsSpaceConfig, DartsSupernet

SPACES = {"darts": DartsSupernet}


def space_class(space: str):
    if space not in SPACES:
        raise GradnasError(f"unknown space {space!r}; valid spaces: {', '.join(sorted(SPACES))}")
    return SPACES[space]


def build_supernet(space: str, supernet_cfg: DartsSpaceConfig, relax: str, *, in_channels: int, num_classes: int,
                   seed: int = 0):
    """The supernet of a named space; alpha is initialised from its own generator seeded with `seed`."""
    cls = space_class(space)
    torch.manual_seed(seed)  # weight initialisation
    generator = torch.Generator().manual_seed(seed)
    return cls(supernet_cfg, make_relaxation(relax), in_channels=in_channels, num_classes=num_classes,
                         generator=generator)
