"""The epoch-end extras of a search, as callbacks (``gradnas.callbacks``) with their own checkpointed state.

* :class:`TemperatureSchedule`: the relaxation's per-epoch schedule (gumbel: ``tau``, and its noise stream
  re-seeded from (seed, epoch), so a resumed search samples what an uninterrupted one did).
* :class:`CollapseWatch`: ``non_learnable_share`` of each epoch's genotype, the collapse warning and the
  single-level paper's lr rule (section 4.1.4: the weight lr times ``collapse.lr_factor`` after an epoch above
  the threshold, a scale on top of the cosine schedule).
* :class:`AlphaWatch`: a warning (once) and ``alpha_max_abs`` in the record when the architecture parameters
  leave a sane range (|alpha| > 1e3), as an architecture lr of 1e6 makes them.
* :class:`ModelSizes`: MiLeNAS's model sizes per epoch, the best genotype per size in ``sizes/`` and the stop
  rules (``gradnas.search.sizes``).
* :class:`BenchmarkLookup`: the tabular benchmark's figures for the derived cell (every unit and the summary)
  where the space has one (NAS-Bench-201).
* :class:`ProbeRunner`: the optional probes (``gradnas.search.probes``).
* :class:`GenotypeWriter`: the derived genotype in genotype.json after every unit, and the best unit's genotype
  (by validation accuracy) in best-genotype.json (``gradnas.search.best``).

The callbacks read the job through ``run.job``: ``model``, ``last_genotype`` (the unit's derived genotype) and,
for the per-batch methods' loop (``gradnas.search.gradient.GradientSearch``), ``method`` and ``set_lr_scale``.
"""
from __future__ import annotations

import functools
import logging

from gradnas.benchmark import benchmark_for
from gradnas.callbacks import Callback
from gradnas.config import SearchConfig
from gradnas.errors import GradnasError
from gradnas.run import BEST_GENOTYPE_FILE, GENOTYPE_FILE, write_json
from gradnas.search.best import BestTracker
from gradnas.search.probes import Probes
from gradnas.search.sizes import SizeTracker
from gradnas.space.genotype import non_learnable_share, save_genotype

logger = logging.getLogger(__name__)


class TemperatureSchedule(Callback):
    """Before every epoch: the relaxation's ``start_epoch`` (schedules, per-epoch random streams); what it
    returns (gumbel: ``tau``) goes into the epoch's record."""

    def on_epoch_start(self, run, index):
        cfg = run.cfg
        return run.job.model.relaxation.start_epoch(epoch=index, epochs=cfg.epochs, seed=cfg.seed)


def describe_collapse(collapse: dict) -> str:
    """One plain sentence on a summary's ``collapse`` entry: the last cell's parameter-free share and, when it
    ends above the threshold, that the search collapsed and what to try."""
    cells = {"normal": "normal cell", "all": "cells"}.get(collapse.get("cells"), "cell")
    share, threshold = collapse["share"], collapse["threshold"]
    text = f"parameter-free ops (none, pooling, skip_connect) in the derived {cells}: {share:.0%}"
    if not collapse.get("collapsed"):
        return text + f", within collapse.threshold {threshold:g}"
    return (text + f", above collapse.threshold {threshold:g} (on {collapse.get('epochs_above', '?')} epoch(s)): "
            "the search collapsed toward parameter-free ops; try more weight steps (a smaller batch, more epochs "
            "or images), the sigmoid relaxation, or --lr-decay-on-collapse")


