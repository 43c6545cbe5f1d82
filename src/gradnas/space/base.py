"""The search-space plug-in: one :class:`SearchSpace` object per space answers every question the rest of
gradnas asks about a space, and the registry ``SPACES`` holds them by name.

A space is added by subclassing :class:`SearchSpace` and calling ``register_space(MySpace())`` (or with the
class); from then on its supernet is searched, its genotypes load from strings and JSON, its networks
train, its cells draw and its sizes are tracked without an edit anywhere else. The builtin spaces
(``darts``, ``nb201``) register when ``gradnas.space`` is imported, which every import of a
``gradnas.space`` submodule does first.

This module imports no concrete space (they import it), so it can be imported from anywhere.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Callable, NamedTuple

from gradnas.errors import GradnasError
from gradnas.registry import RESERVED_KEYS, register_section, unregister_section

# name -> the registered SearchSpace object
SPACES: dict = {}


class Benchmark(NamedTuple):
    """A tabular benchmark of a space: ``key`` names its figures in metrics.jsonl, ``lookup(genotype)``
    gives {dataset: test accuracy %}. A tuple, so ``key, lookup = benchmark`` works as well."""

    key: str
    lookup: Callable


@dataclasses.dataclass(frozen=True)
class SupernetCells:
    """What the gradient probes need of a supernet: its searched cells in forward order, each cell's kind
    (the alpha it shares), the position of the op-weight argument of a cell's forward, and the
    (target, source) edges in alpha-row order. Each cell reports every node through ``cell.on_node``: its
    intermediate nodes (the gradient probes), and its input nodes (the exact form of grad_corr reads the
    inputs of every edge; a cell that does not report them runs the proxy form only)."""

    cells: list
    kinds: list
    weight_arg: int
    edges: list


class SearchSpace(abc.ABC):
    """One search space. Subclasses set the class attributes and implement the abstract methods.

    Attributes: ``name`` (the ``space`` of configs and genotype files), ``section`` (the SearchConfig
    section holding its config), ``config_class`` (that section's frozen dataclass), ``genotype_class``
    (its discrete cell type; ``genotype_class.space == name``), ``supernet_class`` (what
    :meth:`build_supernet` returns), ``shape_keys`` (the CLI's generic shape flags, ``cells`` /
    ``channels``, -> fields of ``config_class``), ``string_form`` (its genotype string, for messages),
    ``params_note`` (what :meth:`search_width_params` counts, for reports) and ``benchmark`` (a
    :class:`Benchmark`, or None).
    """

    name: str = ""
    section: str = ""
    config_class: type = None
    genotype_class: type = None
    supernet_class: type = None
    shape_keys: dict = {}
    string_form: str = ""
    params_note: str = ""
    benchmark: Benchmark | None = None

    # -- the supernet
    def build_supernet(self, space_cfg, relaxation, *, in_channels: int, num_classes: int, generator):
        """The supernet of ``space_cfg`` (a ``config_class``) with a built Relaxation; alpha is initialised
        from ``generator``. It has weight_parameters(), arch_parameters(), genotype(), edge_weights()."""
        return self.supernet_class(space_cfg, relaxation, in_channels=in_channels, num_classes=num_classes,
                                   generator=generator)

    @abc.abstractmethod
    def searched_cells(self, model) -> SupernetCells:
        """The searched cells of one of this space's supernets (see :class:`SupernetCells`)."""

    # -- genotypes
    @abc.abstractmethod
    def parse_genotype(self, text: str):
        """The genotype written as ``text``, or None when ``text`` is not of this space's string form (a
        string of this form that is malformed is a GradnasError)."""

    def genotype_from_dict(self, d: dict, *, source: str = "genotype"):
        """The genotype of this space from its JSON object; ``source`` names the file in errors."""
        return self.genotype_class.from_dict(d, source=source)

    def check_genotype(self, genotype, space_cfg):
        """``genotype`` if it is a cell of this space that fits ``space_cfg``; a GradnasError otherwise."""
        other = getattr(genotype, "space", type(genotype).__name__)
        if other != self.name:
            raise GradnasError(f"the genotype is a cell of the {other!r} space, not of {self.name!r}; use "
                               f"--space {other} (or a {self.name} genotype)")
        if not isinstance(genotype, self.genotype_class):
            raise GradnasError(f"a genotype of space {self.name!r} is a {self.genotype_class.__name__}, got a "
                               f"{type(genotype).__name__}; load it with gradnas.space.genotype.load_genotype")
        return self.check_fit(genotype, space_cfg)

    @abc.abstractmethod
    def check_fit(self, genotype, space_cfg):
        """``genotype`` (already known to be of this space) if it fits ``space_cfg``; else a GradnasError."""

    @abc.abstractmethod
    def chosen_ops(self, genotype) -> list:
        """Every op the discrete cell(s) use, one per kept edge."""

    @abc.abstractmethod
    def conv_counts(self, genotype) -> tuple:
        """(N, R): the ops of ``gradnas.space.ops.CONV_OPS`` in the normal and in the reduction cell
        (R = 0 for a space without a searched reduction cell): the model size of MiLeNAS section 3.3."""

    @abc.abstractmethod
    def check_stop_size(self, size, space_cfg) -> tuple:
        """The stop.at_size rule ``size`` (a list of one or two ints) as the normalised (N, R) pair a
        genotype of ``space_cfg`` can have; a GradnasError when no genotype could ever have it."""

    @abc.abstractmethod
    def eval_params_m(self, genotype) -> float:
        """Parameters (M) of the genotype's evaluation network in the papers' CIFAR-10 setting."""

    @abc.abstractmethod
    def search_width_params(self, genotype, space_cfg, *, in_channels: int, num_classes: int) -> int:
        """Parameters of the genotype's network at the search's width (``space_cfg``), see ``params_note``."""

    @abc.abstractmethod
    def draw(self, genotype) -> dict:
        """{diagram name: graphviz.Digraph} for every cell of the genotype."""

    # -- the evaluation network
    @abc.abstractmethod
    def build_network(self, genotype, net_cfg, *, in_channels: int, num_classes: int):
        """The evaluation network of ``genotype`` shaped by ``net_cfg`` (a train NetworkConfig: cells,
        channels, stem, auxiliary_weight, drop_path); forward(x) returns logits (and takes
        return_aux=True if it has an auxiliary head)."""

    def __repr__(self) -> str:
        return f"<search space {self.name!r}>"


def register_space(space) -> SearchSpace:
    """Register a search space (a SearchSpace instance, or a subclass to instantiate without arguments)
    and return the registered object. A duplicate name or section, or a malformed plug-in, is refused."""
    if isinstance(space, type):
        if not issubclass(space, SearchSpace):
            raise GradnasError(f"register_space: {space.__name__} is not a subclass of gradnas.space.SearchSpace")
        missing = sorted(getattr(space, "__abstractmethods__", ()))
        if missing:
            raise GradnasError(f"register_space: {space.__name__} does not implement {', '.join(missing)}; define "
                               "them (see gradnas.space.base.SearchSpace)")
        space = space()
    if not isinstance(space, SearchSpace):
        raise GradnasError(f"register_space: expected a gradnas.space.SearchSpace, got {type(space).__name__}")
    problem = _malformed(space)
    if problem:
        raise GradnasError(f"register_space: space {space.name!r} {problem}")
    if space.name in SPACES:
        raise GradnasError(f"register_space: a space named {space.name!r} is registered already; pick another name")
    taken = {s.section: s.name for s in SPACES.values()}
    if space.section in taken:
        raise GradnasError(f"register_space: config section {space.section!r} belongs to space "
                           f"{taken[space.section]!r} already; give space {space.name!r} its own section")
    if space.section not in RESERVED_KEYS:  # a plug-in space: SearchConfig reads its section through it
        register_section(space.section, space.config_class, f"space {space.name}")
    SPACES[space.name] = space
    return space


def unregister_space(name: str) -> None:
    """Remove a registered space and its config section (tests, interactive sessions)."""
    space = SPACES.pop(name, None)
    if space is not None and space.section not in RESERVED_KEYS:
        unregister_section(space.section)


def _malformed(space: SearchSpace) -> str | None:
    """What is wrong with a plug-in's attributes, or None."""
    if not (isinstance(space.name, str) and space.name.isidentifier()):
        return "needs a name that is an identifier (e.g. 'darts'), got " + repr(space.name)
    if not (isinstance(space.section, str) and space.section.isidentifier()):
        return f"needs a config section name (an identifier), got {space.section!r}"
    for attr in ("config_class", "genotype_class", "supernet_class"):
        if not isinstance(getattr(space, attr), type):
            return f"needs {attr} to be a class, got {getattr(space, attr)!r}"
    if getattr(space.genotype_class, "space", None) != space.name:
        return (f"has genotype_class {space.genotype_class.__name__} whose 'space' is "
                f"{getattr(space.genotype_class, 'space', None)!r}; set it to {space.name!r}")
    if not dataclasses.is_dataclass(space.config_class):
        return f"needs config_class to be a dataclass (a config section), got {space.config_class.__name__}"
    fields = {f.name for f in dataclasses.fields(space.config_class)}
    if not isinstance(space.shape_keys, dict) or not set(space.shape_keys) <= {"cells", "channels"}:
        return f"needs shape_keys to map 'cells' / 'channels' to config fields, got {space.shape_keys!r}"
    unknown = [v for v in space.shape_keys.values() if v not in fields]
    if unknown:
        return f"has shape_keys naming {unknown}, which are not fields of {space.config_class.__name__}"
    if not (isinstance(space.string_form, str) and space.string_form):
        return "needs string_form, its genotype string as messages show it (e.g. 'normal=|...|;reduce=|...|')"
    bench = space.benchmark
    if bench is not None and not (isinstance(bench, Benchmark) and isinstance(bench.key, str)
                                  and callable(bench.lookup)):
        return f"needs benchmark to be None or a gradnas.space.base.Benchmark(key, lookup), got {bench!r}"
    return None


def get_space(name) -> SearchSpace:
    """The registered space called ``name``; an unknown name is a GradnasError listing the registered ones."""
    if not isinstance(name, str) or name not in SPACES:
        raise GradnasError(f"unknown space {name!r}; valid spaces: {', '.join(sorted(SPACES))}")
    return SPACES[name]


def space_of(genotype) -> SearchSpace:
    """The plug-in of a genotype, by its ``space``."""
    name = getattr(genotype, "space", None)
    if name is None:
        raise GradnasError(f"{type(genotype).__name__} is not a genotype (it has no 'space'); load one with "
                           "gradnas.space.genotype.load_genotype")
    return get_space(name)


def space_of_model(model) -> SearchSpace:
    """The plug-in whose supernet ``model`` is."""
    for space in SPACES.values():
        if isinstance(model, space.supernet_class):
            return space
    raise GradnasError(f"{type(model).__name__} is not the supernet of a registered space "
                       f"({', '.join(sorted(SPACES))}); build it with gradnas.space.build_supernet")
