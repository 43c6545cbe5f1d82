"""Training an evaluation network from scratch: the second stage of DARTS / MiLeNAS (section 4.3, A.2).

Before the first epoch the run reports the network's size: parameters (M, auxiliary head excluded, as
the papers count) and multiply-adds (M, one image, counted by ``torch.utils.flop_counter``). Per epoch:
SGD over the whole training set (auxiliary loss, drop path ramped up linearly, gradient clipping,
label smoothing as configured), one step of the learning-rate schedule, the test loss and top-1 (and
top-5 with more than 10 classes) accuracy, one line in metrics.jsonl and an atomic checkpoint. Batches,
augmentation and drop-path masks depend only on (seed, epoch[, rank]), so a resumed run continues
exactly as if it had never stopped.

Under torchrun each rank takes its slice of every global batch and the network trains inside
``torch.nn.parallel.DistributedDataParallel`` (gloo on CPU, NCCL on CUDA): the gradient all-reduce runs in
buckets overlapped with the backward pass. BatchNorm statistics stay per rank (``broadcast_buffers=False``)
and are averaged after every epoch, as before; every parameter takes part in every step (the auxiliary head
exists only when its loss is on, drop path scales a path by zero rather than skipping it), so DDP needs no
``find_unused_parameters``. The test set is split over the ranks and its sums added up; checkpoints and
best.pt hold the unwrapped network's weights (no ``module.`` prefix); only rank 0 writes the run folder.

:class:`Training` is the run harness of a training run (``gradnas.run.Harness``: run folder, checkpoints,
resume, signals, callbacks); :class:`Trainer` is the job it drives, one epoch per unit.

Choosing the epoch: with ``data.valid_fraction`` 0 (the papers' setting) the run reports its last epoch. With a
validation split (``gradnas.train.data``) the held-out images are measured every epoch (``valid_loss`` /
``valid_acc`` in metrics), the epoch with the best validation accuracy (ties: the earlier) is chosen, never on
the test set, and its weights are kept in best.pt (:class:`BestEpoch`). summary.json's ``selected`` says which
epoch and why.

Run folder: config.yaml (resolved), genotype.json, network.json (size), metrics.jsonl, checkpoint.pt,
split.json and best.pt (with a validation split), summary.json (when finished).
"""
from __future__ import annotations

import contextlib
import inspect
import math
import os
import time

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from gradnas import distributed
from gradnas.callbacks import Callback, check_callback_names
from gradnas.checkpoint import save_checkpoint
from gradnas.data.sources import dataset_key
from gradnas.errors import GradnasError
from gradnas.run import (GENOTYPE_FILE, NETWORK_FILE, SPLIT_FILE, CheckpointMismatch, Harness, read_damaged_json,
                         set_threads)
from gradnas.space import build_network
from gradnas.space.darts_network import count_params_m
from gradnas.space.genotype import Genotype, load_genotype, save_genotype
from gradnas.train.config import TrainConfig, lr_at
from gradnas.train.data import make_train_data
from gradnas.trackers import build_trackers


@torch.no_grad()
def count_macs_m(model: torch.nn.Module, input_shape: tuple, device) -> float:
    """Multiply-adds (M) of one forward pass of one image in eval mode, as torch.utils.flop_counter
    counts them (convolutions and matrix products; one multiply-add = 2 FLOPs)."""
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2e6


def check_network_options(model, net_cfg, space: str) -> None:
    """Refuse drop path or an auxiliary loss for a network that has no drop path or auxiliary head
    (an NB-201 network has neither), instead of silently training without them."""
    if net_cfg.drop_path > 0 and not hasattr(model, "drop_path_prob"):
        raise GradnasError(f"the {space} evaluation network has no drop path; set network.drop_path=0 (or use "
                           f"a setting made for it)")
    if net_cfg.auxiliary_weight > 0 and getattr(model, "auxiliary_head", None) is None:
        raise GradnasError(f"the {space} evaluation network has no auxiliary head; set network.auxiliary_weight=0 "
                           f"(or use a setting made for it)")


