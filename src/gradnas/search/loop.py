"""The search loop shared by every architecture optimizer.

Per epoch: paired (weight batch, architecture batch) steps through the method, a cosine step of the
weight learning rate, validation of the supernet on the architecture half, the derived genotype, one
line in metrics.jsonl and an atomic checkpoint. Batches and augmentation depend only on (seed, epoch),
and so does a sampling relaxation's noise (re-seeded by ``start_epoch``), so a run resumed from the
checkpoint of epoch k continues exactly as if it had never stopped. A relaxation with a schedule records
it (gumbel: ``tau``); a space with a tabular benchmark records the figures of each derived cell (nb201:
``nb201`` = {"cifar10", "cifar100", "imagenet16-120"} test accuracy %, every epoch and in the summary).

Under torchrun (see ``gradnas.distributed``) every rank draws the same global batches, takes its slice of
each, and the method averages every gradient over the ranks; validation is split over the ranks and
summed; only rank 0 writes the run folder.

The papers' switches live here too, as hooks at the epoch boundaries: a method schedule (``switch_at`` /
``then``: the second method is built at the start over the same model and optimizers, and takes over at
the start of epoch ``switch_at + 1``), and the watch on parameter-free ops (``collapse``): each epoch
records ``non_learnable_share`` of its genotype, warns when it rises above the threshold, and, with
``collapse.lr_decay``, multiplies the weight learning rate by ``lr_factor``. That factor is a scale on
top of the cosine schedule (lr = scale * cosine(epoch)), kept in the checkpoint with the count of decays.
Where the architecture batch comes from (``alpha_data``) is the batches' business (``PairedBatches``).

Model size-based search (MiLeNAS 3.3, ``gradnas.search.sizes``): every epoch records the conv-op counts
of its genotype (``normal_convs``, ``reduce_convs``) and its evaluation network's ``params_m``, keeps the
best genotype per size in ``sizes/``, and a ``stop`` rule may end the search early: that epoch's line
gets a ``stop`` record, and the summary says ``finished: true`` (the search ended by itself) with the
same ``stop`` record. Resuming a stopped search is refused while its rule is set; resumed without it
(``--set stop.at_size=null``), the search continues past the stop.

Run folder: config.yaml (resolved), split.json, metrics.jsonl, checkpoint.pt, genotype.json,
summary.json (when finished), sizes/ (index.json, size-N-R.json).
"""
from __future__ import annotations

import functools
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from gradnas import distributed
from gradnas.benchmark import benchmark_for, format_benchmark
from gradnas.distributed import resolve_device  # noqa: F401  (also imported from here by callers)
from gradnas.checkpoint import keep_metrics_until, metrics_until, resume_point, save_checkpoint
from gradnas.config import SearchConfig, resume_conflicts
from gradnas.data import Augment, PairedBatches, SearchSplit, iterate_batches, load_dataset, make_search_split
from gradnas.data.sources import dataset_key
from gradnas.errors import GradnasError
from gradnas.relax import make_relaxation
from gradnas.space import build_supernet, space_class
from gradnas.space.genotype import non_learnable_share, save_genotype
from gradnas.search.methods import make_method, method_class
from gradnas.search.probes import Probes
from gradnas.search.sizes import SizeTracker
from gradnas.signals import Interrupted, StopOnSignal

CONFIG_FILE, SPLIT_FILE, METRICS_FILE = "config.yaml", "split.json", "metrics.jsonl"
CHECKPOINT_FILE, GENOTYPE_FILE, SUMMARY_FILE = "checkpoint.pt", "genotype.json", "summary.json"


def check_names(cfg: SearchConfig) -> None:
    """Fail fast, with the valid choices, on an unknown space, relaxation, method or dataset."""
    space_class(cfg.space)
    make_relaxation(cfg.relax)
    classes = [method_class(name) for name in cfg.methods]
    if "pvll" in cfg.methods:
        from gradnas.search.pvll_search import check_pvll_config
        check_pvll_config(cfg)
    if cfg.alpha_data != "split" and not any(c.uses_val_batch for c in classes):
        raise GradnasError(f"alpha_data {cfg.alpha_data!r} chooses the architecture batch, but method "
                           f"{' then '.join(cfg.methods)} reads none; use darts or milenas, or drop alpha_data")
    dataset_key(cfg.data.dataset)