class CollapseWatch(Callback):
    """After every epoch (``collapse`` section): the share of parameter-free ops in its genotype, a warning when
    it rises above the threshold, and with ``lr_decay`` the lr rule (at most ``max_decays`` times)."""

    state_key = "collapse"

    def __init__(self, config):
        self.config = config
        self.lr_scale, self.lr_decays, self.last_share, self.epochs_above = 1.0, 0, None, 0

    def on_epoch_end(self, run, record):
        cc = self.config
        share = non_learnable_share(run.job.last_genotype, cc.cells)
        record["non_learnable_share"] = share
        above = share > cc.threshold
        warn = above and cc.warn and (self.last_share is None or self.last_share <= cc.threshold)
        if warn:
            record["collapse_warning"] = True
        if warn and run.is_main:  # said once under torchrun
            hint = ("" if cc.lr_decay else "; the single-level paper lowers the weight lr then "
                    "(collapse.lr_decay, --lr-decay-on-collapse)")
            two = hasattr(run.job.last_genotype, "normal")  # a normal and a reduction cell (DARTS)
            which = "cell's" if not two else "normal cell's" if cc.cells == "normal" else "cells'"
            logger.warning(f"after epoch {run.done}, {share:.0%} of the derived {which} ops are "
                           f"parameter-free (none, pooling, skip_connect), above collapse.threshold "
                           f"{cc.threshold:g}: the search may be collapsing{hint}")
        self.last_share = share
        self.epochs_above += int(above)
        if cc.lr_decay:
            if above and self.lr_decays < cc.max_decays:
                self.lr_scale *= cc.lr_factor
                self.lr_decays += 1
                record["lr_decay"] = {"count": self.lr_decays, "scale": self.lr_scale,
                                      "next_lr": run.job.set_lr_scale(self.lr_scale)}
            record["lr_scale"] = self.lr_scale

    def on_end(self, run, summary):
        """The summary says plainly what the last cell is made of: its parameter-free share (of the cells
        ``collapse.cells`` counts), the threshold, whether it ends above it and on how many epochs it was."""
        if self.last_share is not None:
            cc = self.config
            summary["collapse"] = {"share": self.last_share, "cells": cc.cells, "threshold": cc.threshold,
                                   "collapsed": self.last_share > cc.threshold, "epochs_above": self.epochs_above}

    def state_dict(self):
        return {"lr_scale": self.lr_scale, "lr_decays": self.lr_decays, "last_share": self.last_share,
                "epochs_above": self.epochs_above}

    def on_resume(self, run, state):
        state = state or {}  # absent in checkpoints from before the collapse watch
        self.lr_scale = float(state.get("lr_scale", 1.0))
        self.lr_decays = int(state.get("lr_decays", 0))
        self.last_share = state.get("last_share")
        self.epochs_above = int(state.get("epochs_above", 0))
        run.job.lr_scale = self.lr_scale  # the scale the restored optimizer's lr already carries


class AlphaWatch(Callback):
    """After every unit: the largest |alpha| of the architecture parameters (``tensors()``: the supernet's alphas,
    or PVLL's A). Beyond ``limit`` the softmax over them is saturated (an architecture lr of 1e6 or a lambda of
    1e30 gets there in a step) and the search no longer explores: one warning per run, on the main process, and
    ``alpha_max_abs`` in the record of every unit beyond the limit (``alpha_range_warning`` on the one that
    warned). Within the limit the record is left as it is, so a sane search writes the lines it always wrote."""

    state_key = "alpha_watch"
    LIMIT = 1e3

    def __init__(self, tensors, *, hint: str, limit: float = LIMIT):
        self.tensors, self.hint, self.limit = tensors, hint, float(limit)
        self.warned = False

    @classmethod
    def for_supernet(cls) -> "AlphaWatch":
        """The watch on the alphas of the supernet a per-batch method's loop optimizes (``run.job.model``)."""
        return cls(None, hint="lower arch_optim.lr (and, for milenas, lambda)")

    def largest(self, run) -> float:
        tensors = self.tensors() if self.tensors is not None else run.job.model.arch_parameters()
        return max((float(t.detach().abs().max()) for t in tensors if t.numel()), default=0.0)

    def on_epoch_end(self, run, record):
        biggest = self.largest(run)
        if not biggest > self.limit:  # NaN too: the run's NaN check speaks for that
            return
        record["alpha_max_abs"] = biggest
        if not self.warned:
            self.warned = True
            record["alpha_range_warning"] = True
            if run.is_main:
                logger.warning(f"after {run.job.unit} {run.done}, the architecture parameters reach "
                               f"|alpha| = {biggest:.3g}, beyond {self.limit:g}: their softmax is saturated and the "
                               f"search has stopped exploring; {self.hint}")

    def state_dict(self):
        return {"warned": self.warned}

    def load_state_dict(self, state):
        self.warned = bool((state or {}).get("warned", False))  # absent in checkpoints from before the watch


