"""Experiment specs: one YAML file per reproducible table or figure of a paper (``gradnas reproduce NAME``).

A spec says which searches to run (a base config per run, the settings each run changes), at which budgets
(``tiny``: seconds, to check the spec end to end; ``proxy``: about an hour on 2 CPU cores; ``paper``: the
paper's own setting, for a GPU), whether each search's cell is then trained from scratch, which numbers the
report tabulates (:mod:`gradnas.reproduce.measures`), the paper's figures for them, and the orderings the
paper claims (``expect``), which the report checks against the runs' numbers. The shipped specs live in
``gradnas/configs/reproduce/``; a user's own spec is a YAML file of the same form::

    title: MiLeNAS Fig. 2a, the train - validation accuracy gap
    paper: milenas.md, section 4.2, Figure 2a
    claim: the single-level method has the largest gap, bilevel the smallest, MiLeNAS lies between
    base: milenas-1st              # shipped search config (or a YAML path, relative to this file)
    runs:                          # run name -> dotted settings it changes (``config:`` swaps the base)
      single-level: {method: single-level}
      milenas-lam1: {lambda: 1}
    train: {setting: cifar}        # optional: train every search's best cell (a setting and its changes)
    measures: [gap_mean, best_valid_acc]
    paper_values: {milenas-lam1: {best_valid_acc: "..."}}
    expect: [{measure: gap_mean, order: [single-level, milenas-lam1], higher_first: true}]
    budgets:
      proxy: {seeds: [0], set: {epochs: 10}, train: {epochs: 5}, runs: {single-level: {...}},
              note: "what the proxy changes, in words", hours: 0.5}

A budget's ``set`` applies to every search after its base config and before the run's own settings (a run
keeps what it varies); ``runs`` holds per-run settings of that budget, applied last; ``train`` changes the
training setting.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from gradnas.config import CONFIG_DIR, read_yaml_file
from gradnas.errors import GradnasError

SPEC_DIR = CONFIG_DIR / "reproduce"
BUDGETS = ("tiny", "proxy", "paper")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_SPEC_KEYS = {"title", "paper", "claim", "base", "runs", "train", "measures", "paper_values", "expect", "budgets",
              "run_reports", "notes"}
_BUDGET_KEYS = {"seeds", "set", "runs", "train", "note", "hours"}


@dataclass(frozen=True)
class Budget:
    name: str
    seeds: tuple = (0,)
    set: dict = field(default_factory=dict)     # dotted key -> value, every search
    runs: dict = field(default_factory=dict)    # run name -> {dotted key: value}, applied last
    train: dict = field(default_factory=dict)   # dotted key -> value of the training setting
    note: str = ""                              # what this budget changes, in words
    hours: float | None = None                  # expected wall-clock hours (the note says on what)


@dataclass(frozen=True)
class Expectation:
    """The paper's ordering of runs by a measure: ``order[0]`` has the highest value when ``higher_first``."""
    measure: str
    order: tuple
    higher_first: bool = True

    def words(self) -> str:
        sign = " > " if self.higher_first else " < "
        return sign.join(self.order)


@dataclass(frozen=True)
class Spec:
    name: str
    title: str
    paper: str
    claim: str
    base: str
    runs: dict                      # run name -> {dotted key: value} (key "config": the run's base)
    measures: tuple
    budgets: dict                   # budget name -> Budget
    train: dict | None = None       # {"setting": name, "set": {dotted key: value}}
    paper_values: dict = field(default_factory=dict)   # run -> measure -> text
    expect: tuple = ()
    run_reports: bool = False       # also write each search's own report (gradnas report): probe plots
    notes: str = ""
    path: Path | None = None

    def budget(self, name: str) -> Budget:
        if name not in self.budgets:
            raise GradnasError(f"spec {self.name!r} has no budget {name!r}; it has {', '.join(self.budgets)}")
        return self.budgets[name]

    def base_for(self, run: str) -> str:
        """The base config of a run: its own ``config:``, else the spec's; a relative YAML path is read from
        the spec file's folder."""
        base = str(self.runs[run].get("config", self.base))
        if self.path is not None and base.endswith((".yaml", ".yml")) and not Path(base).is_absolute():
            return str(self.path.parent / base)
        return base


def shipped_specs() -> list:
    return sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))


def load_spec(name_or_path: str) -> Spec:
    """A shipped spec by name (``gradnas reproduce --list``) or a spec YAML file; checked whole (unknown keys,
    runs, measures and budgets named wrongly) before anything runs."""
    path = Path(name_or_path)
    if not path.is_file():
        shipped = SPEC_DIR / f"{name_or_path}.yaml"
        if not shipped.is_file():
            raise GradnasError(f"no experiment spec {name_or_path!r}: give a spec YAML file or a shipped name "
                               f"({', '.join(shipped_specs())}; `gradnas reproduce --list` describes them)")
        path = shipped
    data = read_yaml_file(path, kind="spec")
    return parse_spec(data, name=path.stem, path=path)


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GradnasError(f"{where} must be a mapping, got {type(value).__name__}")
    return dict(value)


def _text(value, where: str, *, required: bool = False) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise GradnasError(f"{where} must be {'a non-empty' if required else 'a'} text")
    return value.strip()


def _settings(value, where: str) -> dict:
    d = _mapping(value, where)
    for k in d:
        if not isinstance(k, str) or not k or any(not part.isidentifier() for part in k.split(".")):
            raise GradnasError(f"{where}: {k!r} is not a dotted config key like w_optim.lr")
    return d


