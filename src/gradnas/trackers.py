"""Experiment trackers: TensorBoard, Weights & Biases, MLflow and a CSV file, as callbacks (gradnas.callbacks).

A run's config lists them (``log: [tensorboard, mlflow]``, `gradnas search|train --log tensorboard,mlflow`)
and its ``tracking`` section sets how often and where (gradnas.config.TrackingConfig). Every tracker logs

* after every epoch (or PVLL round): every number of its metrics record, nested dicts flattened with '/'
  (``edge_weights/normal/2<-0/sep_conv_3x3``); lists and strings are left to metrics.jsonl;
* every ``tracking.every_steps`` steps: the running means since the epoch began, ``step/train_loss``,
  ``step/train_acc`` and, for a search's architecture batches, ``step/valid_loss`` and ``step/valid_acc``;
* at the end: the genotype as text, the cell diagrams (skipped with a warning without Graphviz) and, for a
  search, the edge weights as images.

One x axis for everything: the global step (epoch e ends at step e x steps per epoch), so each tool shows
the per-step and the per-epoch curves on the same axis; metrics.jsonl's ``epoch`` is logged too. Only the main
process logs (rank 0 under torchrun). Each tracker's package is imported only when it is chosen, and a missing
one is one error naming the extra to install, before the run folder is made.

Resume (``--resume``) continues logging into the same tracker run: TensorBoard writes into the same folder
(RUN/tensorboard) and purges the events after the checkpoint's step, MLflow keeps its run id in the
checkpoint and logs into that run again, W&B resumes its run id (kept in the checkpoint too), the CSV file
drops its rows after the checkpoint's step.
"""
from __future__ import annotations

import csv
import importlib
import logging
import math
import os
import secrets
from pathlib import Path

from gradnas.callbacks import Callback
from gradnas.errors import GradnasError

logger = logging.getLogger(__name__)


def flatten_scalars(record: dict, prefix: str = "") -> dict:
    """{name: float} for every number in ``record`` (bools and NaN left out), nested dicts joined with '/'."""
    out = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_scalars(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


def steps_per_unit(job) -> int:
    """Steps in one unit of the job: the batches of a search epoch, the steps of a training epoch; 1 for a job
    without steps (a PVLL round)."""
    batches = getattr(job, "batches", None)
    if batches is not None and hasattr(batches, "__len__"):
        return max(1, len(batches))
    data = getattr(job, "data", None)
    return max(1, int(getattr(data, "steps", 1) or 1))


class Tracker(Callback):
    """What every tracker shares: when to log what (the subclasses say how: :meth:`open`, :meth:`scalars`,
    :meth:`text`, :meth:`image`, :meth:`close`). Only the main process logs."""

    name = ""        # the name in ``log``
    module = ""      # the package it needs
    extra = ""       # the gradnas extra that installs it

    def __init__(self, cfg, images: dict | None = None):
        self.cfg = cfg
        self.tracking = cfg.tracking
        self._images = {} if images is None else images  # shared by a run's trackers: drawn once
        self.active = False
        self.per_unit = 1
        self._sums: dict = {}
        self._count = 0

    @property
    def state_key(self):
        return f"tracker.{self.name}"

    # -- what a tracker implements
    def open(self, run, *, resumed_at: int) -> None:
        """Start (or, ``resumed_at`` > 0, continue after that global step) the tracker's run."""

    def scalars(self, values: dict, step: int) -> None:
        raise NotImplementedError

    def text(self, name: str, text: str, step: int) -> None:
        """A text (the genotype)."""

    def image(self, name: str, path: Path, step: int) -> None:
        """A PNG image."""

    def close(self) -> None:
        """Flush and end the tracker's run."""

    # -- the callback hooks
    def on_start(self, run):
        if not run.is_main:
            return
        self.per_unit = steps_per_unit(run.job)
        try:
            self.open(run, resumed_at=run.done * self.per_unit + run.step)
        except GradnasError:
            raise
        except Exception as exc:  # the tool's own error (a server that cannot be reached, a store it refuses)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise GradnasError(f"--log {self.name}: the tracker could not start ({first}); fix its setting "
                               f"(tracking section) or drop {self.name} from --log") from None
        self.active = True

    def on_epoch_start(self, run, index):
        self._sums, self._count = {}, 0

    def on_step_end(self, run, index, step, stats):
        every = self.tracking.every_steps
        if not (self.active and every):
            return
        sums = self._sums
        for prefix in ("train", "val"):
            n = stats.get(f"{prefix}_n")
            if n:
                sums[f"{prefix}_loss"] = sums.get(f"{prefix}_loss", 0.0) + float(stats[f"{prefix}_loss"]) * n
                if f"{prefix}_correct" in stats:
                    sums[f"{prefix}_correct"] = sums.get(f"{prefix}_correct", 0.0) + float(stats[f"{prefix}_correct"])
                sums[f"{prefix}_n"] = sums.get(f"{prefix}_n", 0) + n
        self._count += 1
        if self._count % every:
            return
        values = {}
        for prefix, shown in (("train", "train"), ("val", "valid")):
            n = sums.get(f"{prefix}_n")
            if n:
                values[f"step/{shown}_loss"] = sums[f"{prefix}_loss"] / n
                if f"{prefix}_correct" in sums:
                    values[f"step/{shown}_acc"] = 100.0 * sums[f"{prefix}_correct"] / n
        if values:
            self.scalars(values, index * self.per_unit + step + 1)

    def on_epoch_end(self, run, record):
        if self.active:
            self.scalars(flatten_scalars(record), int(record["epoch"]) * self.per_unit)

    def on_end(self, run, summary):
        if not self.active:
            return
        step = run.done * self.per_unit
        try:
            genotype = summary.get("genotype")
            if genotype:
                self.text("genotype", str(genotype), step)
            if "images" not in self._images:
                self._images["images"] = end_images(run)
            for name, path in self._images["images"]:
                self.image(name, path, step)
        finally:
            self.close()
            self.active = False


