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

import contextlib
import errno
import fcntl
import json
import logging
import math
import os
import shutil
from pathlib import Path

import torch
import yaml

from gradnas import distributed
from gradnas.callbacks import Callback, MetricsWriter, build_callbacks
from gradnas.checkpoint import OLD_FORMATS, keep_metrics_until, metrics_until, resume_point, save_checkpoint
from gradnas.config import resume_conflicts
from gradnas.errors import GradnasError
from gradnas.signals import Interrupted, StopAtOnce, StopOnSignal

# The run folder's files (searches and training runs share the names; see each harness for what it writes).
CONFIG_FILE, SPLIT_FILE, METRICS_FILE = "config.yaml", "split.json", "metrics.jsonl"
CHECKPOINT_FILE, GENOTYPE_FILE, SUMMARY_FILE = "checkpoint.pt", "genotype.json", "summary.json"
NETWORK_FILE, BEST_GENOTYPE_FILE = "network.json", "best-genotype.json"
logger = logging.getLogger(__name__)
LOCK_FILE = ".lock"  # held (flock) by the one process writing the folder; it holds that process's pid


class CheckpointMismatch(Exception):
    """Raised by a job's ``load_state_dict`` for a checkpoint that cannot be its own (the message says why,
    e.g. 'stops at step 9 of an epoch of 4 steps')."""


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` atomically (a temporary file renamed over the old one: a reader never sees half of it)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json(path: str | os.PathLike, obj, *, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON atomically (:func:`write_text`)."""
    write_text(path, json.dumps(obj, indent=indent) + "\n")


def read_damaged_json(path: str | os.PathLike, *, fix: str):
    """The JSON in ``path`` (a file a resume depends on), or one error naming the file, what is wrong with it (not
    UTF-8 text, not valid JSON, nested past Python's stack) and ``fix``."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        why = "it is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else "it is not valid JSON"
        raise GradnasError(f"{path} is damaged ({why}); {fix}") from None


class RunFolder:
    """A run folder: where each file is, and every write to it (atomic where a crash could tear a file)."""

    def __init__(self, path: str | os.PathLike, *, command: str, holds: str):
        self.path = Path(path)
        self.command = command  # the CLI command that continues it: search | train
        self.holds = holds      # what it holds, for messages: "a search" | "a training run"
        self._lock = None       # the open lock file while this process holds the folder
        self._found: set = set()  # the folder's entries when the lock was taken
        self._made_folder = False  # whether prepare() made the folder

    def file(self, name: str) -> Path:
        return self.path / name

    def prepare(self, config: dict, *, resume: bool) -> None:
        """Make the folder (refusing one we cannot write), take its lock (:meth:`lock`) before anything is written
        and, for a new run, refuse a folder that already holds a run, then write the resolved config and an empty
        metrics file."""
        try:
            existed = self.path.is_dir()
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GradnasError(f"cannot write to the run folder {self.path} ({exc.strerror}); choose another --out")
        self._made_folder = not existed
        self.lock()
        if resume:
            return
        if self.file(CHECKPOINT_FILE).exists():
            holds, command = folder_kind(self.path) or (self.holds, self.command)
            also = (f", train its genotype with `gradnas train --genotype {self.path} --out NEW_DIR`"
                    if command == "search" and self.command == "train" else "")
            raise GradnasError(f"{self.path} already holds {holds}; continue it with `gradnas {command} "
                               f"--resume {self.path}`{also} or choose another --out")
        self.write_config(config)
        self.file(METRICS_FILE).write_text("")

    # -- the lock: one writer per folder
    def lock(self) -> None:
        """Take the folder's exclusive advisory lock (``flock`` on :data:`LOCK_FILE`) for the life of this process's
        run, or refuse with the holder's pid. The OS lets go of it when the process ends, however it ends (SIGKILL
        included), so a dead run never leaves its folder locked. Taking it again while held is a no-op. What was
        in the folder when the lock was taken is remembered, for :meth:`remove_new_files`."""
        if self._lock is not None:
            return
        path = self.file(LOCK_FILE)
        lock_existed = path.exists()
        while True:
            try:
                f = open(path, "a+")
            except OSError as exc:
                raise GradnasError(f"cannot write to the run folder {self.path} ({exc.strerror}); choose another "
                                   "--out") from None
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                f.seek(0)
                pid = f.read().strip()
                f.close()
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise GradnasError(f"cannot lock the run folder {self.path} ({exc.strerror}); choose another "
                                       "--out on a local disk") from None
                who = f"pid {pid}" if pid.isdigit() else "pid unknown"
                if pid == str(os.getpid()):
                    who += ", this very process: another run object of it still holds the folder"
                raise GradnasError(f"{self.path} is in use by another gradnas run ({who}); wait until it ends, "
                                   "or choose another --out") from None
            try:  # the file may have been removed (a failed start cleaning up) between open and flock
                same = os.path.samestat(os.fstat(f.fileno()), os.stat(path))
            except OSError:
                same = False
            if same:
                break
            f.close()
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._lock = f
        self._found = {p.name for p in self.path.iterdir()}
        if not lock_existed:
            self._found.discard(LOCK_FILE)  # made by this start

    def unlock(self) -> None:
        """Let go of the lock (the lock file stays: removing it could let two writers lock two different files)."""
        f, self._lock = self._lock, None
        if f is not None:
            f.close()

    def remove_new_files(self) -> None:
        """After a failed start: remove what this start put into the folder since it took the lock (never what
        was there before; the lock file too when this start made it: a process that opened it meanwhile finds it
        gone after its flock and tries again), and the folder itself when this start made it and it is empty."""
        if self._lock is None:
            return  # not ours: another run may be writing there
        for name in sorted({p.name for p in self.path.iterdir()} - self._found):
            path = self.path / name
            with contextlib.suppress(OSError):
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        if self._made_folder:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only if empty

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


