"""How a user's choices become a config: named flags, then ``key=value`` assignments, over a base config.

This is the rule book between a front end (the `gradnas` command, a script, a notebook) and the configs:
which flag sets which config key, in what order they apply, which combinations are refused, and what a
resumed run may change. Everything here takes plain data: ``flags`` maps flag names (the keys of
:data:`SEARCH_FLAGS`, :data:`TRAIN_FLAGS`, ...) to the values the user gave, None meaning not given;
``sets`` is a list of ``"key.sub=value"`` strings, applied last. Precedence: base < flags < sets.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from gradnas.config import SearchConfig, apply_override, load_yaml, resume_conflicts
from gradnas.errors import GradnasError

DEFAULT_CONFIG = "quick"  # what plain `gradnas search` runs: single-level sigmoid on Fashion-MNIST, a proxy supernet
DEFAULT_SETTING = "quick"  # what plain `gradnas train` runs: a small network on Fashion-MNIST, minutes on a CPU
BENCH_SETTING = "cifar"  # the setting whose network `gradnas bench --train` times by default

# flag -> dotted search config key.
SEARCH_FLAGS = {
    "space": "space", "method": "method", "order": "order", "lam": "lambda", "relax": "relax",
    "dataset": "data.dataset", "data_dir": "data.data_dir", "epochs": "epochs", "batch_size": "batch_size",
    "seed": "seed", "device": "device", "threads": "threads", "xi": "xi",
    "compile": "compile", "precision": "precision",
    "probe_gap": "probes.gap", "probe_grad_corr": "probes.grad_corr", "probe_dl_dp": "probes.dl_dp_edges",
    "probe_batches": "probes.batches",
    "alpha_data": "alpha_data", "switch_at": "switch_at", "then": "then", "then_order": "then_order",
    "arch_optim": "arch_optim.type", "lr_decay": "collapse.lr_decay",
    "collapse_threshold": "collapse.threshold",
    "stop_at_size": "stop.at_size", "stop_when_smaller": "stop.when_smaller",
    "no_warmup": "pvll.warmup", "uniform_sampling": "pvll.uniform_sampling", "unweighted_loss": "pvll.weighted_loss",
    "callback": "callbacks", "log": "log", "log_every": "tracking.every_steps", "mlflow_uri": "tracking.mlflow_uri",
}
# cells / channels set the shape of whichever space is searched: its plug-in's shape_keys (space_flags).
SPACE_SHAPE_FLAGS = ("cells", "channels")
# The PVLL-NAS ablation flags (paper Table 5): refused with any other method.
PVLL_FLAGS = ("no_warmup", "uniform_sampling", "unweighted_loss")
# flag -> dotted training setting key.
TRAIN_FLAGS = {
    "dataset": "data.dataset", "data_dir": "data.data_dir", "epochs": "epochs", "batch_size": "batch_size",
    "cells": "network.cells", "channels": "network.channels", "lr": "optim.lr", "seed": "seed", "device": "device",
    "threads": "threads", "precision": "precision", "channels_last": "channels_last", "callback": "callbacks",
    "log": "log", "log_every": "tracking.every_steps", "mlflow_uri": "tracking.mlflow_uri",
}
# flag -> dotted training setting key, for timing an evaluation network (`gradnas bench --train`).
BENCH_TRAIN_FLAGS = {"batch": "batch_size", "cells": "network.cells", "channels": "network.channels"}


# ---------------------------------------------------------------------------------------------- search

def apply_search_overrides(d: dict, flags: Mapping[str, object], sets: Sequence[str]) -> dict:
    """Apply the search flags given, then each of ``sets``, to a config dict (in place) and return it.
    ``flags`` may hold any of :data:`SEARCH_FLAGS` and ``cells`` / ``channels``, which go to the section
    of the space being searched."""
    _check_names(flags, {*SEARCH_FLAGS, *SPACE_SHAPE_FLAGS})
    _assign_flags(d, SEARCH_FLAGS, flags)
    _assign_flags(d, space_flags(_searched_space(d, sets)), flags)
    for assignment in sets:
        apply_override(d, assignment)
    return d


def _searched_space(d: dict, sets: Sequence[str]) -> str:
    space = d.get("space", "darts")
    for assignment in sets:  # a set space=... decides too: the sets are applied last
        key, _, raw = assignment.partition("=")
        if key.strip() == "space":
            space = raw.strip()
    return space


def space_flags(space: str) -> dict:
    """--cells / --channels -> the dotted keys of the searched space's section (its plug-in's ``shape_keys``);
    an unknown space keeps the DARTS keys here and is refused by name when the config is checked."""
    from gradnas.space import SPACES
    plugin = SPACES.get(space) or SPACES["darts"]
    return {flag: f"{plugin.section}.{field}" for flag, field in plugin.shape_keys.items()}


def given_keys(d: dict, flags: Mapping[str, object], sets: Sequence[str]) -> list:
    """The dotted config keys the user set explicitly: by a flag given, or by a set."""
    space = flags.get("space") or d.get("space", "darts")  # as apply_search_overrides decides it
    table = {**SEARCH_FLAGS, **space_flags(_searched_space({"space": space}, sets))}
    return ([table[f] for f, value in flags.items() if value is not None and f in table] +
            [assignment.partition("=")[0].strip() for assignment in sets])


def search_config(base: dict, flags: Mapping[str, object], sets: Sequence[str], *,
                  check: bool = True, file_keys=()) -> SearchConfig:
    """The SearchConfig of ``base`` with the flags and sets applied (:func:`apply_search_overrides`; ``base``
    is changed in place). Refuses what the search would otherwise ignore: --epochs with pvll, a PVLL
    ablation flag with another method, and (``check``) any setting no component of the search reads, given
    by a flag or a set, or (``file_keys``) held by the user's config file (see
    ``gradnas.config.check_components``)."""
    from gradnas.search.loop import check_search_config
    given = given_keys(base, flags, sets)
    cfg = SearchConfig.from_dict(apply_search_overrides(base, flags, sets))
    if cfg.method == "pvll" and flags.get("epochs") is not None:
        raise GradnasError("--epochs does not apply to method pvll: its budget is pvll.steps search steps after "
                           "pvll.population warm-up architectures (--set pvll.steps=N)")
    ablations = [f for f in PVLL_FLAGS if flags.get(f) is not None]
    if ablations and cfg.method != "pvll":
        raise GradnasError(f"--{_flag(ablations[0])} is a PVLL-NAS ablation; use it with --method pvll")
    if check:
        check_search_config(cfg, given=given, file_keys=file_keys)
    return cfg


def resolve_search_config(config: str | None, flags: Mapping[str, object], sets: Sequence[str]) -> SearchConfig:
    """The SearchConfig of a YAML file or shipped config name (default: :data:`DEFAULT_CONFIG`), then the
    flags, then the sets (:func:`search_config`). The settings of a config the user chose that differ from
    their defaults count as set by the user; those of the built-in default do not (it serves every method)."""
    from gradnas.config import flatten
    base = load_yaml(config or DEFAULT_CONFIG)
    defaults = flatten(SearchConfig().to_dict())
    chosen = [k for k, v in flatten(base).items() if config and defaults.get("lambda" if k == "lam" else k) != v]
    if not config:
        _serve_the_method(base, flags, sets)
    return search_config(base, flags, sets, file_keys=chosen)


def _serve_the_method(base: dict, flags: Mapping[str, object], sets: Sequence[str]) -> None:
    """The built-in default's relaxation (sigmoid) is for the methods that run it: a method that cannot (pvll
    samples from softmax(A)) gets the first relaxation it runs, unless the user chose one (then it is refused
    by name, as with any config)."""
    import copy
    from gradnas.search.algorithm import METHODS
    if "relax" in given_keys(base, flags, sets):
        return
    method = apply_search_overrides(copy.deepcopy(base), flags, sets).get("method")
    cls = METHODS.get(method) if isinstance(method, str) else None
    supported = getattr(cls, "relaxations", None)
    if supported and base.get("relax", "softmax") not in supported:
        base["relax"] = supported[0]


def saved_search_config(run_dir) -> SearchConfig:
    """The config a search run folder was started with; refuses a folder that holds no search."""
    from gradnas.run import CONFIG_FILE
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise GradnasError(f"{run_dir} is not a gradnas run folder (no {CONFIG_FILE}); give the folder a "
                           "search wrote")
    saved = load_yaml(str(run_dir / CONFIG_FILE))
    if "network" in saved:
        raise GradnasError(f"{run_dir} is a training run folder, not a search; continue it with "
                           f"`gradnas train --resume {run_dir}`")
    return SearchConfig.from_dict(saved)


def resumed_search_config(run_dir, saved: SearchConfig, flags: Mapping[str, object],
                          sets: Sequence[str]) -> SearchConfig:
    """``saved`` (:func:`saved_search_config`) with the flags and sets applied; refuses any change but
    where it runs and when it stops (config.RESUMABLE_KEYS)."""
    cfg = search_config(saved.to_dict(), flags, sets, check=False)  # the folder's config was checked when it began
    _refuse_changes(saved, cfg, f"{run_dir} was searched with", "a resumed search keeps its config")
    return cfg


def _refuse_changes(saved, cfg, was: str, keeps: str) -> None:
    """The first setting a resume may not change (config.RESUMABLE_KEYS), as one error."""
    diff = resume_conflicts(saved.to_dict(), cfg.to_dict())
    if diff:
        key, old, new = diff[0]
        raise GradnasError(f"{was} {key}={old!r}, not {new!r}; {keeps} (only --device and --threads may change). "
                           "Start a new --out instead.")


def genotype_space_config(config: str | None, space: str | None, sets: Sequence[str],
                          genotype_space: str) -> SearchConfig:
    """The config whose space a genotype is checked against: ``config`` (default :data:`DEFAULT_CONFIG`)
    with ``space`` and the sets applied. With neither ``config`` nor ``space`` the space is the genotype's
    own (``genotype_space``), so that checking a genotype needs no flags."""
    d = load_yaml(config or DEFAULT_CONFIG)
    if space:
        d["space"] = space
    elif not config:
        d["space"] = genotype_space
    for assignment in sets:
        apply_override(d, assignment)
    return SearchConfig.from_dict(d)


# -------------------------------------------------------------------------------------------- training

def apply_train_overrides(d: dict, flags: Mapping[str, object], sets: Sequence[str]) -> dict:
    """Apply the training flags given (:data:`TRAIN_FLAGS`), then each of ``sets``, to a setting dict (in
    place) and return it."""
    _check_names(flags, TRAIN_FLAGS)
    _assign_flags(d, TRAIN_FLAGS, flags)
    for assignment in sets:
        apply_override(d, assignment)
    return d


def train_config(base: dict, flags: Mapping[str, object], sets: Sequence[str]):
    """The TrainConfig of a setting dict with the flags and sets applied (``base`` is changed in place)."""
    from gradnas.train.config import TrainConfig
    return TrainConfig.from_dict(apply_train_overrides(base, flags, sets))


def resolve_train_config(setting: str | None, flags: Mapping[str, object], sets: Sequence[str]):
    """The TrainConfig of a YAML file or shipped setting name (default: :data:`DEFAULT_SETTING`), then the
    flags, then the sets."""
    from gradnas.train.config import load_setting
    return train_config(load_setting(setting or DEFAULT_SETTING), flags, sets)


def check_training_folder(run_dir) -> None:
    """Refuse a folder that holds no training run (its config and genotype)."""
    from gradnas.run import CONFIG_FILE, GENOTYPE_FILE
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file() or not (run_dir / GENOTYPE_FILE).is_file():
        raise GradnasError(f"{run_dir} is not a gradnas training run folder (no {CONFIG_FILE} / {GENOTYPE_FILE})")


def saved_train_config(run_dir):
    """The setting a training run folder (:func:`check_training_folder`) was started with; refuses a
    search run folder."""
    from gradnas.train.config import TrainConfig
    from gradnas.run import CONFIG_FILE
    saved = load_yaml(str(Path(run_dir) / CONFIG_FILE))
    if "method" in saved or "space" in saved:
        raise GradnasError(f"{run_dir} is a search run folder, not a training one; train its genotype with "
                           f"`gradnas train --genotype {run_dir}`")
    return TrainConfig.from_dict(saved)


def resumed_train_config(run_dir, saved, flags: Mapping[str, object], sets: Sequence[str]):
    """``saved`` (:func:`saved_train_config`) with the flags and sets applied; refuses any change but where
    it runs (config.RESUMABLE_KEYS)."""
    cfg = train_config(saved.to_dict(), flags, sets)
    _refuse_changes(saved, cfg, f"{run_dir} was trained with", "a resumed run keeps its setting")
    return cfg


def bench_train_config(setting: str | None, flags: Mapping[str, object]):
    """The TrainConfig whose network `gradnas bench --train` times: ``setting`` (default
    :data:`BENCH_SETTING`) with the flags of :data:`BENCH_TRAIN_FLAGS` given."""
    from gradnas.train.config import TrainConfig, load_setting
    _check_names(flags, BENCH_TRAIN_FLAGS)
    d = load_setting(setting or BENCH_SETTING)
    _assign_flags(d, BENCH_TRAIN_FLAGS, flags)
    return TrainConfig.from_dict(d)


# ------------------------------------------------------------------------------------------------ helpers

def _check_names(flags: Mapping[str, object], known) -> None:
    # A misspelt flag name would otherwise be dropped without a word: that is the caller's bug, not the user's.
    unknown = sorted(set(flags) - set(known))
    if unknown:
        raise KeyError(f"no such flag(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def _assign_flags(d: dict, table: Mapping[str, str], flags: Mapping[str, object]) -> None:
    for name, key in table.items():
        value = flags.get(name)
        if value is not None:
            _assign(d, key, value)


def _assign(d: dict, key: str, value) -> None:
    *sections, last = key.split(".")
    node = d
    for section in sections:
        node = node.setdefault(section, {})
    node[last] = value


def _flag(name: str) -> str:
    return name.replace("_", "-")
