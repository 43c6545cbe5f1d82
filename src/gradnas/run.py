"""The run harness: one run folder layout and one loop for searches, PVLL-NAS and training runs.

A *job* is what the harness drives (a search algorithm, ``gradnas.search.algorithm.SearchAlgorithm``, or the
trainer of ``gradnas.train.loop``). It counts *units* of work (epochs, or PVLL rounds) and implements

* ``unit`` (the name of a unit: "epoch", "round") and ``units()`` (how many the run has),
* ``run_unit(index, run) -> record``: one unit, 0-based; the record becomes that unit's metrics line,
* ``state_dict()`` / ``load_state_dict(state)``: everything besides the unit count that a resume needs,
* ``summary(done, finished) -> dict``, ``progress_line(record) -> str | None``, and optionally
  ``start(run)`` / ``end(run)`` (progress bars), ``nan_fix`` / ``nan_context`` (how a NaN error reads).

The harness owns everything around the units, once for every kind of run: the run folder (its file names,
preparing it, the resolved config, JSON and metrics writing, dropping metrics lines past the checkpoint on
resume), atomic checkpoints and resume (with the config-conflict check), the callbacks (``gradnas.callbacks``)
and their checkpointed state, stop requests, SIGINT / SIGTERM (finish the step in flight, checkpoint, raise
:class:`~gradnas.signals.Interrupted`), the NaN guard and the summary. Under torchrun only rank 0 writes.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from gradnas import distributed
from gradnas.callbacks import Callback, MetricsWriter, build_callbacks
from gradnas.checkpoint import keep_metrics_until, metrics_until, resume_point, save_checkpoint
from gradnas.config import resume_conflicts
from gradnas.errors import GradnasError
from gradnas.signals import Interrupted, StopOnSignal

# The run folder's files (searches and training runs share the names; see each harness for what it writes).
CONFIG_FILE, SPLIT_FILE, METRICS_FILE = "config.yaml", "split.json", "metrics.jsonl"
CHECKPOINT_FILE, GENOTYPE_FILE, SUMMARY_FILE = "checkpoint.pt", "genotype.json", "summary.json"
NETWORK_FILE, BEST_GENOTYPE_FILE = "network.json", "best-genotype.json"


class CheckpointMismatch(Exception):
    """Raised by a job's ``load_state_dict`` for a checkpoint that cannot be its own (the message says why,
    e.g. 'stops at step 9 of an epoch of 4 steps')."""


def write_json(path: str | os.PathLike, obj, *, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON atomically (a temporary file renamed over the old one)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=indent) + "\n")
    os.replace(tmp, path)


class RunFolder:
    """A run folder: where each file is, and every write to it (atomic where a crash could tear a file)."""

    def __init__(self, path: str | os.PathLike, *, command: str, holds: str):
        self.path = Path(path)
        self.command = command  # the CLI command that continues it: search | train
        self.holds = holds      # what it holds, for messages: "a search" | "a training run"

    def file(self, name: str) -> Path:
        return self.path / name

    def prepare(self, config: dict, *, resume: bool) -> None:
        """Make the folder (refusing one we cannot write) and, for a new run, refuse a folder that already holds
        a run, then write the resolved config and an empty metrics file."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise GradnasError(f"cannot write to the run folder {self.path} ({exc.strerror}); choose another --out")
        if resume:
            return
        if self.file(CHECKPOINT_FILE).exists():
            raise GradnasError(f"{self.path} already holds {self.holds}; continue it with `gradnas {self.command} "
                               f"--resume {self.path}` or choose another --out")
        self.write_config(config)
        self.file(METRICS_FILE).write_text("")

    def write_config(self, config: dict) -> None:
        self.file(CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))

    def write_json(self, name: str, obj, *, indent: int | None = 2) -> None:
        write_json(self.file(name), obj, indent=indent)

    def read_json(self, name: str):
        return json.loads(self.file(name).read_text())

    def append_metrics(self, record: dict) -> None:
        with open(self.file(METRICS_FILE), "a") as f:
            f.write(json.dumps(record) + "\n")

    def metrics_until(self, unit: int) -> list:
        """The metrics records of units up to ``unit`` (a checkpoint's; torn lines skipped)."""
        return metrics_until(self.file(METRICS_FILE), unit)

    def keep_metrics_until(self, unit: int) -> None:
        keep_metrics_until(self.file(METRICS_FILE), unit)

    def save_checkpoint(self, state: dict) -> None:
        save_checkpoint(state, self.file(CHECKPOINT_FILE))

    def resume_point(self, *, unit: str, map_location, main: bool) -> dict | None:
        return resume_point(self.path, unit=unit, map_location=map_location, main=main, checkpoint=CHECKPOINT_FILE,
                            metrics=METRICS_FILE, config=CONFIG_FILE)