def parse_spec(data, *, name: str, path: Path | None = None) -> Spec:
    from gradnas.reproduce.measures import MEASURES

    where = f"spec {path or name}"
    data = _mapping(data, where)
    unknown = sorted(set(data) - _SPEC_KEYS)
    if unknown:
        raise GradnasError(f"{where}: unknown key(s) {', '.join(unknown)}; a spec has {', '.join(sorted(_SPEC_KEYS))}")
    runs_raw = _mapping(data.get("runs"), f"{where}: runs")
    if not runs_raw:
        raise GradnasError(f"{where}: runs is empty; name at least one search (run name -> settings)")
    runs = {}
    for run, settings in runs_raw.items():
        if not isinstance(run, str) or not _NAME.match(run):
            raise GradnasError(f"{where}: run name {run!r} must be a plain word (letters, digits, . _ + -), it names "
                               "a folder")
        runs[run] = _settings(settings, f"{where}: runs.{run}")
    measures = data.get("measures") or []
    if not isinstance(measures, list) or not measures:
        raise GradnasError(f"{where}: measures must be a non-empty list of: {', '.join(MEASURES)}")
    for m in measures:
        if m not in MEASURES:
            raise GradnasError(f"{where}: unknown measure {m!r}; known: {', '.join(MEASURES)}")
    train = data.get("train")
    if train is not None:
        train = _mapping(train, f"{where}: train")
        if set(train) - {"setting", "set"} or not isinstance(train.get("setting"), str):
            raise GradnasError(f"{where}: train must be {{setting: NAME, set: {{key: value}}}}")
        train = {"setting": train["setting"], "set": _settings(train.get("set"), f"{where}: train.set")}
    needs_training = [m for m in measures if MEASURES[m].training]
    if needs_training and train is None:
        raise GradnasError(f"{where}: measure(s) {', '.join(needs_training)} come from training runs; add "
                           "train: {setting: NAME}")
    budgets = {}
    for b, raw in _mapping(data.get("budgets"), f"{where}: budgets").items():
        if b not in BUDGETS:
            raise GradnasError(f"{where}: budget {b!r} is not one of {', '.join(BUDGETS)}")
        raw = _mapping(raw, f"{where}: budgets.{b}")
        unknown = sorted(set(raw) - _BUDGET_KEYS)
        if unknown:
            raise GradnasError(f"{where}: budgets.{b}: unknown key(s) {', '.join(unknown)}; a budget has "
                               f"{', '.join(sorted(_BUDGET_KEYS))}")
        seeds = raw.get("seeds", [0])
        if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
                or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
            raise GradnasError(f"{where}: budgets.{b}.seeds must be a list of distinct integers, got {seeds!r}")
        per_run = _mapping(raw.get("runs"), f"{where}: budgets.{b}.runs")
        for run in per_run:
            if run not in runs:
                raise GradnasError(f"{where}: budgets.{b}.runs names {run!r}, which is not a run of the spec "
                                   f"({', '.join(runs)})")
        hours = raw.get("hours")
        if hours is not None and (isinstance(hours, bool) or not isinstance(hours, (int, float)) or hours <= 0):
            raise GradnasError(f"{where}: budgets.{b}.hours must be a positive number")
        if raw.get("train") and train is None:
            raise GradnasError(f"{where}: budgets.{b}.train changes a training setting but the spec trains nothing")
        budgets[b] = Budget(b, tuple(seeds), _settings(raw.get("set"), f"{where}: budgets.{b}.set"),
                            {r: _settings(s, f"{where}: budgets.{b}.runs.{r}") for r, s in per_run.items()},
                            _settings(raw.get("train"), f"{where}: budgets.{b}.train"),
                            _text(raw.get("note"), f"{where}: budgets.{b}.note"),
                            None if hours is None else float(hours))
    if not budgets:
        raise GradnasError(f"{where}: budgets is empty; give at least one of {', '.join(BUDGETS)}")
    paper_values = {}
    for run, values in _mapping(data.get("paper_values"), f"{where}: paper_values").items():
        if run not in runs:
            raise GradnasError(f"{where}: paper_values names {run!r}, which is not a run of the spec")
        values = _mapping(values, f"{where}: paper_values.{run}")
        for m in values:
            if m not in measures:
                raise GradnasError(f"{where}: paper_values.{run}.{m}: {m!r} is not among the spec's measures")
        paper_values[run] = {m: str(v) for m, v in values.items()}
    expect = []
    for i, e in enumerate(data.get("expect") or []):
        e = _mapping(e, f"{where}: expect[{i}]")
        order = e.get("order")
        if e.get("measure") not in measures:
            raise GradnasError(f"{where}: expect[{i}].measure must be one of the spec's measures")
        if not isinstance(order, list) or len(order) < 2 or any(r not in runs for r in order):
            raise GradnasError(f"{where}: expect[{i}].order must list two or more of the spec's runs")
        expect.append(Expectation(e["measure"], tuple(order), bool(e.get("higher_first", True))))
    return Spec(name=name, title=_text(data.get("title"), f"{where}: title", required=True),
                paper=_text(data.get("paper"), f"{where}: paper", required=True),
                claim=_text(data.get("claim"), f"{where}: claim"),
                base=_text(data.get("base"), f"{where}: base", required=True), runs=runs,
                measures=tuple(measures), budgets=budgets, train=train, paper_values=paper_values,
                expect=tuple(expect), run_reports=bool(data.get("run_reports", False)),
                notes=_text(data.get("notes"), f"{where}: notes"), path=path)