def folder_kind(path) -> tuple[str, str] | None:
    """What a run folder holds, by its config.yaml: ("a search", "search"), ("a training run", "train") or None
    (no readable config)."""
    try:
        return config_kind(yaml.safe_load((Path(path) / CONFIG_FILE).read_text()))
    except (OSError, yaml.YAMLError):
        return None


def config_kind(config) -> tuple[str, str] | None:
    """What kind of run a config dict (a config.yaml's, a checkpoint's) belongs to, as :func:`folder_kind`."""
    if not isinstance(config, dict):
        return None
    if "network" in config:
        return "a training run", "train"
    if "method" in config or "space" in config:  # (a search has a precision too)
        return "a search", "search"
    if "precision" in config:
        return "a training run", "train"
    return None


class Harness:
    """What every run holds around its job: folder, callbacks, checkpoints, signals, summary.

    Subclasses (``gradnas.search.loop.Search``, ``gradnas.train.loop.Training``) build the job and call
    :meth:`_attach`; :meth:`run` executes the remaining units."""

    command = "search"          # the CLI command (messages)
    holds = "a search"          # what the folder holds (messages)
    noun = "search"             # "does not match this <noun>"
    config_class: type = None   # the config class (resume re-reads the saved config through it)

    def __init__(self, cfg, out_dir, *, progress: bool = True, trackers=()):
        self.cfg = cfg
        self.progress = progress
        self.folder = RunFolder(out_dir, command=self.command, holds=self.holds)
        self.world = distributed.world()
        self._trackers = list(trackers)  # gradnas.trackers.build_trackers(cfg), attached before the metrics writer
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
        error = GradnasError(f"the {where} loss became NaN/inf in {unit} {index + 1}"
                             f"{getattr(self.job, 'nan_context', '')}; {last}. {self.job.nan_fix}")
        error.shared = self.world.size == 1  # under torchrun another rank may not have met it: this rank says it
        return error

    def stop_mid_unit(self, index: int, step: int, steps: int) -> None:
        """Checkpoint the job as it is, ``step`` steps into unit ``index`` (the job has set its partial state),
        and raise Interrupted with the resume command."""
        if self.is_main:
            self.folder.save_checkpoint(self.state_dict())
        raise Interrupted(f"stopped by {self._guard.name} in {self.job.unit} {index + 1}/{self.job.units()} after step "
                          f"{step}/{steps}; a checkpoint of that step is saved. Continue with:\n"
                          f"  gradnas {self.command} --resume {self.out}", signum=self._guard.requested)

    def resume_hint(self) -> str:
        """What is saved and the command that continues the run (for a stop without a checkpoint of its own)."""
        unit = self.job.unit
        saved = (f"the last finished {unit} ({self.done}) is saved in {self.out}" if self.done else
                 f"no {unit} had finished, so nothing is saved yet")
        launch = (f"torchrun --nproc_per_node {self.world.size} -m gradnas" if self.world.size > 1 else "gradnas")
        return f"{saved}. Continue with:\n  {launch} {self.command} --resume {self.out}"

    # -- building
    @contextlib.contextmanager
    def starting(self):
        """Wrap a subclass's building: if it fails, remove what this start wrote into the run folder (only files it
        created, and the folder if it made it; see RunFolder.remove_new_files) and let go of the folder's lock."""
        try:
            yield
        except BaseException:
            if self.is_main:
                self.folder.remove_new_files()
            self.folder.unlock()
            raise

    def close(self) -> None:
        """Let go of the run folder (its lock); :meth:`run` does this when it ends."""
        self.folder.unlock()

    def _attach(self, job, builtin, callbacks, *, resume: bool, device) -> None:
        """Attach the job and the callbacks (the job's own, those the config names, those passed in, the
        trackers of the config's ``log``, then the metrics writer), and on resume load the checkpoint into all of them."""
        self.job = job
        callbacks = [*builtin, *build_callbacks(self.cfg.callbacks, self.cfg), *callbacks, *self._trackers]
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

    def _check_schema(self, state: dict) -> None:
        """The checkpoint's own fields (config: a dict of this kind of run, the same settings; units done; step)
        before anything reads them: a crafted or damaged checkpoint is one error, not a traceback or a run of
        epochs -4..3."""
        unit, total = self.job.unit, self.job.units()
        where = f"checkpoint {self.folder.file(CHECKPOINT_FILE)}"
        if not isinstance(state.get("config"), dict):
            raise GradnasError(f"{where} has no config (a dict under 'config'); it was not written by gradnas "
                               "or is damaged: start a new --out")
        kind = config_kind(state["config"])
        if kind is not None and kind[1] != self.command:
            raise GradnasError(f"{where} was written by {kind[0]} (`gradnas {kind[1]}`), not {self.holds}; continue "
                               f"it with `gradnas {kind[1]} --resume {self.out}`")
        try:
            self._check_same_config(state)  # before the counts: another config's checkpoint says so
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise GradnasError(f"checkpoint in {self.out}: its config is damaged ({_first_line(exc)}); start a new "
                               "--out") from None
        done = state.get(unit)
        if type(done) is not int or not 0 <= done <= total:
            raise GradnasError(f"{where}: {unit} {done!r} is not a number of {unit}s done between 0 and {total}; "
                               "the checkpoint is damaged or crafted: start a new --out")
        step = state.get("step", 0)
        if type(step) is not int or step < 0 or (step and done >= total):
            raise GradnasError(f"{where}: step {step!r} is not a step count (an integer >= 0, 0 after the last "
                               f"{unit}); the checkpoint is damaged or crafted: start a new --out")

    def _load(self, state: dict) -> None:
        self._check_schema(state)
        if state.get("format") in OLD_FORMATS and self.is_main:
            logger.warning(f"the checkpoint in {self.out} is of the older format {state['format']!r}, which has "
                           "no checksum, so it is read unverified; the checkpoints this run writes have one")
        self.saved_config = state.get("config")
        try:
            self.job.load_state_dict(state)
            self.done = int(state[self.job.unit])
        except CheckpointMismatch as exc:
            raise GradnasError(f"checkpoint in {self.out} {exc}; it does not match this {self.noun}, start a new "
                               "--out") from None
        except (KeyError, RuntimeError, ValueError, TypeError, IndexError, AttributeError) as exc:
            raise GradnasError(f"checkpoint in {self.out} does not match this {self.noun} "
                               f"({_first_line(exc)}); start a new --out") from None
        # Metrics lines past the checkpoint belong to a unit that will run again.
        self.resumed_records = self.folder.metrics_until(self.done)  # every rank: callbacks may replay them
        if self.is_main:
            self.folder.keep_metrics_until(self.done)
        for cb in self.callbacks:
            try:
                cb.on_resume(self, state.get(cb.key()))
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
                raise GradnasError(f"checkpoint in {self.out}: its {cb.key()!r} entry is damaged or not of this "
                                   f"gradnas ({_first_line(exc)}); start a new --out") from None
        if self.is_main and self.done < self.job.units() and self.folder.file(SUMMARY_FILE).exists():
            self.folder.file(SUMMARY_FILE).unlink()  # continued (e.g. past a stop): no longer finished

    def _check_same_config(self, state: dict) -> None:
        # Read back through the config class: a key the checkpoint's gradnas did not have yet means its default.
        try:
            saved = self.config_class.from_dict(state["config"]).to_dict()
        except GradnasError as exc:
            raise GradnasError(f"checkpoint in {self.out}: its config is not a valid {self.noun} config ({exc}); "
                               "start a new --out") from None
        diff = resume_conflicts(saved, self.cfg.to_dict())
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
        if self.is_main:
            self.folder.lock()  # already held, unless a first run() let go of it
        multi = self.world.size > 1
        with StopOnSignal(stop_on_signal and not multi) as guard, StopAtOnce(stop_on_signal and multi) as at_once:
            self._guard = guard
            try:
                return self._run(stop_after)
            except RuntimeError as exc:
                if not (multi and distributed.is_comm_error(exc)):
                    raise
                at_once.quiet()  # torchrun's SIGTERM to the survivors must not interrupt the message
                message = distributed.lost_message(exc, where=f"in {self.job.unit} {self.done + 1}",
                                                   resume=self.resume_hint())
                error = GradnasError(message)
                error.silent, error.shared = not message, False  # said by the lowest surviving rank
                raise error from None
            finally:
                self._guard = StopOnSignal(False)
                try:
                    getattr(self.job, "end", lambda run: None)(self)
                finally:
                    self.close()

    def _run(self, stop_after) -> dict:
        job, total = self.job, self.job.units()
        logger.debug("%s in %s: %s %d of %d next, on %s (%d process(es)), callbacks: %s", self.command, self.out,
                     job.unit, self.done + 1, total, getattr(job, "device", "?"), self.world.size,
                     ", ".join(type(cb).__name__ for cb in self.callbacks))
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
                        logger.info(line)
                    if self.stop is not None:
                        logger.info(f"stopping after {job.unit} {self.done}/{total}: {self.stop['reason']}")
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; the machine's count where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def check_threads(threads) -> None:
    """Refuse a thread count this machine cannot give (torch crashes with a segfault on --threads 100000):
    at least 1, at most the cores this process may use. Called before the run folder is made."""
    if threads is None:
        return
    cores = available_cores()
    if type(threads) is not int or not 1 <= threads <= cores:
        raise GradnasError(f"--threads {threads!r}: this machine gives this process {cores} CPU core(s); use a number "
                           f"from 1 to {cores}, or leave --threads out to use them all (a resumed run may change "
                           "--threads)")


def set_threads(threads: int | None) -> None:
    """CPU threads for this process (None: torch's default), checked by :func:`check_threads` first."""
    check_threads(threads)
    if threads:
        torch.set_num_threads(threads)