def build_optimizers(cfg: SearchConfig, model):
    w_optim = torch.optim.SGD(model.weight_parameters(), lr=cfg.w_optim.lr, momentum=cfg.w_optim.momentum,
                              weight_decay=cfg.w_optim.weight_decay, nesterov=cfg.w_optim.nesterov)
    a_wd = cfg.arch_optim.weight_decay
    if a_wd is None:
        a_wd = model.relaxation.default_arch_weight_decay
    a_optim = torch.optim.Adam(model.arch_parameters(), lr=cfg.arch_optim.lr, betas=tuple(cfg.arch_optim.betas),
                               weight_decay=a_wd)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(w_optim, T_max=cfg.epochs, eta_min=cfg.w_optim.lr_min)
    return w_optim, a_optim, scheduler


@torch.no_grad()
def evaluate(model, x, y, *, augment: Augment, batch_size: int, device, max_batches: int | None = None):
    """Loss and accuracy (%) of the supernet in eval mode (BN running statistics), no augmentation.

    In a multi-process run each rank evaluates its share of the (first ``max_batches``) batches and the
    sums are added up, so every rank returns the figures of the whole set."""
    if max_batches is not None:
        x, y = x[:max_batches * batch_size], y[:max_batches * batch_size]
    part = distributed.world().shard(len(y))
    x, y = x[part], y[part]
    model.eval()
    total_loss, correct, n = 0.0, 0, 0
    if len(y):
        for xb, yb in iterate_batches(x, y, batch_size=batch_size, augment=augment, device=device):
            logits = model(xb)
            total_loss += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
            n += yb.numel()
    model.train()
    total_loss, correct, n = distributed.sum_values([total_loss, correct, n], device)
    return total_loss / max(n, 1), 100.0 * correct / max(n, 1)


