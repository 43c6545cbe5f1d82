"""Search spaces, by name. Each builds a supernet exposing weight_parameters(), arch_parameters(),
genotype() and edge_weights(), and a discrete evaluation network from one of its genotypes."""
from __future__ import annotations

import torch

from gradnas.errors import GradnasError
from gradnas.relax import make_relaxation
from gradnas.space.darts import DartsSpaceConfig, DartsSupernet
from gradnas.space.darts_network import DartsNetwork, darts_params_m
from gradnas.space.ops import OPS

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


def _darts_network(genotype, net, *, in_channels: int, num_classes: int):
    genotype.validate(tuple(OPS), genotype.steps)
    return DartsNetwork(genotype, cells=net.cells, channels=net.channels, num_classes=num_classes,
                        in_channels=in_channels, auxiliary=net.auxiliary_weight > 0, stem=net.stem)


# Evaluation networks by genotype space: (genotype, network config, in_channels=, num_classes=) -> nn.Module.
# The module's forward(x) returns logits; a network with an auxiliary head also takes return_aux=True.
# A space plugs in with one entry (NB201: its build_nb201_network behind a small adapter).
EVAL_NETWORKS = {"darts": _darts_network}


def build_network(genotype, net_cfg, *, in_channels: int, num_classes: int):
    """The evaluation network of ``genotype`` (any space in EVAL_NETWORKS), shaped by ``net_cfg``
    (a train NetworkConfig: cells, channels, stem, auxiliary_weight, drop_path)."""
    space = getattr(genotype, "space", "darts")
    if space not in EVAL_NETWORKS:
        raise GradnasError(f"no evaluation network for {space!r} genotypes; spaces with one: "
                           f"{', '.join(sorted(EVAL_NETWORKS))}")
    return EVAL_NETWORKS[space](genotype, net_cfg, in_channels=in_channels, num_classes=num_classes)


__all__ = ["SPACES", "EVAL_NETWORKS", "space_class", "build_supernet", "build_network", "darts_params_m",
           "DartsNetwork"]
