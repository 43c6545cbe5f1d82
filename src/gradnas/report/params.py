"""Parameter count of a searched genotype, as honestly as the code base can give it today: each space's
plug-in counts it (``search_width_params``, gradnas.space.base) and says what it counted (``params_note``).

DARTS space: the derived network *at the search width*: the search network's stem, cell preprocessing and
classifier plus, in every cell, only the ops the genotype keeps (counted from the supernet's own modules,
so nothing is defined twice). Its BatchNorms have no affine parameters and there is no auxiliary head; an
evaluation network (more cells, more channels) is larger.

NAS-Bench-201: the benchmark's own discrete network (gradnas.space.nb201.build_nb201_network) with the
search's C and N (the benchmark trains C = 16, N = 5, the defaults).

Reports label both "params at search width".
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from gradnas.errors import GradnasError
from gradnas.space.base import SPACES

LABEL = "params at search width (M)"


class _Notes(Mapping):
    """What the figure is, per space name, for the note under a table that shows it: a live view of the
    registered spaces' ``params_note`` (so a space registered later has its note too)."""

    def __getitem__(self, space):
        if space not in SPACES:
            raise KeyError(space)
        return SPACES[space].params_note

    def __iter__(self):
        return iter(SPACES)

    def __len__(self):
        return len(SPACES)


NOTE = _Notes()


def derived_params(config: dict, genotype_string: str, *, in_channels: int, num_classes: int) -> int:
    """Parameters of the genotype's network at the search width (see the module docstring)."""
    from gradnas.config import SearchConfig
    from gradnas.space import get_space
    from gradnas.space.genotype import load_genotype

    cfg = SearchConfig.from_dict(config)
    genotype = load_genotype(genotype_string)
    if genotype.space != cfg.space:
        raise GradnasError(f"a {genotype.space} genotype does not fit the {cfg.space} space")
    space = get_space(cfg.space)
    genotype = space.check_genotype(genotype, cfg.space_config)
    return space.search_width_params(genotype, cfg.space_config, in_channels=in_channels, num_classes=num_classes)


def run_params(run) -> int | None:
    """derived_params of a run's final genotype; input channels and classes read from its checkpoint.
    None when the run has no checkpoint or genotype, or its config or genotype does not load."""
    from gradnas.checkpoint import load_checkpoint
    from gradnas.run import CHECKPOINT_FILE

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
