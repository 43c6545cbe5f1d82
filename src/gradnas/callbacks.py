"""Callbacks: small objects the run harness calls at the boundaries of a search or a training run.

A callback sees the run (``gradnas.run.Harness``: its config, job, run folder, device, ``is_main``) and may

* add keys to a unit's metrics record in :meth:`Callback.on_epoch_end` (``record`` is the line that is
  written to metrics.jsonl after every callback has run),
* ask the run to stop after this unit with ``run.request_stop(reason, rule=...)`` (the stop is written into
  that unit's record and the summary, and the run counts as finished: it ended by itself),
* keep state across an interruption: what :meth:`state_dict` returns is saved in every checkpoint under
  :attr:`state_key` and handed back to :meth:`load_state_dict` on ``--resume`` (``None`` when the checkpoint
  has none, e.g. one written before the callback existed).

The built-in epoch-end extras are callbacks too (``gradnas.search.callbacks``: the relaxation's temperature
schedule, the collapse watch and lr rule, model sizes and stop rules, the probes, the tabular-benchmark
lookup) and so is the metrics writer below. User callbacks go to ``Search(cfg, out, callbacks=[...])`` or
``Training(cfg, genotype, out, callbacks=[...])``; they run after the built-in ones and before the writer.

A plug-in module can also register a callback by name (:func:`register_callback`); a run then builds it
when its config lists that name (``callbacks: [name]``, `gradnas search|train --callback NAME`, with
``--plugin MODULE`` importing the module). The names are saved in config.yaml, so ``--resume`` builds the same
callbacks again and hands them their checkpointed state.

A "unit" is what the job counts: an epoch (searches and training runs) or a PVLL-NAS round; the hooks
keep the names of the common case (``on_epoch_start`` / ``on_epoch_end``) and receive the 0-based index.
"""
from __future__ import annotations

from typing import Callable

from gradnas.errors import GradnasError

# name -> factory(run config) -> Callback (a Callback subclass itself is such a factory)
CALLBACKS: dict[str, Callable] = {}


def register_callback(name: str, factory: Callable | None = None):
    """Register ``factory`` (a Callback subclass, or any callable taking the run's config and returning a
    Callback) under ``name``, for configs that list it (``callbacks: [name]``, ``--callback name``). Without a
    factory it is a class decorator. A name already registered to another factory is refused."""
    def register(f):
        if not isinstance(name, str) or not name or not name.replace("-", "_").isidentifier():
            raise GradnasError(f"register_callback: the name must be a word like 'my_logger', got {name!r}")
        if not callable(f):
            raise GradnasError(f"register_callback {name!r}: the factory must be callable, got {f!r}")
        if name in CALLBACKS and CALLBACKS[name] is not f:
            raise GradnasError(f"register_callback: a callback named {name!r} is already registered")
        CALLBACKS[name] = f
        return f
    return register if factory is None else register(factory)


def unregister_callback(name: str) -> None:
    CALLBACKS.pop(name, None)


def check_callback_names(names) -> None:
    """Refuse a callback name nobody registered (before a run folder is made)."""
    for name in names:
        if name not in CALLBACKS:
            known = ", ".join(sorted(CALLBACKS)) or "none"
            raise GradnasError(f"unknown callback {name!r} (registered: {known}); import the module that registers "
                               "it with --plugin MODULE, or drop it from callbacks")


def build_callbacks(names, cfg) -> list:
    """The callbacks a config names, each built by its registered factory from the config."""
    check_callback_names(names)
    out = []
    for name in names:
        cb = CALLBACKS[name](cfg)
        if not isinstance(cb, Callback):
            raise GradnasError(f"callback {name!r}: its factory returned {type(cb).__name__}, not a Callback")
        out.append(cb)
    return out


class Callback:
    """Base class: every hook does nothing; override the ones you need."""

    #: where this callback's state lives in a checkpoint; None: the class name (``callback.<Name>``)
    state_key: str | None = None

    def key(self) -> str:
        return self.state_key or f"callback.{type(self).__name__}"

    def on_start(self, run) -> None:
        """Before the first unit of this process (after a resume has loaded the checkpoint)."""

    def on_epoch_start(self, run, index: int) -> dict | None:
        """Before unit ``index`` (0-based); a dict returned here is added to that unit's record."""

    def on_step_end(self, run, index: int, step: int, stats: dict) -> None:
        """After step ``step`` (0-based) of unit ``index``; ``stats`` are the step's numbers (losses...)."""

    def on_epoch_end(self, run, record: dict) -> None:
        """After unit ``record['epoch']`` (1-based): add keys to ``record``, or ``run.request_stop(...)``."""

    def on_end(self, run, summary: dict) -> None:
        """When the run ends (finished, stopped or after ``stop_after``): add keys to ``summary``."""

    def state_dict(self) -> dict | None:
        """What a resumed run needs to continue exactly; None: nothing."""
        return None

    def load_state_dict(self, state: dict | None) -> None:
        """Restore :meth:`state_dict`'s result (None: the checkpoint holds none)."""

    def on_resume(self, run, state: dict | None) -> None:
        """On ``--resume``, after the job has loaded the checkpoint: by default :meth:`load_state_dict`. (A callback
        that needs the run, e.g. the metrics lines kept, ``run.resumed_records``, overrides this.)"""
        self.load_state_dict(state)


class MetricsWriter(Callback):
    """Appends every unit's record to metrics.jsonl (the main process only). Always the last callback, so the
    line holds what every other callback added."""

    def on_epoch_end(self, run, record: dict) -> None:
        if run.is_main:
            run.folder.append_metrics(record)