BEST_WEIGHTS_FILE = "best.pt"  # the weights of the epoch a validation split chose
LAST_EPOCH = "last epoch (no validation split)"


class BestEpoch(Callback):
    """The epoch a training run reports. With a validation split: the one with the best ``valid_acc`` (ties: the
    earlier), its weights written atomically to best.pt (the main process) and its figures checkpointed, so a
    resumed run chooses as an uninterrupted one. Without: the last epoch. summary.json's ``selected`` says which
    and why."""

    state_key = "best_epoch"

    def __init__(self):
        self.best: dict | None = None  # {"epoch", "valid_acc", "valid_loss", "test_acc"[, "test_top5"]}

    def on_epoch_end(self, run, record):
        acc = record.get("valid_acc")
        if acc is None or (self.best is not None and not acc > self.best["valid_acc"]):
            return
        self.best = {"epoch": record["epoch"], "valid_acc": acc, "valid_loss": record["valid_loss"],
                     **{k: record[k] for k in ("test_acc", "test_top5") if k in record}}
        if run.is_main:
            save_checkpoint({"epoch": record["epoch"], "valid_acc": acc, "genotype": run.genotype.to_string(),
                             "model": run.model.state_dict()}, run.folder.file(BEST_WEIGHTS_FILE),
                            keep_previous=False)  # an earlier best is no fallback: no best.prev.pt

    def on_end(self, run, summary):
        if self.best is not None:
            summary["selected"] = {"epoch": self.best["epoch"], "by": "valid_acc", **{
                k: v for k, v in self.best.items() if k != "epoch"}, "weights": BEST_WEIGHTS_FILE}
        elif not run.cfg.data.valid_fraction:
            summary["selected"] = {"epoch": run.done, "by": LAST_EPOCH}

    def state_dict(self):
        return {"best": self.best}

    def load_state_dict(self, state):
        self.best = dict(state["best"]) if state and state.get("best") else None


def _data_parallel(model: torch.nn.Module, device) -> torch.nn.Module:
    """``model`` in DistributedDataParallel, its BatchNorm statistics left per rank (averaged after each epoch;
    rank 0's are not copied to the others before every forward)."""
    ddp = DistributedDataParallel
    # torch >= 2.12 names the switch forward_sync_buffers (the buffers are equal at the start: broadcast_state)
    keep = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters
            else {"broadcast_buffers": False})
    return ddp(model, device_ids=[device.index] if device.type == "cuda" else None, **keep)


