"""Parameter count of a searched genotype, as honestly as the code base can give it today.

DARTS space: there is no evaluation network in gradnas yet, so the figure is the derived network *at the
search width*: the search network's stem, cell preprocessing and classifier plus, in every cell, only the
ops the genotype keeps (counted from the supernet's own modules, so nothing is defined twice). Its
BatchNorms have no affine parameters and there is no auxiliary head; an evaluation network (more cells,
more channels) is larger.

NAS-Bench-201: the benchmark's own discrete network (gradnas.space.nb201.build_nb201_network) with the
search's C and N (the benchmark trains C = 16, N = 5, the defaults).

Reports label both "params at search width".
"""
from __future__ import annotations

from pathlib import Path

from gradnas.errors import GradnasError

LABEL = "params at search width (M)"
# What the figure is, per space, for the note under a table that shows it.
NOTE = {
    "darts": "the genotype's cells in the search network (its cells, channels, stem and classifier; affine-free "
             "BatchNorm, no auxiliary head), counted from the supernet's modules; not the size of an evaluation "
             "network, which gradnas does not build yet",
    "nb201": "the NAS-Bench-201 network of the cell (the benchmark's skeleton) with the search's channels C and "
             "cells per stage N; at C = 16, N = 5 it is the network the benchmark trained",
}


def _numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


def derived_params(config: dict, genotype_string: str, *, in_channels: int, num_classes: int) -> int:
    """Parameters of the genotype's network at the search width (see the module docstring)."""
    import torch

    from gradnas.config import SearchConfig
    from gradnas.space import build_supernet
    from gradnas.space.genotype import load_genotype
    from gradnas.space.nb201 import build_nb201_network

    cfg = SearchConfig.from_dict(config)
    genotype = load_genotype(genotype_string)
    if genotype.space != cfg.space:
        raise GradnasError(f"a {genotype.space} genotype does not fit the {cfg.space} space")
    with torch.device("meta"):  # shapes only: nothing is allocated or initialised for real
        if cfg.space == "nb201":
            return _numel(build_nb201_network(genotype, C=cfg.nb201.channels, N=cfg.nb201.cells_per_stage,
                                              in_channels=in_channels, num_classes=num_classes))
        if cfg.space != "darts":
            raise GradnasError(f"parameter counts are implemented for the darts and nb201 spaces, not {cfg.space!r}")
        model = build_supernet(cfg.space, cfg.supernet, cfg.relax, in_channels=in_channels, num_classes=num_classes,
                               seed=cfg.seed)
    total = _numel(model.stem) + _numel(model.classifier)
    for cell in model.cells:
        total += _numel(cell.pre0) + _numel(cell.pre1)
        kept = genotype.reduce if cell.reduction else genotype.normal
        for k, (op, source) in enumerate(kept):
            ops = cell.edges[f"{k // 2 + 2}_{source}"]
            if op in ops:  # pools, `none` and stride-1 skip have no module with weights
                total += _numel(ops[op])
    return total


def run_params(run) -> int | None:
    """derived_params of a run's final genotype; input channels and classes read from its checkpoint.
    None when the run has no checkpoint or genotype, or its space has no counter."""
    from gradnas.checkpoint import load_checkpoint
    from gradnas.search.loop import CHECKPOINT_FILE

    path = Path(run.path) / CHECKPOINT_FILE
    genotype = run.genotype_string
    if not path.is_file() or not genotype:
        return None
    try:
        state = load_checkpoint(path)["model"]
        stem = next(v for k, v in state.items() if k.startswith("stem.") and v.dim() == 4)
        classifier = next(v for k, v in state.items() if k.startswith("classifier") and k.endswith("weight"))
        return derived_params(run.config, genotype, in_channels=int(stem.shape[1]),
                              num_classes=int(classifier.shape[0]))
    except (GradnasError, KeyError, StopIteration):
        return None