class Harness:
    """What every run holds around its job: folder, callbacks, checkpoints, signals, summary.

    Subclasses (``gradnas.search.loop.Search``, ``gradnas.train.loop.Training``) build the job and call
    :meth:`_attach`; :meth:`run` executes the remaining units."""

    command = "search"          # the CLI command (messages)
    holds = "a search"          # what the folder holds (messages)
    noun = "search"             # "does not match this <noun>"
    config_class: type = None   # the config class (resume re-reads the saved config through it)

    def __init__(self, cfg, out_dir, *, progress: bool = True):
        self.cfg = cfg
        self.progress = progress
        self.folder = RunFolder(out_dir, command=self.command, holds=self.holds)
        self.world = distributed.world()
        self.job = None
        self.callbacks: list[Callback] = []
        self.done = 0                 # units finished (and checkpointed)
        self.stop: dict | None = None  # the stop a callback requested: {"epoch", "rule", "value", "reason"}
        self.record: dict | None = None  # the record of the unit being finished (callbacks fill it)
        self.saved_config: dict | None = None   # on resume: the checkpoint's config, as saved
        self.resumed_records: list = []          # on resume: the metrics records up to the checkpoint
        self._guard = StopOnSignal(False)

    # -- what callbacks and jobs see
    @property
    def out(self) -> Path:
        return self.folder.path

    @property
    def is_main(self) -> bool:
        return self.world.is_main

    @property
    def epoch(self) -> int:
        """Units done (epochs, or PVLL rounds: metrics lines count both as ``epoch``)."""
        return self.done

    @property
    def step(self) -> int:
        """Steps done in the next unit by a mid-unit checkpoint (0 at a unit boundary)."""
        return getattr(self.job, "step", 0)

    @property
    def model(self):
        return self.job.model

    def callback(self, cls):
        """The first callback of this run that is an instance of ``cls``, or None."""
        return next((c for c in self.callbacks if isinstance(c, cls)), None)

    def request_stop(self, reason: str, *, rule: str, value=None) -> None:
        """End the run after the unit being finished (called from ``on_epoch_end``): the stop goes into that
        unit's record and the summary, and the run counts as finished. The first request wins."""
        if self.stop is not None:
            return
        self.stop = {"epoch": self.done, "rule": rule, "value": value, "reason": reason}
        if self.record is not None:
            self.record["stop"] = self.stop

    @property
    def signal_requested(self) -> bool:
        """Whether SIGINT / SIGTERM asked the run to stop (jobs check it after every step)."""
        return self._guard.requested is not None

    def step_end(self, index: int, step: int, stats: dict) -> None:
        """Called by the job after step ``step`` of unit ``index``: the callbacks' ``on_step_end``."""
        for cb in self.callbacks:
            cb.on_step_end(self, index, step, stats)

    def check_finite(self, stats: dict, index: int, step: int) -> None:
        """The NaN guard of a step's losses (``train_loss`` / ``val_loss``)."""
        for key in ("train_loss", "val_loss"):
            if key in stats and not math.isfinite(stats[key]):
                raise self.nan_error(index, f"{'training' if key == 'train_loss' else 'architecture'} (step {step})")

    def nan_error(self, index: int, where: str) -> GradnasError:
        unit = self.job.unit
        last = (f"the last good checkpoint ({unit} {self.done}) is in {self.out}" if self.done else
                f"no {unit} had finished, so there is no checkpoint")
        return GradnasError(f"the {where} loss became NaN/inf in {unit} {index + 1}{getattr(self.job, 'nan_context', '')}; "
                            f"{last}. {self.job.nan_fix}")

    def stop_mid_unit(self, index: int, step: int, steps: int) -> None:
        """Checkpoint the job as it is, ``step`` steps into unit ``index`` (the job has set its partial state),
        and raise Interrupted with the resume command."""
        if self.is_main:
            self.folder.save_checkpoint(self.state_dict())
        raise Interrupted(f"stopped by {self._guard.name} in {self.job.unit} {index + 1}/{self.job.units()} after step "
                          f"{step}/{steps}; a checkpoint of that step is saved. Continue with:\n"
                          f"  gradnas {self.command} --resume {self.out}", signum=self._guard.requested)

    # -- building
    def _attach(self, job, builtin, callbacks, *, resume: bool, device) -> None:
        """Attach the job and the callbacks (the job's own, those the config names, those passed in, then the
        metrics writer), and on resume load the checkpoint into all of them."""
        self.job = job
        callbacks = [*builtin, *build_callbacks(self.cfg.callbacks, self.cfg), *callbacks]
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise GradnasError(f"callbacks must be gradnas.callbacks.Callback instances, got {type(cb).__name__}")
        self.callbacks = [*callbacks, MetricsWriter()]
        keys = [cb.key() for cb in self.callbacks if cb.state_dict() is not None]
        taken = {"format", "config", job.unit, *job.state_dict()}  # the checkpoint's own keys
        clash = sorted({k for k in keys if keys.count(k) > 1 or k in taken})
        if clash:
            raise GradnasError(f"callback state key(s) {', '.join(clash)} clash with another callback's or with the "
                               "checkpoint's own keys; give the callback another state_key")
        state = self.folder.resume_point(unit=job.unit, map_location=device, main=self.is_main) if resume else None
        if state is not None:
            self._load(state)

    def state_dict(self) -> dict:
        """One state dict per checkpoint: config, units done, the job's state and each callback's."""
        state = {"config": self.cfg.to_dict(), self.job.unit: self.done, **self.job.state_dict()}
        for cb in self.callbacks:
            cb_state = cb.state_dict()
            if cb_state is not None:
                state[cb.key()] = cb_state
        return state

    def _load(self, state: dict) -> None:
        self.saved_config = state.get("config")
        self._check_same_config(state)
        try:
            self.job.load_state_dict(state)
            self.done = int(state[self.job.unit])
        except CheckpointMismatch as exc:
            raise GradnasError(f"checkpoint in {self.out} {exc}; it does not match this {self.noun}, start a new "
                               "--out") from None
        except (KeyError, RuntimeError, ValueError) as exc:
            raise GradnasError(f"checkpoint in {self.out} does not match this {self.noun} "
                               f"({str(exc).splitlines()[0]}); start a new --out") from None
        # Metrics lines past the checkpoint belong to a unit that will run again.
        self.resumed_records = self.folder.metrics_until(self.done)  # every rank: callbacks may replay them
        if self.is_main:
            self.folder.keep_metrics_until(self.done)
        for cb in self.callbacks:
            cb.on_resume(self, state.get(cb.key()))
        if self.is_main and self.done < self.job.units() and self.folder.file(SUMMARY_FILE).exists():
            self.folder.file(SUMMARY_FILE).unlink()  # continued (e.g. past a stop): no longer finished

    def _check_same_config(self, state: dict) -> None:
        # Read back through the config class: a key the checkpoint's gradnas did not have yet means its default.
        diff = resume_conflicts(self.config_class.from_dict(state["config"]).to_dict(), self.cfg.to_dict())
        if diff:
            key, saved, now = diff[0]
            raise GradnasError(f"the checkpoint in {self.out} was written with another config ({key}: {saved!r} "
                               f"there, {now!r} now); resume without changing settings or start a new --out")

    # -- the loop
    def run(self, *, stop_after: int | None = None, stop_on_signal: bool = False) -> dict:
        """Run the remaining units; ``stop_after`` ends early after that many (as a crash would).

        With ``stop_on_signal`` (the CLI's way) a SIGINT or SIGTERM lets the step in flight finish, writes a
        checkpoint of that point (mid-unit where the job supports it) and raises
        :class:`gradnas.signals.Interrupted`. (Only on one process: under torchrun the signal stops at once and
        the run resumes from its last unit-end checkpoint.)"""
        with StopOnSignal(stop_on_signal and self.world.size == 1) as guard:
            self._guard = guard
            try:
                return self._run(stop_after)
            finally:
                self._guard = StopOnSignal(False)
                getattr(self.job, "end", lambda run: None)(self)

    def _run(self, stop_after) -> dict:
        job, total = self.job, self.job.units()
        for cb in self.callbacks:
            cb.on_start(self)
        getattr(job, "start", lambda run: None)(self)
        while self.done < total and self.stop is None:
            if stop_after is not None and self.done >= stop_after:
                break
            index = self.done
            before = {}
            for cb in self.callbacks:
                before.update(cb.on_epoch_start(self, index) or {})
            record = job.run_unit(index, self)
            record.update(before)
            self.done = index + 1
            self.record = record
            for cb in self.callbacks:
                cb.on_epoch_end(self, record)
            self.record = None
            if self.is_main:
                self.folder.save_checkpoint(self.state_dict())
                if self.progress:
                    line = job.progress_line(record)
                    if line:
                        tqdm.write(line)
                    if self.stop is not None:
                        tqdm.write(f"stopping after {job.unit} {self.done}/{total}: {self.stop['reason']}")
            if self._guard.requested and self.done < total and self.stop is None:  # arrived after the last step
                raise Interrupted(f"stopped by {self._guard.name} after {job.unit} {self.done}/{total}; its checkpoint "
                                  f"is saved. Continue with:\n  gradnas {self.command} --resume {self.out}",
                                  signum=self._guard.requested)
        finished = self.done >= total or self.stop is not None
        summary = job.summary(done=self.done, finished=finished)
        summary["run_dir"] = str(self.out)
        if self.stop is not None:
            summary["stop"] = self.stop
        for cb in self.callbacks:
            cb.on_end(self, summary)
        if finished and self.is_main:
            self.folder.write_json(SUMMARY_FILE, summary, indent=None)
        return summary


def set_threads(threads: int | None) -> None:
    """CPU threads for this process (None: torch's default)."""
    if threads:
        torch.set_num_threads(threads)