class ModelSizes(Callback):
    """MiLeNAS 3.3 (``stop`` section): conv counts and evaluation-network parameters of every epoch's genotype,
    the best genotype per size in the run folder, and the stop rules, which end the search through
    ``run.request_stop``. A stopped search resumes only without its rule."""

    state_key = "sizes"

    def __init__(self, stop):
        self.tracker = SizeTracker(stop)

    def on_epoch_end(self, run, record):
        figures = self.tracker.update(run.done, run.job.last_genotype, record["valid_acc"])
        stop = figures.pop("stop", None)
        record.update(figures)
        if stop is not None:
            run.request_stop(stop["reason"], rule=stop["rule"], value=stop["value"])
        if run.is_main:
            self.tracker.write(run.out)

    def state_dict(self):
        return self.tracker.state_dict()

    def on_resume(self, run, state):
        """The tracker's state (rebuilt from the metrics lines for a checkpoint from before it existed), the size
        files rewritten to match it, and the stop: a stopped search resumes only without its rule."""
        tracker = self.tracker
        if state is not None:
            tracker.load_state_dict(state)
        else:
            tracker.replay(run.resumed_records)
        if tracker.stopped is not None:
            stop = tracker.stopped
            if tracker.stop_still_set():
                raise GradnasError(
                    f"the search in {run.out} stopped after epoch {stop['epoch']} of {run.cfg.epochs}: "
                    f"{stop['reason']}; it is finished. To continue it past the stop, resume without that rule: "
                    f"gradnas search --resume {run.out} --set stop.{stop['rule']}=null")
            tracker.stopped = None  # continuing past the stop: the run is no longer finished
        if run.is_main:
            tracker.write(run.out, everything=True)
            if run.cfg.stop != SearchConfig.from_dict(run.saved_config).stop:
                run.folder.write_config(run.cfg.to_dict())  # config.yaml holds the rules the search now follows


class BenchmarkLookup(Callback):
    """The space's tabular benchmark (NAS-Bench-201: test accuracy on cifar10, cifar100, imagenet16-120) for the
    derived cell of every unit and of the summary, under the benchmark's key."""

    def __init__(self, metrics_key: str, lookup):
        self.metrics_key, self.lookup = metrics_key, lookup

    @classmethod
    def for_space(cls, space: str) -> list:
        """[the callback] for a space with a benchmark, else []."""
        bench = benchmark_for(space)
        return [cls(*bench)] if bench else []

    def on_epoch_end(self, run, record):
        record[self.metrics_key] = self.lookup(run.job.last_genotype)

    def on_end(self, run, summary):
        summary[self.metrics_key] = self.lookup(run.job.genotype())


class ProbeRunner(Callback):
    """The per-epoch probes that are on (``probes`` section); they never change the search. The probe objects
    are built with the search (so a bad probe edge fails before any epoch) and follow the method that runs."""

    def __init__(self, probes: Probes):
        self.probes = probes

    @classmethod
    def for_search(cls, search) -> list:
        cfg = search.cfg
        if not cfg.probes.enabled:
            return []
        # The gap probe evaluates the weight half exactly as the validation evaluates the architecture half.
        same_as_validation = functools.partial(search.evaluate_images, max_batches=cfg.data.eval_batches)
        w_idx = search.split.weight_idx
        return [cls(Probes(cfg.probes, model=search.model, method=search.method, batches=search.batches,
                           train_x=search.train_x[w_idx], train_y=search.train_y[w_idx],
                           evaluate=same_as_validation, device=search.device))]

    def on_epoch_end(self, run, record):
        self.probes.method = run.job.method  # the probes measure the objective of the method that runs
        record.update(self.probes.after_epoch(run.done - 1, record))


class GenotypeWriter(Callback):
    """genotype.json: the derived genotype after every unit; best-genotype.json: the genotype of the unit with the
    best validation accuracy so far, ties to the earlier unit (what the job's ``validated(record)`` says a unit
    measured: see ``gradnas.search.best``). The best is checkpointed, so a resumed search ends with the file an
    uninterrupted one writes. Files are written by the main process."""

    state_key = "best_genotype"

    def __init__(self):
        self.tracker = BestTracker()

    def on_epoch_end(self, run, record):
        measured = run.job.validated(record)
        changed = False
        if measured is not None:
            genotype, acc, by = measured
            changed = self.tracker.offer(genotype, epoch=record["epoch"], acc=acc, by=by)
        if run.is_main:
            save_genotype(run.job.last_genotype, run.folder.file(GENOTYPE_FILE))
            if changed:
                self._write(run)

    def _write(self, run):
        content = self.tracker.content(run.job.unit)
        path = run.folder.file(BEST_GENOTYPE_FILE)
        if content is not None:
            write_json(path, content)
        elif path.exists():
            path.unlink()

    def state_dict(self):
        return self.tracker.state_dict()

    def on_resume(self, run, state):
        """The checkpointed best; for a checkpoint from before it, chosen again from the metrics lines kept."""
        if state is not None:
            self.tracker.load_state_dict(state)
        else:
            self.tracker.replay(run.resumed_records)
        if run.is_main:
            self._write(run)  # the file may hold a unit past the checkpoint
