"""The epoch loop of the per-batch architecture optimizers (single-level, darts, milenas and plug-ins).

Per epoch: paired (weight batch, architecture batch) steps through the method, a cosine step of the weight
learning rate, validation of the supernet on the architecture half, the derived genotype and the epoch's
record. Batches and augmentation depend only on (seed, epoch), and so does a sampling relaxation's noise
(re-seeded by its ``start_epoch``, see ``gradnas.search.callbacks.TemperatureSchedule``), so a run resumed from
the checkpoint of epoch k continues exactly as if it had never stopped; a checkpoint written on a signal is
mid-epoch and holds the running sums and the random streams a step draws from.

Under torchrun (see ``gradnas.distributed``) every rank draws the same global batches, takes its slice of
each, and the method averages every gradient over the ranks; validation is split over the ranks and summed.

A method schedule (``switch_at`` / ``then``, with ``then_order`` the second one's order, default ``order``):
every method of the schedule is built at the start over the same model and optimizers; the second takes over
at the start of epoch ``switch_at + 1``. The collapse lr rule is a
scale on top of the cosine schedule (lr = scale * cosine(epoch)) set by ``CollapseWatch`` through
:meth:`GradientSearch.set_lr_scale`. Where the architecture batch comes from (``alpha_data``) is the batches'
business (``PairedBatches``).
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from gradnas import distributed
from gradnas.benchmark import benchmark_for, format_benchmark
from gradnas.data import PairedBatches
from gradnas.errors import GradnasError
from gradnas.relax import make_relaxation
from gradnas.run import CheckpointMismatch
from gradnas.search import callbacks as cbs
from gradnas.search.accel import Prefetcher, check_compile, check_precision, compile_forward
from gradnas.search.algorithm import SearchAlgorithm, method_class
from gradnas.search.methods import ArchOptimizer, make_method
from gradnas.space import build_supernet


def build_optimizers(cfg, model):
    """The weight SGD (cosine schedule over the epochs) and the alpha optimizer of a search config (arch_optim.type:
    Adam, or SGD with its momentum / Nesterov; a constant lr either way)."""
    w_optim = torch.optim.SGD(model.weight_parameters(), lr=cfg.w_optim.lr, momentum=cfg.w_optim.momentum,
                              weight_decay=cfg.w_optim.weight_decay, nesterov=cfg.w_optim.nesterov)
    ac = cfg.arch_optim
    a_wd = ac.weight_decay
    if a_wd is None:
        a_wd = model.relaxation.default_arch_weight_decay
    if ac.type == "sgd":
        a_optim = torch.optim.SGD(model.arch_parameters(), lr=ac.lr, momentum=ac.momentum, nesterov=ac.nesterov,
                                  weight_decay=a_wd)
    else:
        a_optim = torch.optim.Adam(model.arch_parameters(), lr=ac.lr, betas=tuple(ac.betas), weight_decay=a_wd)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(w_optim, T_max=cfg.epochs, eta_min=cfg.w_optim.lr_min)
    return w_optim, a_optim, scheduler


@torch.no_grad()
def evaluate(model, x, y, *, augment, batch_size: int, device, max_batches: int | None = None):
    """Loss and accuracy (%) of the supernet in eval mode (BN running statistics), no augmentation.

    In a multi-process run each rank evaluates its share of the (first ``max_batches``) batches and the
    sums are added up, so every rank returns the figures of the whole set. The sums stay on the device
    (float64: the same numbers as Python floats) until the end; on CUDA the next batch is copied while the
    current one runs (:class:`~gradnas.search.accel.Prefetcher`; pin ``x`` and ``y`` for an asynchronous copy)."""
    if max_batches is not None:
        x, y = x[:max_batches * batch_size], y[:max_batches * batch_size]
    part = distributed.world().shard(len(y))
    x, y = x[part], y[part]
    model.eval()
    device = torch.device(device)
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    n = 0
    host = ((x[s:s + batch_size], y[s:s + batch_size]) for s in range(0, len(y), batch_size))
    for xb, yb in Prefetcher(host, device):
        xb, yb = augment(xb, None, train=False), yb.to(dtype=torch.int64)
        logits = model(xb)
        total_loss += F.cross_entropy(logits, yb, reduction="sum").double()
        correct += (logits.argmax(1) == yb).sum()
        n += yb.numel()
    model.train()
    total_loss, correct, n = distributed.sum_values([total_loss.item(), int(correct), n], device)
    return total_loss / max(n, 1), 100.0 * correct / max(n, 1)


class RunningSums:
    """An epoch's running sums per batch kind (train, val): loss x count, correct predictions and count.

    The losses and correct counts of a step may be tensors on the device (the built-in methods') or Python
    numbers (a plug-in's); they are added up on the device in float64, which computes exactly what the sums
    of Python floats did (the loss as float64, times the count, added in step order), so nothing waits for
    the device until :meth:`floats` reads them. The losses of the steps since the last read are kept, so a
    NaN can be traced to its step (:meth:`first_nonfinite`)."""

    def __init__(self, device, start: dict | None = None):
        self.device = torch.device(device)
        self.sums: dict = {}
        for key, value in (start or {}).items():
            self._add(key, float(value))
        self._recent: list = []

    def _add(self, key: str, value) -> None:
        if key.endswith("_n"):
            self.sums[key] = self.sums.get(key, 0.0) + value  # counts are Python ints: no device work
            return
        value = torch.as_tensor(value, dtype=torch.float64, device=self.device)  # (a Python float: as float64)
        if key in self.sums:
            self.sums[key].add_(value)
        else:
            self.sums[key] = value.clone()

    def add(self, step: int, stats) -> None:
        for prefix in ("train", "val"):
            if f"{prefix}_n" in stats:
                n = stats[f"{prefix}_n"]
                loss = stats[f"{prefix}_loss"]
                loss = loss.detach().double() * n if isinstance(loss, torch.Tensor) else loss * n
                self._add(f"{prefix}_loss", loss)
                self._add(f"{prefix}_correct", stats[f"{prefix}_correct"])
                self._add(f"{prefix}_n", n)
        self._recent.append((step, {k: stats[k] for k in ("train_loss", "val_loss") if k in stats}))

    def floats(self) -> dict:
        """The sums as Python floats (one wait for the device)."""
        keys = sorted(self.sums)
        values = [self.sums[k] for k in keys]
        tensors = [v for v in values if isinstance(v, torch.Tensor)]
        read = iter(torch.stack(tensors).tolist() if tensors else [])
        return {k: next(read) if isinstance(v, torch.Tensor) else float(v) for k, v in zip(keys, values)}

    def first_nonfinite(self, sums: dict):
        """(step, its losses as floats) of the first step since the last call whose loss is NaN or inf, if the
        sums ``sums`` (:meth:`floats`) say there is one; else None. Forgets those steps."""
        recent, self._recent = self._recent, []
        if all(math.isfinite(v) for v in sums.values()):
            return None
        for step, losses in recent:
            values = {k: float(v) for k, v in losses.items()}
            if not all(math.isfinite(v) for v in values.values()):
                return step, values
        # not among the steps kept (cannot happen: every step since the last read is): name the last one
        bad = next(k for k, v in sums.items() if not math.isfinite(v))
        return (recent[-1][0] if recent else 0), {bad.replace("_correct", "_loss"): sums[bad]}


class GradientSearch(SearchAlgorithm):
    """The epoch loop around one (or, with a schedule, two) architecture optimizers."""

    unit = "epoch"
    distributed = True
    reads = ("epochs", "arch_optim", "alpha_data", "switch_at", "then", "then_order", "data.eval_batches", "probes",
             "collapse", "stop", "compile", "precision")
    nan_fix = "Lower the learning rates (w_optim.lr, arch_optim.lr) or check the data, then start a new run."

    @classmethod
    def check_config(cls, cfg) -> None:
        classes = [method_class(name) for name in cfg.methods]
        for name, c, order in zip(cfg.methods, classes, cfg.orders):
            if not issubclass(c, ArchOptimizer):
                raise GradnasError(f"method {name!r} runs a search loop of its own; a method schedule (switch_at / "
                                   "then) switches between per-batch methods only")
            if cfg.then_order is not None and order not in c.orders:
                raise GradnasError(f"method {name!r} supports order {' or '.join(map(str, c.orders))}, not {order} "
                                   f"({'then_order' if name == cfg.then else 'order'}); change it")
        check_compile(cfg.compile, relaxation=make_relaxation(cfg.relax, cfg.relax_config))  # before any data
        if cfg.alpha_data != "split" and not any(c.uses_val_batch for c in classes):
            raise GradnasError(f"alpha_data {cfg.alpha_data!r} chooses the architecture batch, but method "
                               f"{' then '.join(cfg.methods)} reads none; use darts or milenas, or drop alpha_data")
        if cfg.data.split_fraction == 1 and cfg.alpha_data == "split" and any(c.uses_val_batch for c in classes):
            reader = next(n for n, c in zip(cfg.methods, classes) if c.uses_val_batch)
            raise GradnasError(f"data.split_fraction 1 trains the weights on every training image and leaves no "
                               f"architecture half, but method {reader} takes its architecture batches from it "
                               f"(alpha_data split); use a split_fraction below 1, or alpha_data same-batch / "
                               f"same-split, or method single-level")

    def __init__(self, cfg, *, data, device, world):
        self.cfg, self.device, self.world = cfg, torch.device(device), world
        dataset, self.split, self.augment = data.dataset, data.split, data.augment
        self.train_x, self.train_y = dataset.train_x, dataset.train_y
        # The full training set (split_fraction 1, checked above: only single-level or alpha_data same-*): no
        # architecture half; single-level's unused architecture batch is then the weight batch itself, and the
        # end-of-epoch validation runs on the test split (``valid_on`` in the records and the summary).
        self.full_set = len(self.split.arch_idx) == 0
        alpha_data = "same-batch" if self.full_set and cfg.alpha_data == "split" else cfg.alpha_data
        self.batches = PairedBatches(dataset.train_x, dataset.train_y, self.split, batch_size=cfg.batch_size,
                                     augment=self.augment, device=device, seed=cfg.seed, alpha_data=alpha_data)
        if self.full_set:
            if not len(dataset.test_y):
                raise GradnasError(f"data.split_fraction 1 leaves no architecture half, so the end-of-epoch "
                                   f"validation runs on the test split, but dataset {cfg.data.dataset!r} has no test "
                                   "images; give one with a test split or use a split_fraction below 1")
            self.val_x, self.val_y = dataset.test_x, dataset.test_y
        else:
            self.val_x, self.val_y = dataset.train_x[self.split.arch_idx], dataset.train_y[self.split.arch_idx]
        self.model = build_supernet(cfg.space, cfg.space_config, make_relaxation(cfg.relax, cfg.relax_config),
                                    in_channels=dataset.channels, num_classes=dataset.num_classes,
                                    seed=cfg.seed).to(device)
        if self.device.type == "cuda":  # the end-of-epoch validation copies its batches asynchronously
            self.val_x, self.val_y = self.val_x.pin_memory(), self.val_y.pin_memory()
        self.benchmark = benchmark_for(cfg.space)
        self.w_optim, self.a_optim, self.scheduler = build_optimizers(cfg, self.model)
        # The step's forward passes (compile) and their precision; the model itself is what is saved,
        # evaluated and probed (gradnas.search.accel).
        check_compile(cfg.compile, relaxation=self.model.relaxation, device=device)
        check_precision(cfg.precision, device)
        self.net = compile_forward(self.model, cfg.compile)
        # Every method of the schedule over the same model and optimizers, built now so that an
        # unsupported combination (e.g. single-level with order 2) fails before any epoch runs.
        # Each with its own order (then_order: MiLeNAS Fig. 2b runs darts-2nd, then milenas-1st); xi and
        # fd_scale go to the second-order ones only.
        self.methods = [make_method(name, self.model, w_optim=self.w_optim, a_optim=self.a_optim,
                                    grad_clip=cfg.w_optim.grad_clip, order=order, lam=cfg.lam,
                                    xi=cfg.xi if order == 2 else None, fd_scale=cfg.fd_scale if order == 2 else None,
                                    net=self.net, precision=cfg.precision, **_own_section(cfg, name))
                        for name, order in zip(cfg.methods, cfg.orders)]
        self.method = self.methods[0]
        if world.size > 1:
            distributed.broadcast_state(self.model)
            for method in self.methods:  # weights' and alphas' gradients: the global batch's
                method.grad_sync = distributed.average_
        self.best_valid_acc = -1.0
        self.lr_scale = 1.0  # collapse.lr_decay: the factor on top of the cosine schedule (CollapseWatch's)
        # A checkpoint written on SIGINT/SIGTERM is mid-epoch: steps done in the next epoch, the running sums,
        # and the random streams a step draws from (see `_partial_state`).
        self.step, self._partial = 0, None

    def builtin_callbacks(self) -> list:
        cfg = self.cfg
        return [cbs.TemperatureSchedule(), cbs.CollapseWatch(cfg.collapse), cbs.AlphaWatch.for_supernet(),
                cbs.ModelSizes(cfg.stop),
                *cbs.BenchmarkLookup.for_space(cfg.space), *cbs.ProbeRunner.for_search(self), cbs.GenotypeWriter()]

    def evaluate_images(self, x, y, *, max_batches=None):
        """Loss and accuracy of the supernet on images ``x`` / labels ``y``, as the end-of-epoch validation."""
        return evaluate(self.model, x, y, augment=self.augment, batch_size=self.cfg.batch_size, device=self.device,
                        max_batches=max_batches)

    def units(self) -> int:
        return self.cfg.epochs

    def genotype(self):
        return self.model.genotype()

    # -- one epoch
    def run_unit(self, epoch: int, run) -> dict:
        cfg = self.cfg
        steps = len(self.batches)
        part = self.world.shard(cfg.batch_size)
        t0 = time.time()
        self._select_method(epoch)
        lr = self.w_optim.param_groups[0]["lr"]  # the cosine schedule times the collapse lr scale
        self.model.train()
        start, sums = self.step, {}
        if start:  # resumed mid-epoch: the sums so far and the random streams as they were
            sums = dict(self._partial["sums"])
            self._restore_streams(self._partial)
            t0 -= float(self._partial.get("elapsed", 0.0))
        bar = tqdm(Prefetcher(self.batches.epoch(epoch, start), self.device), total=steps, initial=start,
                   disable=None if run.progress and run.is_main else True, leave=False,
                   desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step")
        # The step's numbers stay on the device; they are read (which waits for it) only to refresh the bar,
        # at a signal's stop and at the end of the epoch, and the NaN guard runs on what is read.
        running, shown = RunningSums(self.device, sums), time.monotonic()
        for step, (train_batch, val_batch) in enumerate(bar, start):
            if self.world.size > 1:  # this rank's slice of the global batch
                train_batch, val_batch = ((x[part], y[part]) for x, y in (train_batch, val_batch))
            self.method.begin_step()
            stats = self.method.step(train_batch, val_batch if self.method.uses_val_batch else None)
            running.add(step, stats)
            if not bar.disable and time.monotonic() - shown >= self.BAR_REFRESH_S:
                sums = self._read(running, run, epoch)
                bar.set_postfix(loss=f"{sums['train_loss'] / sums['train_n']:.3f}",
                                acc=f"{100 * sums['train_correct'] / sums['train_n']:.1f}")
                shown = time.monotonic()
            run.step_end(epoch, step, stats)
            if run.signal_requested and step + 1 < steps:
                sums = self._read(running, run, epoch)
                bar.close()
                self.step, self._partial = step + 1, self._partial_state(sums, time.time() - t0)
                run.stop_mid_unit(epoch, step + 1, steps)
        sums = self._read(running, run, epoch)
        self.step, self._partial = 0, None
        self._lr_step()
        if self.world.size > 1:  # whole-batch figures, and one set of BN statistics on every rank
            keys = sorted(sums)
            sums = dict(zip(keys, distributed.sum_values([sums[k] for k in keys], self.device)))
            distributed.average_buffers(self.model)
        valid_loss, valid_acc = self.evaluate_images(self.val_x, self.val_y, max_batches=cfg.data.eval_batches)
        if not math.isfinite(valid_loss):
            raise run.nan_error(epoch, "validation")
        genotype = self.last_genotype = self.model.genotype()
        self.best_valid_acc = max(self.best_valid_acc, valid_acc)
        record = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": sums["train_loss"] / sums["train_n"],
            "train_acc": 100.0 * sums["train_correct"] / sums["train_n"],
            "valid_loss": valid_loss,
            "valid_acc": valid_acc,
            "genotype": genotype.to_string(),
            "method": self.method.name,
        }
        if cfg.then_order is not None:  # a schedule that changes the order: which one ran this epoch
            record["order"] = self.method.order
        if self.full_set:  # valid_loss / valid_acc are the test split's (no architecture half)
            record["valid_on"] = "test"
        if "val_n" in sums:  # running figures on the architecture batches, as the method saw them
            record["arch_batch_loss"] = sums["val_loss"] / sums["val_n"]
            record["arch_batch_acc"] = 100.0 * sums["val_correct"] / sums["val_n"]
        record["edge_weights"] = self.model.edge_weights()
        record["epoch_time"] = time.time() - t0
        return record

    def progress_line(self, record: dict) -> str:
        bench = (f"  {self.benchmark[0]} {format_benchmark(record[self.benchmark[0]])}"
                 if self.benchmark and self.benchmark[0] in record else "")
        return (f"epoch {record['epoch']}/{self.cfg.epochs}  train acc {record['train_acc']:.2f}  "
                f"valid acc {record['valid_acc']:.2f}  {record['genotype']}{bench}")

    def summary(self, *, done: int, finished: bool) -> dict:
        return {"epochs_done": done, "finished": finished, "genotype": self.model.genotype().to_string(),
                "best_valid_acc": self.best_valid_acc, **({"valid_on": "test"} if self.full_set else {})}

    # -- pieces of an epoch
    #: seconds between two refreshes of the progress bar's figures (each waits for the device)
    BAR_REFRESH_S = 0.5

    @staticmethod
    def _read(running: RunningSums, run, epoch: int) -> dict:
        """The running sums as floats; the NaN guard of the steps since the last read (it names the first bad
        step, ``run.check_finite``)."""
        sums = running.floats()
        bad = running.first_nonfinite(sums)
        if bad is not None:
            run.check_finite(bad[1], epoch, bad[0])
            raise run.nan_error(epoch, f"training (step {bad[0]})")  # (check_finite raises first)
        return sums

    def _select_method(self, epoch: int) -> None:
        """The schedule's method for ``epoch`` (0-based): the second one from epoch ``switch_at`` on."""
        new = self.methods[1 if self.cfg.switch_at is not None and epoch >= self.cfg.switch_at else 0]
        if new is not self.method:
            new.grad_sync = self.method.grad_sync  # however gradients are made global, keep doing it
            self.method = new

    def _lr_step(self) -> None:
        """One cosine step of the weight lr, then the collapse scale on top. The scheduler computes its
        next value from the group's current lr, so it gets its own unscaled value back first."""
        groups = self.w_optim.param_groups
        for group, lr in zip(groups, self.scheduler.get_last_lr()):
            group["lr"] = lr
        self.scheduler.step()
        for group, lr in zip(groups, self.scheduler.get_last_lr()):
            group["lr"] = lr * self.lr_scale

    def set_lr_scale(self, scale: float) -> float:
        """The weight lr is ``scale`` x the cosine schedule from now on; returns the lr of the next epoch."""
        self.lr_scale = scale
        for group, lr in zip(self.w_optim.param_groups, self.scheduler.get_last_lr()):
            group["lr"] = lr * scale
        return self.w_optim.param_groups[0]["lr"]

    def _partial_state(self, sums: dict, elapsed: float) -> dict:
        """What a step resumed mid-epoch needs besides the weights, alphas and optimizers: the running sums of
        the epoch's metrics and the random streams a step may draw from (the global torch RNG and a sampling
        relaxation's own generator; the data's stream is re-created from (seed, epoch) and fast-forwarded)."""
        relax_gen = getattr(self.model.relaxation, "generator", None)
        return {"sums": dict(sums), "elapsed": elapsed, "torch_rng": torch.get_rng_state(),
                **({"relax_rng": relax_gen.get_state()} if relax_gen is not None else {})}

    def _restore_streams(self, partial: dict) -> None:
        torch.set_rng_state(partial["torch_rng"])
        relax_gen = getattr(self.model.relaxation, "generator", None)
        if relax_gen is not None and "relax_rng" in partial:
            relax_gen.set_state(partial["relax_rng"])

    # -- state
    def state_dict(self) -> dict:
        return {
            "best_valid_acc": self.best_valid_acc,
            "model": self.model.state_dict(),
            "w_optim": self.w_optim.state_dict(),
            "a_optim": self.a_optim.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "method": self.methods[0].state_dict(),
            **({"then_method": self.methods[1].state_dict()} if len(self.methods) > 1 else {}),
            "step": self.step,
            **({"partial": self._partial} if self.step else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.w_optim.load_state_dict(state["w_optim"])
        self.a_optim.load_state_dict(state["a_optim"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.methods[0].load_state_dict(state["method"])
        if len(self.methods) > 1:
            self.methods[1].load_state_dict(state["then_method"])
        self.best_valid_acc = float(state["best_valid_acc"])
        self.step = int(state.get("step", 0))  # absent before mid-epoch checkpoints: an epoch boundary
        self._partial = state.get("partial") if self.step else None
        if self.step and (self._partial is None or not 0 < self.step < len(self.batches)):
            raise CheckpointMismatch(f"stops at step {self.step} of an epoch of {len(self.batches)} steps")


def _own_section(cfg, name: str) -> dict:
    """``config=`` for a method with a config section of its own (plug-ins), else nothing."""
    cls = method_class(name)
    return {"config": cfg.section(cls.config_section)} if getattr(cls, "config_section", None) else {}