def _step_generator(device, seed: int, epoch: int, rank: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(((seed * 1_000_003 + epoch) * 1_009 + rank) % 2**64)
    return g


class Training(Harness):
    """A training run of ``genotype``'s evaluation network, built from a config; ``run()`` executes the epochs.

    ``callbacks``: user callbacks (``gradnas.callbacks.Callback``), run before the metrics writer; they may add
    keys to every metrics line and request a stop."""

    command, holds, noun = "train", "a training run", "run"
    config_class = TrainConfig

    def __init__(self, cfg: TrainConfig, genotype: Genotype, out_dir: str | os.PathLike, *, resume: bool = False,
                 progress: bool = True, callbacks=()):
        # a tracker's missing package fails here, before the run folder is made
        super().__init__(cfg, out_dir, progress=progress, trackers=build_trackers(cfg))
        self.genotype = genotype
        dataset_key(cfg.data.dataset)  # fail fast, before the run folder is made
        check_callback_names(cfg.callbacks)
        set_threads(cfg.threads)
        distributed.check_divisible(cfg.batch_size)
        device = distributed.resolve_device(cfg.device)
        if cfg.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise GradnasError("precision bf16 needs a GPU with bfloat16 support; use --precision fp32")
        split_file = self.folder.file(SPLIT_FILE)
        split = None
        if resume and cfg.data.valid_fraction:  # read only: the folder is locked when it is prepared below
            if not split_file.is_file():
                raise GradnasError(f"{self.out} has no {SPLIT_FILE}, the validation split this run was trained with; "
                                   "it cannot be resumed exactly, start a new --out")
            split = read_damaged_json(split_file, fix="it holds the validation split this run was trained with, "
                                                      "so the run cannot be resumed exactly: start a new --out")
        self.trainer = Trainer(cfg, genotype, device=device, world=self.world, split=split,
                               split_source=str(split_file))  # the data, before the folder
        with self.starting():  # a failed start removes what it wrote
            distributed.run_on_main(lambda: self._prepare_folder(resume))
            if self.is_main and not resume and self.trainer.data.split is not None:
                self.folder.write_json(SPLIT_FILE, self.trainer.data.split, indent=None)
            self._attach(self.trainer, [BestEpoch()], callbacks, resume=resume, device=device)
            if self.is_main and (not resume or self.done == 0):  # new, or stopped before its first checkpoint
                self.folder.write_json(NETWORK_FILE, self.trainer.network_info())

    @property
    def data(self):
        return self.trainer.data

    @property
    def params_m(self) -> float:
        return self.trainer.params_m

    @property
    def macs_m(self) -> float:
        return self.trainer.macs_m

    def _prepare_folder(self, resume: bool) -> None:
        self.folder.prepare(self.cfg.to_dict(), resume=resume)
        saved = self.folder.file(GENOTYPE_FILE)
        if not resume:
            save_genotype(self.genotype, saved)
        elif saved.is_file() and load_genotype(saved) != self.genotype:
            raise GradnasError(f"{self.out} trains another genotype ({load_genotype(saved)}); resume without "
                               "--genotype or start a new --out")


class Trainer:
    """The job of a training run: the network, its optimizer and schedule, one epoch per unit."""

    unit = "epoch"
    nan_fix = "Lower optim.lr or check the data, then start a new run."

    def __init__(self, cfg: TrainConfig, genotype: Genotype, *, device, world, split: dict | None = None,
                 split_source: str = SPLIT_FILE):
        self.cfg, self.genotype, self.device, self.world = cfg, genotype, device, world
        self.data = make_train_data(cfg.data, batch_size=cfg.batch_size, seed=cfg.seed, device=self.device,
                                    world=self.world, split=split, split_source=split_source)
        torch.manual_seed(cfg.seed)  # weight initialisation
        model = build_network(genotype, cfg.network, in_channels=self.data.channels,
                              num_classes=self.data.num_classes)
        check_network_options(model, cfg.network, genotype.space)
        self.params_m = count_params_m(model)
        self.model = model.to(self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # Counted once, on rank 0 (the first use of the flop counter imports torch._dynamo: seconds).
        shape = (self.data.channels, *self.data.image_size)
        self.macs_m = distributed.from_main(count_macs_m(self.model, shape, self.device) if self.world.is_main
                                            else None)
        distributed.broadcast_state(self.model)
        # The training forward passes through DDP on several processes (its all-reduce averages the gradients);
        # evaluation, checkpoints and exports use the network itself.
        self.net = self.model
        if self.world.size > 1:
            self.net = _data_parallel(self.model, self.device)
        o = cfg.optim
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=o.lr, momentum=o.momentum,
                                         weight_decay=o.weight_decay, nesterov=o.nesterov)
        if o.schedule == "linear" or o.warmup_epochs:  # closed form (train.config.lr_at), resumed by epoch count
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda epoch: lr_at(o, cfg.epochs, epoch) / o.lr)
        elif o.schedule == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=cfg.epochs,
                                                                        eta_min=o.lr_min or 0.0)
        else:
            self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=o.gamma)
        self.best_test_acc = -1.0
        self.last_test: dict = {}  # the last epoch's test figures
        # A checkpoint written on SIGINT/SIGTERM is mid-epoch: the steps done in the next epoch, the
        # running sums and the random streams a step draws from.
        self.step, self._partial = 0, None

    def network_info(self) -> dict:
        return {"space": self.genotype.space, "genotype": self.genotype.to_string(), "params_m": self.params_m,
                "macs_m": self.macs_m, "input": [self.data.channels, *self.data.image_size],
                "num_classes": self.data.num_classes, "cells": self.cfg.network.cells,
                "channels": self.cfg.network.channels, "auxiliary": self.cfg.network.auxiliary_weight > 0}

    # -- state
    def state_dict(self) -> dict:
        return {"genotype": self.genotype.to_string(), "best_test_acc": self.best_test_acc,
                "last_test": self.last_test, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "step": self.step, **({"partial": self._partial} if self.step else {})}

    def load_state_dict(self, state: dict) -> None:
        if state.get("genotype") != self.genotype.to_string():
            raise CheckpointMismatch("trains another genotype")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.best_test_acc = float(state["best_test_acc"])
        self.last_test = dict(state.get("last_test", {}))
        self.step = int(state.get("step", 0))  # absent before mid-epoch checkpoints: an epoch boundary
        self._partial = state.get("partial") if self.step else None
        if self.step and (self._partial is None or not 0 < self.step < self.data.steps):
            raise CheckpointMismatch(f"stops at step {self.step} of an epoch of {self.data.steps} steps")

    def units(self) -> int:
        return self.cfg.epochs

    # -- one epoch
    def _autocast(self):
        if self.cfg.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _loss(self, x, y):
        """(total loss, main logits, main loss): cross-entropy plus the weighted auxiliary loss."""
        smoothing = self.cfg.optim.label_smoothing
        aux_weight = self.cfg.network.auxiliary_weight
        with self._autocast():
            if aux_weight > 0:
                logits, aux = self.net(x, return_aux=True)
            else:
                logits, aux = self.net(x), None
            loss = F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
            total = loss if aux is None else loss + aux_weight * F.cross_entropy(aux.float(), y,
                                                                                 label_smoothing=smoothing)
        return total, logits, loss

    def _train_epoch(self, epoch: int, run) -> dict:
        cfg = self.cfg
        self.model.train()
        drop_path_gen = None
        if hasattr(self.model, "drop_path_prob"):
            # DARTS: the drop-path probability grows linearly from 0 to network.drop_path over the epochs.
            self.model.drop_path_prob = cfg.network.drop_path * epoch / cfg.epochs
            drop_path_gen = _step_generator(self.device, cfg.seed, epoch, self.world.rank)
            self.model.drop_path_generator = drop_path_gen
        params = [p for p in self.model.parameters()]
        loss_sum, correct, n = 0.0, 0, 0
        start = self.step
        if start:  # resumed mid-epoch: the sums so far and the random streams as they were
            loss_sum, correct, n = self._partial["sums"]
            torch.set_rng_state(self._partial["torch_rng"])
            if drop_path_gen is not None:
                drop_path_gen.set_state(self._partial["drop_path_rng"])
        bar = tqdm(self.data.epoch(epoch, start), total=self.data.steps, initial=start,
                   disable=None if run.progress and run.is_main else True,
                   leave=False, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step")
        for step, (x, y) in enumerate(bar, start):
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            total, logits, loss = self._loss(x, y)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise run.nan_error(epoch, f"training (step {step})")
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()  # under DDP the gradients arrive averaged over the ranks
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
            self.optimizer.step()
            batch_correct = int((logits.detach().argmax(1) == y).sum())
            loss_sum += loss_value * len(y)
            correct += batch_correct
            n += len(y)
            bar.set_postfix(loss=f"{loss_sum / n:.3f}", acc=f"{100 * correct / n:.1f}")
            run.step_end(epoch, step, {"train_loss": loss_value, "train_correct": batch_correct, "train_n": len(y)})
            if run.signal_requested and step + 1 < self.data.steps:
                bar.close()
                # What a resumed step needs besides the weights: the running sums, the global torch RNG and the
                # drop-path generator.
                self.step = step + 1
                self._partial = {"sums": [loss_sum, correct, n], "torch_rng": torch.get_rng_state(),
                                 **({"drop_path_rng": drop_path_gen.get_state()} if drop_path_gen is not None else {})}
                run.stop_mid_unit(epoch, step + 1, self.data.steps)
        self.step, self._partial = 0, None
        loss_sum, correct, n = distributed.sum_values([loss_sum, correct, n], self.device)
        return {"train_loss": loss_sum / max(n, 1), "train_acc": 100.0 * correct / max(n, 1)}

    def evaluate(self) -> dict:
        """Test loss, top-1 and (with more than 10 classes) top-5 accuracy (%) over the whole test set."""
        return self._evaluate(self.data.test, "test")

    def evaluate_valid(self) -> dict:
        """The same figures over the held-out validation split (``valid_loss``, ``valid_acc``...)."""
        return self._evaluate(self.data.valid, "valid")

    @torch.no_grad()
    def _evaluate(self, batches, name: str) -> dict:
        self.model.eval()
        k = 5 if self.data.num_classes > 10 else 1
        loss_sum, top1, topk, n = 0.0, 0, 0, 0
        for x, y in batches():
            if self.cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                logits = self.model(x).float()
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            best = logits.topk(k, dim=1).indices
            top1 += int((best[:, 0] == y).sum())
            topk += int((best == y.unsqueeze(1)).any(1).sum())
            n += len(y)
        self.model.train()
        loss_sum, top1, topk, n = distributed.sum_values([loss_sum, top1, topk, n], self.device)
        out = {f"{name}_loss": loss_sum / max(n, 1), f"{name}_acc": 100.0 * top1 / max(n, 1)}
        if k == 5:
            out[f"{name}_top5"] = 100.0 * topk / max(n, 1)
        return out

    # -- one unit
    def run_unit(self, epoch: int, run) -> dict:
        cfg = self.cfg
        t0 = time.time()
        lr = self.scheduler.get_last_lr()[0]
        record = {"epoch": epoch + 1, "lr": lr, "drop_path": cfg.network.drop_path * epoch / cfg.epochs}
        record.update(self._train_epoch(epoch, run))
        self.scheduler.step()
        distributed.average_buffers(self.model)  # one set of BN statistics on every rank
        if self.data.valid is not None:
            record.update(self.evaluate_valid())
            if not math.isfinite(record["valid_loss"]):
                raise run.nan_error(epoch, "validation")
        record.update(self.evaluate())
        if not math.isfinite(record["test_loss"]):
            raise run.nan_error(epoch, "test")
        record["epoch_time"] = time.time() - t0
        self.best_test_acc = max(self.best_test_acc, record["test_acc"])
        self.last_test = {k: record[k] for k in ("test_loss", "test_acc", "test_top5") if k in record}
        return record

    def progress_line(self, record: dict) -> str:
        top5 = f"  top-5 {record['test_top5']:.2f}" if "test_top5" in record else ""
        valid = f"valid acc {record['valid_acc']:.2f}  " if "valid_acc" in record else ""
        return (f"epoch {record['epoch']}/{self.cfg.epochs}  train acc {record['train_acc']:.2f}  "
                f"{valid}test acc {record['test_acc']:.2f}{top5}  ({record['epoch_time']:.0f} s)")

    def summary(self, *, done: int, finished: bool) -> dict:
        return {"epochs_done": done, "finished": finished, "genotype": self.genotype.to_string(),
                "params_m": self.params_m, "macs_m": self.macs_m, **self.last_test, "best_test_acc": self.best_test_acc}
