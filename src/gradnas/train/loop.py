"""Training an evaluation network from scratch: the second stage of DARTS / MiLeNAS (section 4.3, A.2).

Before the first epoch the run reports the network's size: parameters (M, auxiliary head excluded, as
the papers count) and multiply-adds (M, one image, counted by ``torch.utils.flop_counter``). Per epoch:
SGD over the whole training set (auxiliary loss, drop path ramped up linearly, gradient clipping,
label smoothing as configured), one step of the learning-rate schedule, the test loss and top-1 (and
top-5 with more than 10 classes) accuracy, one line in metrics.jsonl and an atomic checkpoint. Batches,
augmentation and drop-path masks depend only on (seed, epoch[, rank]), so a resumed run continues
exactly as if it had never stopped.

Under torchrun each rank takes its slice of every global batch, gradients are averaged over the ranks,
the test set is split over the ranks and its sums added up; only rank 0 writes the run folder.

Run folder: config.yaml (resolved), genotype.json, network.json (size), metrics.jsonl, checkpoint.pt,
summary.json (when finished).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from gradnas import distributed
from gradnas.checkpoint import keep_metrics_until, resume_point, save_checkpoint
from gradnas.config import resume_conflicts
from gradnas.data.sources import dataset_key
from gradnas.errors import GradnasError
from gradnas.space import build_network
from gradnas.space.darts_network import count_params_m
from gradnas.space.genotype import Genotype, load_genotype, save_genotype
from gradnas.train.config import TrainConfig
from gradnas.train.data import make_train_data
from gradnas.signals import Interrupted, StopOnSignal

CONFIG_FILE, GENOTYPE_FILE, NETWORK_FILE = "config.yaml", "genotype.json", "network.json"
METRICS_FILE, CHECKPOINT_FILE, SUMMARY_FILE = "metrics.jsonl", "checkpoint.pt", "summary.json"


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


def _step_generator(device, seed: int, epoch: int, rank: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(((seed * 1_000_003 + epoch) * 1_009 + rank) % 2**64)
    return g


class Training:
    """Everything a training run holds, built from a config and a genotype; ``run()`` executes the epochs."""

    def __init__(self, cfg: TrainConfig, genotype: Genotype, out_dir: str | os.PathLike, *, resume: bool = False,
                 progress: bool = True):
        self.cfg, self.genotype, self.out = cfg, genotype, Path(out_dir)
        self.progress = progress
        dataset_key(cfg.data.dataset)  # fail fast, before the run folder is made
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.world = distributed.world()
        distributed.check_divisible(cfg.batch_size)
        self.device = distributed.resolve_device(cfg.device)
        if cfg.precision == "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise GradnasError("precision bf16 needs a GPU with bfloat16 support; use --precision fp32")
        distributed.run_on_main(lambda: self._prepare_folder(resume))

        self.data = make_train_data(cfg.data, batch_size=cfg.batch_size, seed=cfg.seed, device=self.device,
                                    world=self.world)
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
        o = cfg.optim
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=o.lr, momentum=o.momentum,
                                         weight_decay=o.weight_decay, nesterov=o.nesterov)
        if o.schedule == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=cfg.epochs,
                                                                        eta_min=o.lr_min or 0.0)
        else:
            self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=o.gamma)
        self.epoch = 0
        self.best_test_acc = -1.0
        self.last_test: dict = {}  # the last epoch's test figures
        # A checkpoint written on SIGINT/SIGTERM is mid-epoch: the steps done in the next epoch, the
        # running sums and the random streams a step draws from.
        self.step, self._partial = 0, None
        state = resume_point(self.out, unit="epoch", map_location=self.device, main=self.world.is_main) if resume \
            else None
        if state is not None:
            self._load(state)
        elif self.world.is_main:  # a new run, or one stopped before its first checkpoint (and maybe this file)
            _write_json(self.out / NETWORK_FILE, self.network_info())

    def network_info(self) -> dict:
        return {"space": self.genotype.space, "genotype": self.genotype.to_string(), "params_m": self.params_m,
                "macs_m": self.macs_m, "input": [self.data.channels, *self.data.image_size],
                "num_classes": self.data.num_classes, "cells": self.cfg.network.cells,
                "channels": self.cfg.network.channels, "auxiliary": self.cfg.network.auxiliary_weight > 0}

    # -- folder and state
    def _prepare_folder(self, resume: bool) -> None:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            probe = self.out / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise GradnasError(f"cannot write to the run folder {self.out} ({exc.strerror}); choose another --out")
        if resume:
            saved = self.out / GENOTYPE_FILE
            if saved.is_file() and load_genotype(saved) != self.genotype:
                raise GradnasError(f"{self.out} trains another genotype ({load_genotype(saved)}); resume without "
                                   "--genotype or start a new --out")
            return
        if (self.out / CHECKPOINT_FILE).exists():
            raise GradnasError(f"{self.out} already holds a training run; continue it with `gradnas train --resume "
                               f"{self.out}` or choose another --out")
        (self.out / CONFIG_FILE).write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        save_genotype(self.genotype, self.out / GENOTYPE_FILE)
        (self.out / METRICS_FILE).write_text("")

    def state_dict(self) -> dict:
        return {"config": self.cfg.to_dict(), "genotype": self.genotype.to_string(), "epoch": self.epoch,
                "best_test_acc": self.best_test_acc, "last_test": self.last_test, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "step": self.step, **({"partial": self._partial} if self.step else {})}

    def _load(self, state: dict) -> None:
        diff = resume_conflicts(state["config"], self.cfg.to_dict())
        if diff:
            key, saved, now = diff[0]
            raise GradnasError(f"the checkpoint in {self.out} was written with another config ({key}: {saved!r} "
                               f"there, {now!r} now); resume without changing settings or start a new --out")
        if state.get("genotype") != self.genotype.to_string():
            raise GradnasError(f"the checkpoint in {self.out} trains another genotype; start a new --out")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise GradnasError(f"checkpoint in {self.out} does not match this run ({str(exc).splitlines()[0]}); "
                               "start a new --out") from None
        self.epoch = int(state["epoch"])
        self.best_test_acc = float(state["best_test_acc"])
        self.last_test = dict(state.get("last_test", {}))
        self.step = int(state.get("step", 0))  # absent before mid-epoch checkpoints: an epoch boundary
        self._partial = state.get("partial") if self.step else None
        if self.step and (self._partial is None or not 0 < self.step < self.data.steps):
            raise GradnasError(f"checkpoint in {self.out} stops at step {self.step} of an epoch of "
                               f"{self.data.steps} steps; it does not match this run, start a new --out")
        path = self.out / METRICS_FILE  # lines past the checkpoint belong to an epoch that will run again
        if path.exists() and self.world.is_main:
            keep_metrics_until(path, self.epoch)

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
                logits, aux = self.model(x, return_aux=True)
            else:
                logits, aux = self.model(x), None
            loss = F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
            total = loss if aux is None else loss + aux_weight * F.cross_entropy(aux.float(), y,
                                                                                 label_smoothing=smoothing)
        return total, logits, loss

    def _train_epoch(self, epoch: int, guard) -> dict:
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
                   disable=not (self.progress and self.world.is_main),
                   leave=False, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step")
        for step, (x, y) in enumerate(bar, start):
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            total, logits, loss = self._loss(x, y)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise self._nan_error(epoch, f"training (step {step})")
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            distributed.average_([p.grad for p in params])
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
            self.optimizer.step()
            loss_sum += loss_value * len(y)
            correct += int((logits.detach().argmax(1) == y).sum())
            n += len(y)
            bar.set_postfix(loss=f"{loss_sum / n:.3f}", acc=f"{100 * correct / n:.1f}")
            if guard.requested and step + 1 < self.data.steps:
                bar.close()
                self._stop_mid_epoch(epoch, step + 1, (loss_sum, correct, n), drop_path_gen, guard)
        self.step, self._partial = 0, None
        loss_sum, correct, n = distributed.sum_values([loss_sum, correct, n], self.device)
        return {"train_loss": loss_sum / max(n, 1), "train_acc": 100.0 * correct / max(n, 1)}

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Test loss, top-1 and (with more than 10 classes) top-5 accuracy (%) over the whole test set."""
        self.model.eval()
        k = 5 if self.data.num_classes > 10 else 1
        loss_sum, top1, topk, n = 0.0, 0, 0, 0
        for x, y in self.data.test():
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
        out = {"test_loss": loss_sum / max(n, 1), "test_acc": 100.0 * top1 / max(n, 1)}
        if k == 5:
            out["test_top5"] = 100.0 * topk / max(n, 1)
        return out

    def _stop_mid_epoch(self, epoch: int, step: int, sums: tuple, drop_path_gen, guard) -> None:
        """Checkpoint after ``step`` steps of ``epoch`` (0-based), with what a resumed step needs (running
        sums, the global torch RNG, the drop-path generator), and raise Interrupted."""
        self.step = step
        self._partial = {"sums": list(sums), "torch_rng": torch.get_rng_state(),
                         **({"drop_path_rng": drop_path_gen.get_state()} if drop_path_gen is not None else {})}
        if self.world.is_main:
            save_checkpoint(self.state_dict(), self.out / CHECKPOINT_FILE)
        raise Interrupted(f"stopped by {guard.name} in epoch {epoch + 1}/{self.cfg.epochs} after step {step}/"
                          f"{self.data.steps}; a checkpoint of that step is saved. Continue with:\n"
                          f"  gradnas train --resume {self.out}", signum=guard.requested)

    # -- the loop
    def run(self, *, stop_after_epoch: int | None = None, stop_on_signal: bool = False) -> dict:
        """Run the remaining epochs; ``stop_after_epoch`` ends early after that epoch (as a crash would).

        With ``stop_on_signal`` (the CLI's way) a SIGINT or SIGTERM lets the step in flight finish, writes a
        checkpoint of that point and raises :class:`gradnas.signals.Interrupted` (one process only)."""
        with StopOnSignal(stop_on_signal and self.world.size == 1) as guard:
            return self._run(stop_after_epoch, guard)

    def _run(self, stop_after_epoch, guard) -> dict:
        cfg, main = self.cfg, self.world.is_main
        for epoch in range(self.epoch, cfg.epochs):
            if stop_after_epoch is not None and epoch >= stop_after_epoch:
                break
            t0 = time.time()
            lr = self.scheduler.get_last_lr()[0]
            record = {"epoch": epoch + 1, "lr": lr, "drop_path": cfg.network.drop_path * epoch / cfg.epochs}
            record.update(self._train_epoch(epoch, guard))
            self.scheduler.step()
            distributed.average_buffers(self.model)  # one set of BN statistics on every rank
            record.update(self.evaluate())
            if not math.isfinite(record["test_loss"]):
                raise self._nan_error(epoch, "test")
            record["epoch_time"] = time.time() - t0
            self.epoch = epoch + 1
            self.best_test_acc = max(self.best_test_acc, record["test_acc"])
            self.last_test = {k: record[k] for k in ("test_loss", "test_acc", "test_top5") if k in record}
            if not main:
                continue
            with open(self.out / METRICS_FILE, "a") as f:
                f.write(json.dumps(record) + "\n")
            save_checkpoint(self.state_dict(), self.out / CHECKPOINT_FILE)
            if self.progress:
                top5 = f"  top-5 {record['test_top5']:.2f}" if "test_top5" in record else ""
                tqdm.write(f"epoch {self.epoch}/{cfg.epochs}  train acc {record['train_acc']:.2f}  "
                           f"test acc {record['test_acc']:.2f}{top5}  ({record['epoch_time']:.0f} s)")
            if guard.requested and self.epoch < cfg.epochs:  # arrived during the test pass or the checkpoint
                raise Interrupted(f"stopped by {guard.name} after epoch {self.epoch}/{cfg.epochs}; its checkpoint "
                                  f"is saved. Continue with:\n  gradnas train --resume {self.out}",
                                  signum=guard.requested)
        summary = {"epochs_done": self.epoch, "finished": self.epoch >= cfg.epochs,
                   "genotype": self.genotype.to_string(), "params_m": self.params_m, "macs_m": self.macs_m,
                   **self.last_test, "best_test_acc": self.best_test_acc, "run_dir": str(self.out)}
        if summary["finished"] and main:
            _write_json(self.out / SUMMARY_FILE, summary)
        return summary

    def _nan_error(self, epoch, where):
        last = (f"the last good checkpoint (epoch {self.epoch}) is in {self.out}" if self.epoch else
                "no epoch had finished, so there is no checkpoint")
        return GradnasError(f"the {where} loss became NaN/inf in epoch {epoch + 1}; {last}. Lower optim.lr or "
                            "check the data, then start a new run.")


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)