class Search:
    """Everything a search run holds, built from a config; `run()` executes the epochs."""

    def __init__(self, cfg: SearchConfig, out_dir: str | os.PathLike, *, resume: bool = False,
                 progress: bool = True):
        self.cfg, self.out = cfg, Path(out_dir)
        self.progress = progress
        check_names(cfg)  # before any data is read
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.world = distributed.world()
        distributed.check_divisible(cfg.batch_size)
        self.device = resolve_device(cfg.device)
        distributed.run_on_main(lambda: self._prepare_folder(resume))

        data = load_dataset(cfg.data.dataset, cfg.data.data_dir)
        split_path = self.out / SPLIT_FILE
        if resume and split_path.is_file():
            self.split = SearchSplit.from_dict(json.loads(split_path.read_text()))
        else:
            self.split = make_search_split(len(data.train_y), fraction=cfg.data.split_fraction, seed=cfg.seed,
                                           subset=cfg.data.subset)
            if self.world.is_main:
                _write_json(split_path, self.split.to_dict())
        self.augment = Augment(data.mean, data.std, crop_padding=cfg.data.crop_padding, flip=cfg.data.flip,
                               cutout=cfg.data.cutout)
        self.batches = PairedBatches(data.train_x, data.train_y, self.split, batch_size=cfg.batch_size,
                                     augment=self.augment, device=self.device, seed=cfg.seed,
                                     alpha_data=cfg.alpha_data)
        self.val_x, self.val_y = data.train_x[self.split.arch_idx], data.train_y[self.split.arch_idx]

        self.model = build_supernet(cfg.space, cfg.space_config, make_relaxation(cfg.relax, cfg.relax_config),
                                    in_channels=data.channels, num_classes=data.num_classes,
                                    seed=cfg.seed).to(self.device)
        # (key, lookup) of the space's tabular benchmark, or None: its figures for each derived cell
        self.benchmark = benchmark_for(cfg.space)
        self.w_optim, self.a_optim, self.scheduler = build_optimizers(cfg, self.model)
        # Every method of the schedule over the same model and optimizers, built now so that an
        # unsupported combination (e.g. single-level with order 2) fails before any epoch runs.
        self._methods = [make_method(name, self.model, w_optim=self.w_optim, a_optim=self.a_optim,
                                     grad_clip=cfg.w_optim.grad_clip, order=cfg.order, lam=cfg.lam, xi=cfg.xi,
                                     fd_scale=cfg.fd_scale) for name in cfg.methods]
        self.method = self._methods[0]
        if self.world.size > 1:
            distributed.broadcast_state(self.model)
            for method in self._methods:  # weights' and alphas' gradients: the global batch's
                method.grad_sync = distributed.average_
        # Optional per-epoch measurements (off by default); they leave the search untouched. The gap probe
        # evaluates the weight half exactly as the validation below evaluates the architecture half.
        same_as_validation = functools.partial(evaluate, self.model, augment=self.augment, batch_size=cfg.batch_size,
                                               device=self.device, max_batches=cfg.data.eval_batches)
        self.probes = Probes(cfg.probes, model=self.model, method=self.method, batches=self.batches,
                             train_x=data.train_x[self.split.weight_idx], train_y=data.train_y[self.split.weight_idx],
                             evaluate=same_as_validation, device=self.device)
        self.epoch = 0
        self.best_valid_acc = -1.0
        self.lr_scale = 1.0       # collapse.lr_decay: the factor on top of the cosine schedule
        self.lr_decays = 0
        self.last_share = None    # non_learnable_share of the last epoch's genotype (for the warning)
        self.sizes = SizeTracker(cfg.stop)
        # A checkpoint written on SIGINT/SIGTERM is mid-epoch: steps done in epoch `self.epoch` + 1, the
        # running sums, and the random streams a step draws from (see `_stop_mid_epoch`).
        self.step, self._partial = 0, None
        state = resume_point(self.out, unit="epoch", map_location=self.device, main=self.world.is_main) if resume \
            else None
        if state is not None:
            self._load(state)

    # -- folder and state
    def _prepare_folder(self, resume: bool) -> None:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            probe = self.out / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise GradnasError(f"cannot write to the run folder {self.out} ({exc.strerror}); choose another --out")
        if not resume and (self.out / CHECKPOINT_FILE).exists():
            raise GradnasError(f"{self.out} already holds a search; continue it with `gradnas search --resume "
                               f"{self.out}` or choose another --out")
        if not resume:
            (self.out / CONFIG_FILE).write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
            (self.out / METRICS_FILE).write_text("")

    def state_dict(self) -> dict:
        return {
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "best_valid_acc": self.best_valid_acc,
            "model": self.model.state_dict(),
            "w_optim": self.w_optim.state_dict(),
            "a_optim": self.a_optim.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "method": self._methods[0].state_dict(),
            **({"then_method": self._methods[1].state_dict()} if len(self._methods) > 1 else {}),
            "collapse": {"lr_scale": self.lr_scale, "lr_decays": self.lr_decays, "last_share": self.last_share},
            "step": self.step,
            **({"partial": self._partial} if self.step else {}),
            "sizes": self.sizes.state_dict(),
        }

    def _check_same_config(self, state: dict) -> None:
        # Read back through SearchConfig: a key the checkpoint's gradnas did not have yet means its default.
        diff = resume_conflicts(SearchConfig.from_dict(state["config"]).to_dict(), self.cfg.to_dict())
        if diff:
            key, saved, now = diff[0]
            raise GradnasError(f"the checkpoint in {self.out} was written with another config ({key}: {saved!r} "
                               f"there, {now!r} now); resume without changing settings or start a new --out")

    def _load(self, state: dict) -> None:
        self._check_same_config(state)
        try:
            self.model.load_state_dict(state["model"])
            self.w_optim.load_state_dict(state["w_optim"])
            self.a_optim.load_state_dict(state["a_optim"])
            self.scheduler.load_state_dict(state["scheduler"])
            self._methods[0].load_state_dict(state["method"])
            if len(self._methods) > 1:
                self._methods[1].load_state_dict(state["then_method"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise GradnasError(f"checkpoint in {self.out} does not match this search ({str(exc).splitlines()[0]}); "
                               "start a new --out") from None
        self.epoch = int(state["epoch"])
        self.best_valid_acc = float(state["best_valid_acc"])
        collapse = state.get("collapse", {})  # absent in checkpoints from before the collapse watch
        self.lr_scale = float(collapse.get("lr_scale", 1.0))
        self.lr_decays = int(collapse.get("lr_decays", 0))
        self.last_share = collapse.get("last_share")
        self.step = int(state.get("step", 0))  # absent before mid-epoch checkpoints: an epoch boundary
        self._partial = state.get("partial") if self.step else None
        if self.step and (self._partial is None or not 0 < self.step < len(self.batches)):
            raise GradnasError(f"checkpoint in {self.out} stops at step {self.step} of an epoch of "
                               f"{len(self.batches)} steps; it does not match this search, start a new --out")
        # Metrics lines past the checkpoint belong to an epoch that will be run again.
        path = self.out / METRICS_FILE
        records = metrics_until(path, self.epoch)  # on every rank: the size tracker may replay them
        if self.world.is_main:
            keep_metrics_until(path, self.epoch)
        self._load_sizes(state, saved_stop=SearchConfig.from_dict(state["config"]).stop, records=records)

    def _load_sizes(self, state: dict, *, saved_stop, records: list) -> None:
        """The size tracker's state (rebuilt from the metrics lines for a checkpoint from before it existed),
        the size files rewritten to match it, and the stop: a stopped search resumes only without its rule."""
        if "sizes" in state:
            self.sizes.load_state_dict(state["sizes"])
        else:
            self.sizes.replay(records)
        if self.sizes.stopped is not None:
            stop = self.sizes.stopped
            if self.sizes.stop_still_set():
                raise GradnasError(
                    f"the search in {self.out} stopped after epoch {stop['epoch']} of {self.cfg.epochs}: "
                    f"{stop['reason']}; it is finished. To continue it past the stop, resume without that rule: "
                    f"gradnas search --resume {self.out} --set stop.{stop['rule']}=null")
            self.sizes.stopped = None  # continuing past the stop: the run is no longer finished
            if self.world.is_main and (self.out / SUMMARY_FILE).exists():
                (self.out / SUMMARY_FILE).unlink()
        if self.world.is_main:
            self.sizes.write(self.out, everything=True)
            if self.cfg.stop != saved_stop:  # the folder's config.yaml holds the rules the search now follows
                (self.out / CONFIG_FILE).write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))

    # -- the loop
    def run(self, *, stop_after_epoch: int | None = None, stop_on_signal: bool = False) -> dict:
        """Run the remaining epochs; `stop_after_epoch` ends early after that epoch (as a crash would).

        With ``stop_on_signal`` (the CLI's way), a SIGINT or SIGTERM lets the step in flight finish, writes
        a checkpoint of that point, mid-epoch included, and raises :class:`gradnas.signals.Interrupted`;
        ``--resume`` then continues from the next step exactly. (Only on one process: under torchrun the
        signal stops at once and the run resumes from its last end-of-epoch checkpoint.)"""
        with StopOnSignal(stop_on_signal and self.world.size == 1) as guard:
            return self._run(stop_after_epoch, guard)

    def _run(self, stop_after_epoch, guard) -> dict:
        cfg = self.cfg
        steps = len(self.batches)
        main, part = self.world.is_main, self.world.shard(cfg.batch_size)
        for epoch in range(self.epoch, cfg.epochs):
            if (stop_after_epoch is not None and epoch >= stop_after_epoch) or self.sizes.stopped:
                break
            t0 = time.time()
            self._select_method(epoch)
            lr = self.w_optim.param_groups[0]["lr"]  # the cosine schedule times the collapse lr scale
            relax_record = self.model.relaxation.start_epoch(epoch=epoch, epochs=cfg.epochs, seed=cfg.seed)
            self.model.train()
            start, sums = self.step, {}
            if start:  # resumed mid-epoch: the sums so far and the random streams as they were
                sums = dict(self._partial["sums"])
                self._restore_streams(self._partial)
                t0 -= float(self._partial.get("elapsed", 0.0))
            bar = tqdm(self.batches.epoch(epoch, start), total=steps, initial=start,
                       disable=not (self.progress and main), leave=False,
                       desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step")
            for step, (train_batch, val_batch) in enumerate(bar, start):
                if self.world.size > 1:  # this rank's slice of the global batch
                    train_batch, val_batch = ((x[part], y[part]) for x, y in (train_batch, val_batch))
                stats = self.method.step(train_batch, val_batch if self.method.uses_val_batch else None)
                self._check_finite(stats, epoch, step)
                for prefix in ("train", "val"):  # sums of loss x count, correct and count per batch kind
                    if f"{prefix}_n" in stats:
                        n = stats[f"{prefix}_n"]
                        for key, value in ((f"{prefix}_loss", stats[f"{prefix}_loss"] * n),
                                           (f"{prefix}_correct", stats[f"{prefix}_correct"]), (f"{prefix}_n", n)):
                            sums[key] = sums.get(key, 0.0) + value
                bar.set_postfix(loss=f"{sums['train_loss'] / sums['train_n']:.3f}",
                                acc=f"{100 * sums['train_correct'] / sums['train_n']:.1f}")
                if guard.requested and step + 1 < steps:
                    bar.close()
                    self._stop_mid_epoch(epoch, step + 1, sums, time.time() - t0, guard)
            self.step, self._partial = 0, None
            self._lr_step()
            if self.world.size > 1:  # whole-batch figures, and one set of BN statistics on every rank
                keys = sorted(sums)
                sums = dict(zip(keys, distributed.sum_values([sums[k] for k in keys], self.device)))
                distributed.average_buffers(self.model)
            valid_loss, valid_acc = evaluate(self.model, self.val_x, self.val_y, augment=self.augment,
                                             batch_size=cfg.batch_size, device=self.device,
                                             max_batches=cfg.data.eval_batches)
            if not math.isfinite(valid_loss):
                raise self._nan_error(epoch, "validation")
            genotype = self.model.genotype()
            self.epoch = epoch + 1
            self.best_valid_acc = max(self.best_valid_acc, valid_acc)
            record = {
                "epoch": self.epoch,
                "lr": lr,
                "train_loss": sums["train_loss"] / sums["train_n"],
                "train_acc": 100.0 * sums["train_correct"] / sums["train_n"],
                "valid_loss": valid_loss,
                "valid_acc": valid_acc,
                "genotype": genotype.to_string(),
                "method": self.method.name,
                **relax_record,
                **self._watch_collapse(genotype),
                **self.sizes.update(self.epoch, genotype, valid_acc),
                "epoch_time": time.time() - t0,
            }
            if self.benchmark:
                record[self.benchmark[0]] = self.benchmark[1](genotype)
            if "val_n" in sums:  # running figures on the architecture batches, as the method saw them
                record["arch_batch_loss"] = sums["val_loss"] / sums["val_n"]
                record["arch_batch_acc"] = 100.0 * sums["val_correct"] / sums["val_n"]
            record["edge_weights"] = self.model.edge_weights()
            record.update(self.probes.after_epoch(epoch, record))
            if not main:
                continue
            with open(self.out / METRICS_FILE, "a") as f:
                f.write(json.dumps(record) + "\n")
            save_genotype(genotype, self.out / GENOTYPE_FILE)
            self.sizes.write(self.out)
            save_checkpoint(self.state_dict(), self.out / CHECKPOINT_FILE)
            if self.progress:
                bench = (f"  {self.benchmark[0]} {format_benchmark(record[self.benchmark[0]])}"
                         if self.benchmark else "")
                tqdm.write(f"epoch {self.epoch}/{cfg.epochs}  train acc {record['train_acc']:.2f}  "
                           f"valid acc {valid_acc:.2f}  {genotype}{bench}")
                if "stop" in record:
                    tqdm.write(f"stopping after epoch {self.epoch}/{cfg.epochs}: {record['stop']['reason']}")
            if guard.requested and self.epoch < cfg.epochs and self.sizes.stopped is None:  # arrived during validation or the checkpoint
                raise Interrupted(f"stopped by {guard.name} after epoch {self.epoch}/{cfg.epochs}; its checkpoint "
                                  f"is saved. Continue with:\n  gradnas search --resume {self.out}",
                                  signum=guard.requested)
        final = self.model.genotype()
        summary = {"epochs_done": self.epoch, "finished": self.epoch >= cfg.epochs or self.sizes.stopped is not None,
                   "genotype": final.to_string(), "best_valid_acc": self.best_valid_acc,
                   "run_dir": str(self.out)}
        if self.sizes.stopped is not None:
            summary["stop"] = self.sizes.stopped
        if self.benchmark:
            summary[self.benchmark[0]] = self.benchmark[1](final)
        if summary["finished"] and main:
            _write_json(self.out / SUMMARY_FILE, summary)
        return summary

    # -- stopping mid-epoch
    def _stop_mid_epoch(self, epoch: int, step: int, sums: dict, elapsed: float, guard) -> None:
        """Checkpoint after ``step`` steps of ``epoch`` (0-based) and raise Interrupted. Besides the
        weights, alphas and optimizers, a resumed step needs the running sums of the epoch's metrics and
        the random streams a step may draw from: the global torch RNG and a sampling relaxation's own
        generator (the data's stream is re-created from (seed, epoch) and fast-forwarded)."""
        self.step = step
        relax_gen = getattr(self.model.relaxation, "generator", None)
        self._partial = {"sums": dict(sums), "elapsed": elapsed, "torch_rng": torch.get_rng_state(),
                         **({"relax_rng": relax_gen.get_state()} if relax_gen is not None else {})}
        if self.world.is_main:
            save_checkpoint(self.state_dict(), self.out / CHECKPOINT_FILE)
        raise Interrupted(f"stopped by {guard.name} in epoch {epoch + 1}/{self.cfg.epochs} after step {step}/"
                          f"{len(self.batches)}; a checkpoint of that step is saved. Continue with:\n"
                          f"  gradnas search --resume {self.out}", signum=guard.requested)

    def _restore_streams(self, partial: dict) -> None:
        torch.set_rng_state(partial["torch_rng"])
        relax_gen = getattr(self.model.relaxation, "generator", None)
        if relax_gen is not None and "relax_rng" in partial:
            relax_gen.set_state(partial["relax_rng"])

    # -- epoch-boundary hooks of the switches
    def _select_method(self, epoch: int) -> None:
        """The schedule's method for ``epoch`` (0-based): the second one from epoch ``switch_at`` on."""
        new = self._methods[1 if self.cfg.switch_at is not None and epoch >= self.cfg.switch_at else 0]
        if new is not self.method:
            new.grad_sync = self.method.grad_sync  # however gradients are made global, keep doing it
            self.method = new
            self.probes.method = new  # the probes measure the objective of the method that runs

    def _lr_step(self) -> None:
        """One cosine step of the weight lr, then the collapse scale on top. The scheduler computes its
        next value from the group's current lr, so it gets its own unscaled value back first."""
        groups = self.w_optim.param_groups
        for group, lr in zip(groups, self.scheduler.get_last_lr()):
            group["lr"] = lr
        self.scheduler.step()
        for group, lr in zip(groups, self.scheduler.get_last_lr()):
            group["lr"] = lr * self.lr_scale

    def _watch_collapse(self, genotype) -> dict:
        """After an epoch: the share of parameter-free ops in its genotype, the collapse warning and the
        single-level paper's lr rule (4.1.4). Returns what goes into the epoch's metrics line."""
        cc = self.cfg.collapse
        share = non_learnable_share(genotype)
        record = {"non_learnable_share": share}
        above = share > cc.threshold
        if above and cc.warn and (self.last_share is None or self.last_share <= cc.threshold):
            record["collapse_warning"] = True
            hint = ("" if cc.lr_decay else "; the single-level paper lowers the weight lr then "
                    "(collapse.lr_decay, --lr-decay-on-collapse)")
            tqdm.write(f"gradnas: warning: after epoch {self.epoch}, {share:.0%} of the derived cell's ops are "
                       f"parameter-free (none, pooling, skip_connect), above collapse.threshold "
                       f"{cc.threshold:g}: the search may be collapsing{hint}", file=sys.stderr)
        self.last_share = share
        if cc.lr_decay:
            if above and self.lr_decays < cc.max_decays:
                self.lr_scale *= cc.lr_factor
                self.lr_decays += 1
                for group, lr in zip(self.w_optim.param_groups, self.scheduler.get_last_lr()):
                    group["lr"] = lr * self.lr_scale
                record["lr_decay"] = {"count": self.lr_decays, "scale": self.lr_scale,
                                      "next_lr": self.w_optim.param_groups[0]["lr"]}
            record["lr_scale"] = self.lr_scale
        return record

    def _check_finite(self, stats, epoch, step):
        for key in ("train_loss", "val_loss"):
            if key in stats and not math.isfinite(stats[key]):
                raise self._nan_error(epoch, f"{'training' if key == 'train_loss' else 'architecture'} (step {step})")

    def _nan_error(self, epoch, where):
        last = (f"the last good checkpoint (epoch {self.epoch}) is in {self.out}" if self.epoch else
                "no epoch had finished, so there is no checkpoint")
        return GradnasError(f"the {where} loss became NaN/inf in epoch {epoch + 1}; {last}. Lower the learning "
                            "rates (w_optim.lr, arch_optim.lr) or check the data, then start a new run.")


def open_search(cfg: SearchConfig, out_dir, *, resume: bool = False, progress: bool = True):
    """The search run of ``cfg``: :class:`Search`, or PVLL-NAS's own loop for ``method: pvll``."""
    if cfg.method == "pvll":
        from gradnas.search.pvll_search import PVLLSearch
        return PVLLSearch(cfg, out_dir, resume=resume, progress=progress)
    return Search(cfg, out_dir, resume=resume, progress=progress)


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj) + "\n")
    os.replace(tmp, path)