def end_images(run) -> list:
    """[(name, png path)]: the cell diagrams of the run's genotype (as `gradnas draw` draws them) and, for a
    search, the heat map of its last edge weights, drawn into RUN/plots. Without Graphviz the diagrams are
    skipped with a warning."""
    from gradnas.report.cells import draw_genotype
    out = run.out / "plots"
    images = []
    genotype = getattr(run, "genotype", None) or run.job.genotype()  # a training run's, or a search's derived one
    try:
        images += [(p.stem, p) for p in draw_genotype(genotype, out)]
    except GradnasError as exc:
        logger.warning("the trackers get no cell diagram: %s", exc)
    weights = getattr(run.job, "model", None)
    weights = weights.edge_weights() if hasattr(weights, "edge_weights") else None
    if weights:  # a search's supernet (a training network has no edge weights)
        from gradnas.report.plots import plot_edge_heatmap
        images += [(p.stem, p) for p in plot_edge_heatmap(weights, out, title=run.out.name)]
    return images


# ------------------------------------------------------------------------------------------------ the tools

class TensorBoardTracker(Tracker):
    """Event files in RUN/tensorboard (``tensorboard --logdir RUN/tensorboard``)."""

    name, module, extra = "tensorboard", "tensorboard", "tensorboard"

    def open(self, run, *, resumed_at):
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(str(run.out / "tensorboard"), purge_step=resumed_at + 1 if resumed_at else None)

    def scalars(self, values, step):
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def text(self, name, text, step):
        self.writer.add_text(name, text, step)

    def image(self, name, path, step):
        import numpy as np
        from PIL import Image
        with Image.open(path) as img:
            self.writer.add_image(f"images/{name}", np.asarray(img.convert("RGB")), step, dataformats="HWC")

    def close(self):
        self.writer.close()


_MLFLOW_NAME = str.maketrans({c: "_" for c in "<>:*?|\"'\\"})


class MLflowTracker(Tracker):
    """An MLflow run in experiment ``tracking.experiment`` at ``tracking.mlflow_uri`` (default: a file store in
    RUN/mlruns); its id is checkpointed, so a resumed run logs into it again. MLflow's metric names allow letters,
    digits and _-./ and space: other characters become '_' (edge 2<-0: 2_-0)."""

    name, module, extra = "mlflow", "mlflow", "mlflow"

    def __init__(self, cfg, images=None):
        super().__init__(cfg, images)
        self.run_id = None

    def open(self, run, *, resumed_at):
        from mlflow.tracking import MlflowClient
        uri = self.tracking.mlflow_uri
        if uri is None:  # MLflow 3 keeps its file store only on request; it is what a run folder can hold
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (run.out / "mlruns").resolve().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        if self.run_id is None:
            experiment = self.client.get_experiment_by_name(self.tracking.experiment)
            exp_id = (experiment.experiment_id if experiment is not None
                      else self.client.create_experiment(self.tracking.experiment))
            created = self.client.create_run(exp_id, run_name=run.out.name, tags={"gradnas.run_dir": str(run.out)})
            self.run_id = created.info.run_id
            self.client.log_dict(self.run_id, run.cfg.to_dict(), "config.yaml")
        else:
            self.client.update_run(self.run_id, status="RUNNING")

    def scalars(self, values, step):
        from mlflow.entities import Metric
        import time
        now = int(time.time() * 1000)
        metrics = [Metric(k.translate(_MLFLOW_NAME), v, now, step) for k, v in values.items()]
        for i in range(0, len(metrics), 900):  # a batch holds at most 1000 metrics
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 900])

    def text(self, name, text, step):
        self.client.log_text(self.run_id, text, f"{name}.txt")

    def image(self, name, path, step):
        self.client.log_artifact(self.run_id, str(path), "images")

    def close(self):
        self.client.set_terminated(self.run_id)

    def state_dict(self):
        return {"run_id": self.run_id}

    def load_state_dict(self, state):
        self.run_id = (state or {}).get("run_id")


