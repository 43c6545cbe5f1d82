"""The search-algorithm lifecycle and the one registry of search methods.

Every search method is an entry of :data:`METHODS`, registered with :func:`register_method`. An entry is one of

* an architecture optimizer (:class:`gradnas.search.methods.ArchOptimizer`): a per-batch update of w and
  alpha, ``step(train_batch, val_batch)``; the epoch loop around it is
  :class:`gradnas.search.gradient.GradientSearch` (single-level, darts, milenas), or
* a search algorithm (:class:`SearchAlgorithm`) with a loop of its own (pvll).

A :class:`SearchAlgorithm` is what the run harness (``gradnas.run.Harness``, via ``gradnas.search.loop.Search``)
drives, in the spirit of NASLib's optimizer lifecycle: it is built over the run's data (adapting the space:
supernet, optimizers), counts its units of work (``unit``: epochs or rounds; ``units()``), runs one unit
(``run_unit``), keeps its state (``state_dict`` / ``load_state_dict``) and derives the architecture
(``genotype()``, ``last_genotype`` after each unit). Both kinds declare the config keys they read (``reads``;
see ``gradnas.config.check_components``) and, for a registered plug-in, an optional config section of their own
(``config_section`` + ``config_class``).
"""
from __future__ import annotations

from typing import ClassVar

from gradnas.registry import RESERVED_KEYS, register_section, unregister_section
from gradnas.errors import GradnasError

METHODS: dict[str, type] = {}


def register_method(cls):
    """Register a search method (class decorator): an ArchOptimizer subclass (a per-batch update, run by the
    epoch loop) or a SearchAlgorithm subclass (its own loop). Its ``name`` is what ``method:`` / ``--method``
    take; a name already registered is refused."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or name == "base":
        raise GradnasError(f"register_method: {cls.__name__} needs a class attribute `name` (the --method value)")
    if name in METHODS and METHODS[name] is not cls:
        raise GradnasError(f"register_method: a method named {name!r} is already registered ({METHODS[name].__name__})")
    if not callable(getattr(cls, "step", None)) and not callable(getattr(cls, "run_unit", None)):
        raise GradnasError(f"register_method: {cls.__name__} is neither an architecture optimizer (step(train, val)) "
                           "nor a search algorithm (run_unit)")
    if getattr(cls, "config_section", None) and cls.config_section not in RESERVED_KEYS:  # (pvll's is built in)
        register_section(cls.config_section, cls.config_class, f"method {name}")
    METHODS[name] = cls
    return cls


def unregister_method(name: str) -> None:
    """Remove a registered method (tests, interactive sessions); built-ins included, so use with care."""
    cls = METHODS.pop(name, None)
    if cls is not None and getattr(cls, "config_section", None) and cls.config_section not in RESERVED_KEYS:
        unregister_section(cls.config_section)


def method_class(name: str) -> type:
    try:
        return METHODS[name]
    except KeyError:
        raise GradnasError(f"unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}") from None


class SearchAlgorithm:
    """A search with a loop of its own, driven unit by unit by the run harness.

    Subclasses set ``name``, ``orders``, ``unit`` and ``reads``, build everything in ``__init__(cfg, *, data,
    device, world)`` (``data``: :class:`gradnas.search.loop.SearchData`) and implement :meth:`units`,
    :meth:`run_unit`, :meth:`genotype`, :meth:`state_dict`, :meth:`load_state_dict` and :meth:`summary`."""

    name: ClassVar[str] = "base"
    orders: ClassVar[tuple] = (1,)
    #: does it read the architecture half of the split?
    uses_val_batch: ClassVar[bool] = True
    #: what one unit of work is called (metrics lines number units as ``epoch``)
    unit: ClassVar[str] = "round"
    #: config keys it reads besides the ones every search reads (gradnas.config.COMMON_KEYS)
    reads: ClassVar[tuple] = ()
    #: key -> why it does not apply / what to use instead, for keys it does not read (better refusals)
    hints: ClassVar[dict] = {}
    #: whether it runs under torchrun (data parallelism); if not, why (for the refusal)
    distributed: ClassVar[bool] = False
    single_process_reason: ClassVar[str] = ""
    #: whether the run's relaxation (``relax`` and its section) shapes the search
    uses_relaxation: ClassVar[bool] = True
    #: the ``relax`` values this algorithm runs with (None: every registered relaxation); the first is the one the
    #: built-in default config gives it when the default's own relaxation is not among them
    relaxations: ClassVar[tuple | None] = None
    #: a config section of its own (registered plug-ins): its name and frozen dataclass
    config_section: ClassVar[str | None] = None
    config_class: ClassVar[type | None] = None
    #: how the NaN error ends (what to change)
    nan_fix: ClassVar[str] = "Lower the learning rates or check the data, then start a new run."
    nan_context: ClassVar[str] = ""

    last_genotype = None

    @classmethod
    def check_config(cls, cfg) -> None:
        """Refuse settings this algorithm cannot run with (each message names what to do instead)."""

    def builtin_callbacks(self) -> list:
        """The extras this algorithm runs around its units (gradnas.search.callbacks), in order."""
        return []

    def units(self) -> int:
        raise NotImplementedError

    def run_unit(self, index: int, run) -> dict:
        raise NotImplementedError

    def genotype(self):
        raise NotImplementedError

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    def summary(self, *, done: int, finished: bool) -> dict:
        raise NotImplementedError

    def progress_line(self, record: dict) -> str | None:
        return None

    def validated(self, record: dict):
        """(genotype, validation accuracy %, what the accuracy is) of the unit just finished, for the best-cell
        choice (best-genotype.json), or None when the unit measured none. By default the unit's derived genotype
        and the record's ``valid_acc``."""
        if record.get("valid_acc") is None or self.last_genotype is None:
            return None
        return self.last_genotype, float(record["valid_acc"]), "valid_acc"
