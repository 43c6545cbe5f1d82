"""A gradnas plug-in as a user would write one, outside the library (tests/test_plugins.py drives it).

Importing it registers (once; importing it again is a no-op, see :func:`register`):

* op ``shift_conv_3x3``: ReLU, a zero-padded one-pixel shift of four channel groups (up, down, left, right),
  a 1x1 conv (the stride) and BN; a learnable op that counts as a conv in model sizes;
* dataset ``plugin-blobs``: 3x8x8 float images of 4 classes (a bright patch in quadrant ``label`` plus noise),
  128 training and 32 test images, all from a fixed seed; easy enough to be learned in an epoch;
* method ``lazy-milenas``: first-order MiLeNAS (alpha descends grad_a L_tr + lambda grad_a L_val), but the
  alpha step is taken only every ``lazy_milenas.every``-th step (the weights step every step); it reads
  ``lambda`` and keeps its step counter across a resume;
* callback ``step_counter``: adds ``plugin_steps`` (steps run so far, over the whole run, resume included),
  ``plugin_epoch_steps`` and ``edge_entropy`` (the mean entropy of the relaxed op weights of every edge) to
  every metrics record, and stops the run after epoch ``step_counter.stop_at_epoch`` when that is set (its
  config section, registered here too; or ``StepCounter(stop_at_epoch=N)`` through the Python API).

:func:`unregister` removes all of it again.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from gradnas.callbacks import CALLBACKS, Callback, register_callback, unregister_callback
from gradnas.data import register_dataset, unregister_dataset
from gradnas.data.sources import DATASETS
from gradnas.registry import SECTIONS, register_section, unregister_section
from gradnas.search.algorithm import METHODS, register_method, unregister_method
from gradnas.search.methods import ArchOptimizer, StepStats
from gradnas.space.ops import OPS, register_op, unregister_op

OP = "shift_conv_3x3"
DATASET = "plugin-blobs"
METHOD = "lazy-milenas"
METHOD_SECTION = "lazy_milenas"
CALLBACK = "step_counter"
CALLBACK_SECTION = "step_counter"
CLASSES = ("top-left", "top-right", "bottom-left", "bottom-right")


# ---- the op ---------------------------------------------------------------------------------------------

def _shift(x: torch.Tensor) -> torch.Tensor:
    """Shift four channel groups by one pixel (up, down, left, right), zeros coming in; the rest stay."""
    c = x.shape[1]
    g = c // 4
    if g == 0:
        return x
    up = F.pad(x[:, :g, 1:, :], (0, 0, 0, 1))
    down = F.pad(x[:, g:2 * g, :-1, :], (0, 0, 1, 0))
    left = F.pad(x[:, 2 * g:3 * g, :, 1:], (0, 1, 0, 0))
    right = F.pad(x[:, 3 * g:4 * g, :, :-1], (1, 0, 0, 0))
    return torch.cat([up, down, left, right, x[:, 4 * g:]], dim=1)


class ShiftConv(nn.Module):
    def __init__(self, c: int, stride: int, affine: bool):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 1, stride=stride, bias=False)
        self.bn = nn.BatchNorm2d(c, affine=affine)

    def forward(self, x):
        return self.bn(self.conv(_shift(F.relu(x))))


# ---- the dataset ----------------------------------------------------------------------------------------

class Blobs(torch.utils.data.Dataset):
    """``n`` 3x8x8 images in [0, 1]: noise, and a bright 4x4 patch in the quadrant of the label."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % len(CLASSES)
        self.images = torch.rand(n, 3, 8, 8, generator=g) * 0.3
        for i, k in enumerate(self.labels.tolist()):
            r, c = divmod(k, 2)
            self.images[i, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 0.6
        self.images.clamp_(0.0, 1.0)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


# ---- the method -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LazyConfig:
    every: int = 2  # take the alpha step every `every` steps (1: MiLeNAS-1st)

    def __post_init__(self):
        if self.every < 1:
            from gradnas.errors import GradnasError
            raise GradnasError(f"lazy_milenas.every must be >= 1, got {self.every}")


class LazyMilenas(ArchOptimizer):
    name = METHOD
    orders = (1,)
    uses_val_batch = True
    reads = ("lambda",)
    config_section = METHOD_SECTION
    config_class = LazyConfig

    def __init__(self, model, **kwargs):
        super().__init__(model, **kwargs)
        self.calls = 0        # steps taken (a resume continues the count: state_dict)
        self.alpha_steps = 0  # of which alpha steps

    def step(self, train_batch, val_batch):
        self.w_optim.zero_grad(set_to_none=True)
        self.a_optim.zero_grad(set_to_none=True)
        alpha_step = self.calls % self.config.every == 0
        self.calls += 1
        loss, correct, n = self._forward(train_batch)
        stats = StepStats(train_loss=loss.item(), train_correct=correct, train_n=n)
        if alpha_step:
            loss.backward()  # grad_w L_tr and grad_a L_tr
            self._sync_param_grads(self.weights + self.alphas)
            val_loss, val_correct, val_n, g_val = self._alpha_grad(val_batch)
            for a, g in zip(self.alphas, g_val):
                a.grad.add_(g, alpha=self.lam)
            stats.update(val_loss=val_loss.item(), val_correct=val_correct, val_n=val_n)
        else:
            loss.backward(inputs=self.weights)
            self._sync_param_grads(self.weights)
        self._weight_step()
        if alpha_step:
            self.a_optim.step()
            self.alpha_steps += 1
        return stats

    def state_dict(self) -> dict:
        return {"calls": self.calls, "alpha_steps": self.alpha_steps}

    def load_state_dict(self, state: dict) -> None:
        self.calls, self.alpha_steps = int(state["calls"]), int(state["alpha_steps"])


# ---- the callback ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StepCounterConfig:
    stop_at_epoch: int | None = None


def edge_entropy(edge_weights: dict) -> float:
    """Mean over every edge of every cell kind of the entropy (nats) of its normalised op weights."""
    values = []
    for edges in edge_weights.values():
        for ops in edges.values():
            w = [max(float(v), 0.0) for v in ops.values()]
            total = sum(w)
            values.append(-sum(p / total * math.log(p / total) for p in w if p > 0) if total > 0 else 0.0)
    return sum(values) / len(values)


class StepCounter(Callback):
    state_key = "plugin.step_counter"

    def __init__(self, stop_at_epoch: int | None = None):
        self.stop_at_epoch = stop_at_epoch
        self.steps = 0        # steps of the whole run
        self.epoch_steps = 0  # steps of the unit running
        self.resumed_from = None  # the state handed back on resume (tests look at it)

    @classmethod
    def from_config(cls, cfg) -> "StepCounter":
        section = getattr(cfg, "sections", {}).get(CALLBACK_SECTION)
        return cls(stop_at_epoch=section.stop_at_epoch if section is not None else None)

    def on_epoch_start(self, run, index):
        self.epoch_steps = 0

    def on_step_end(self, run, index, step, stats):
        assert math.isfinite(stats["train_loss"])
        self.steps += 1
        self.epoch_steps += 1

    def on_epoch_end(self, run, record):
        record["plugin_steps"] = self.steps
        record["plugin_epoch_steps"] = self.epoch_steps
        if "edge_weights" in record:
            record["edge_entropy"] = edge_entropy(record["edge_weights"])
        if self.stop_at_epoch is not None and record["epoch"] >= self.stop_at_epoch:
            run.request_stop(f"step_counter: epoch {record['epoch']} reached", rule="plugin_stop_at_epoch",
                             value=self.stop_at_epoch)

    def on_end(self, run, summary):
        summary["plugin_steps"] = self.steps

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.resumed_from = state
        self.steps = 0 if state is None else int(state["steps"])


# ---- registration ---------------------------------------------------------------------------------------

def register() -> None:
    """Register everything above; what is registered already (to these objects) is left as it is."""
    if OP not in OPS:
        register_op(OP, ShiftConv, conv=True)
    if DATASET not in DATASETS:
        register_dataset(DATASET, Blobs(128, seed=11), test=Blobs(32, seed=12), classes=CLASSES)
    if METHOD not in METHODS:
        register_method(LazyMilenas)
    if CALLBACK_SECTION not in SECTIONS:
        register_section(CALLBACK_SECTION, StepCounterConfig, f"callback {CALLBACK}")
    if CALLBACK not in CALLBACKS:
        register_callback(CALLBACK, StepCounter.from_config)


def unregister() -> None:
    """Remove everything :func:`register` added (missing entries are skipped)."""
    if OP in OPS:
        unregister_op(OP)
    if DATASET in DATASETS:
        unregister_dataset(DATASET)
    unregister_method(METHOD)
    unregister_section(CALLBACK_SECTION)
    unregister_callback(CALLBACK)


register()