class WandbTracker(Tracker):
    """A W&B run in project ``tracking.experiment``, in RUN/wandb; offline (``wandb sync RUN/wandb/offline-*``
    uploads it) unless the environment chooses a mode (WANDB_MODE=online). Its id is checkpointed, so a resumed
    run continues the same W&B run."""

    name, module, extra = "wandb", "wandb", "wandb"

    def __init__(self, cfg, images=None):
        super().__init__(cfg, images)
        self.run_id = None

    def open(self, run, *, resumed_at):
        import wandb
        self.run_id = self.run_id or secrets.token_hex(4)  # W&B's ids are short lowercase words
        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True)
        self.wb = wandb.init(project=self.tracking.experiment, name=run.out.name, id=self.run_id, resume="allow",
                             dir=str(run.out), mode=os.environ.get("WANDB_MODE", "offline"),
                             config=run.cfg.to_dict(), settings=settings, reinit="create_new")

    def scalars(self, values, step):
        self.wb.log(values, step=step)

    def text(self, name, text, step):
        self.wb.summary[name] = text

    def image(self, name, path, step):
        import wandb
        self.wb.log({f"images/{name}": wandb.Image(str(path))}, step=step)

    def close(self):
        self.wb.finish()

    def state_dict(self):
        return {"run_id": self.run_id}

    def load_state_dict(self, state):
        self.run_id = (state or {}).get("run_id")


class CsvTracker(Tracker):
    """RUN/scalars.csv: one row per logged number, ``step,name,value`` (long form: the names may change from
    epoch to epoch); the genotype in RUN/genotype.txt. Needs no package."""

    name, module, extra = "csv", None, None
    FILE = "scalars.csv"

    def open(self, run, *, resumed_at):
        self.path = run.out / self.FILE
        if resumed_at and self.path.is_file():  # rows past the checkpoint belong to steps that run again
            with open(self.path, newline="") as f:
                rows = [r for r in csv.reader(f)][1:]
            keep = [r for r in rows if r and int(r[0]) <= resumed_at]
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerows([["step", "name", "value"], *keep])
        elif not self.path.is_file() or not resumed_at:
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(["step", "name", "value"])
        self.file = open(self.path, "a", newline="")
        self.writer = csv.writer(self.file)

    def scalars(self, values, step):
        self.writer.writerows([step, k, repr(v)] for k, v in values.items())
        self.file.flush()

    def text(self, name, text, step):
        (self.path.parent / f"{name}.txt").write_text(text + "\n")

    def close(self):
        self.file.close()


TRACKERS = {cls.name: cls for cls in (TensorBoardTracker, WandbTracker, MLflowTracker, CsvTracker)}


def check_tracker_names(names) -> None:
    """Refuse a tracker name gradnas does not know, or one given twice (the config's ``log``)."""
    for name in names:
        if name not in TRACKERS:
            raise GradnasError(f"unknown tracker {name!r} in log (--log); choose from {', '.join(TRACKERS)}")
    if len(set(names)) != len(names):
        raise GradnasError(f"log (--log) names a tracker twice: {', '.join(names)}; give each once")


def build_trackers(cfg) -> list:
    """The trackers ``cfg.log`` names, after checking that each one's package is installed (one error naming the
    extra otherwise); called when a run is built, before its folder is made."""
    check_tracker_names(cfg.log)
    for name in cfg.log:
        cls = TRACKERS[name]
        if cls.module is None:
            continue
        try:
            importlib.import_module(cls.module)
        except ImportError:
            raise GradnasError(f"--log {name} needs the {cls.module} package, which is not installed: pip install "
                               f"'gradnas[{cls.extra}]'") from None
    images: dict = {}
    return [TRACKERS[name](cfg, images) for name in cfg.log]


def parse_log(text: str) -> list:
    """`--log tensorboard,mlflow` -> ['tensorboard', 'mlflow'] (checked by the config)."""
    return [t.strip() for t in text.split(",") if t.strip()]


__all__ = ["TRACKERS", "Tracker", "build_trackers", "check_tracker_names", "flatten_scalars", "parse_log"]
