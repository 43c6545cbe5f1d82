"""Architecture optimizers: how one search step updates the weights w and the architecture alpha.

One class per method, registered by name; each takes a supernet that exposes ``weight_parameters()`` and
``arch_parameters()`` and the two optimizers, and implements ``step(train_batch, val_batch)``. The loop
around them (epochs, schedules, metrics, checkpoints) is shared: see ``gradnas.search.loop``.

Notation: L_tr is the loss on the batch that trains w, L_val the loss on the batch from the
architecture half of the split.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import ClassVar

import torch
import torch.nn.functional as F

from gradnas.errors import GradnasError

METHODS: dict[str, type["ArchOptimizer"]] = {}


def register_method(cls):
    METHODS[cls.name] = cls
    return cls


class StepStats(dict):
    """Per-step numbers for the loop's running averages: loss/correct/count on each batch used."""


class ArchOptimizer:
    name: ClassVar[str] = "base"
    orders: ClassVar[tuple] = (1,)
    #: does the method read the architecture-half batch?
    uses_val_batch: ClassVar[bool] = True

    def __init__(self, model, *, w_optim: torch.optim.Optimizer, a_optim: torch.optim.Optimizer,
                 grad_clip: float = 5.0, order: int = 1, lam: float = 1.0):
        if order not in self.orders:
            raise GradnasError(f"method {self.name!r} supports order {' or '.join(map(str, self.orders))}, "
                               f"not {order}")
        self.model = model
        self.w_optim, self.a_optim = w_optim, a_optim
        self.grad_clip = grad_clip
        self.order = order
        self.lam = lam
        self.weights = model.weight_parameters()
        self.alphas = model.arch_parameters()
        #: how gradients become global: None on one process; under data parallelism a callable that
        #: averages a list of tensors across ranks in place (set by the loop, see `_sync`).
        self.grad_sync = None

    def step(self, train_batch, val_batch) -> StepStats:
        raise NotImplementedError

    # -- shared pieces
    def _forward(self, batch):
        x, y = batch
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        return loss, _correct(logits, y), y.numel()

    def _sync(self, tensors):
        """Average freshly computed gradients across data-parallel ranks (no-op on one process).

        Every gradient a method computes passes through here before it is used, so a K-process run sees
        the gradient of the global batch, as a 1-process run would."""
        tensors = [t for t in tensors if t is not None]
        if self.grad_sync is not None and tensors:
            self.grad_sync(tensors)
        return tensors

    def _sync_param_grads(self, params) -> None:
        self._sync([p.grad for p in params])

    def _weight_step(self) -> None:
        """Clip the weight gradient (never alpha's) and take the SGD step."""
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.weights, self.grad_clip)
        self.w_optim.step()

    @contextmanager
    def _alpha_only(self):
        """A pass that needs only alpha's gradient: the weights stop requiring grad meanwhile, so no op
        computes or keeps anything for a weight gradient (the costly half of a conv backward)."""
        for w in self.weights:
            w.requires_grad_(False)
        try:
            yield
        finally:
            for w in self.weights:
                w.requires_grad_(True)

    def _alpha_grad(self, batch):
        """(loss, correct, n, grad_alpha L(batch)) at the current weights."""
        with self._alpha_only():
            loss, correct, n = self._forward(batch)
            grads = torch.autograd.grad(loss, self.alphas)
        self._sync(grads)
        return loss, correct, n, grads

    def _set_alpha_grads(self, grads) -> None:
        for a, g in zip(self.alphas, grads):
            a.grad = g

    def state_dict(self) -> dict:
        """Method-specific state beyond the two optimizers (none for the first-order methods)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _correct(logits, y) -> int:
    return int((logits.detach().argmax(1) == y).sum())


@register_method
class SingleLevel(ArchOptimizer):
    """Single-level (single-level paper, eq. 3): w and alpha both descend L_tr, from one backward pass."""

    name = "single-level"
    uses_val_batch = False

    def step(self, train_batch, val_batch=None):
        self.w_optim.zero_grad(set_to_none=True)
        self.a_optim.zero_grad(set_to_none=True)
        loss, correct, n = self._forward(train_batch)
        loss.backward()
        self._sync_param_grads(self.weights + self.alphas)
        self._weight_step()
        self.a_optim.step()
        return StepStats(train_loss=loss.item(), train_correct=correct, train_n=n)


@register_method
class Bilevel(ArchOptimizer):
    """DARTS first order: alpha descends L_val(w, alpha), then w descends L_tr(w, alpha).

    The alpha step comes first, as in DARTS, so both use the same w. Its pass computes the alpha
    gradient only, which skips every weight gradient (the costly part of depthwise conv backward).
    """

    name = "darts"

    def step(self, train_batch, val_batch):
        val_loss, val_correct, val_n, g_val = self._alpha_grad(val_batch)
        self._set_alpha_grads(g_val)
        self.a_optim.step()

        self.w_optim.zero_grad(set_to_none=True)
        loss, correct, n = self._forward(train_batch)
        loss.backward(inputs=self.weights)
        self._sync_param_grads(self.weights)
        self._weight_step()
        return StepStats(train_loss=loss.item(), train_correct=correct, train_n=n,
                         val_loss=val_loss.item(), val_correct=val_correct, val_n=val_n)


@register_method
class MixedLevel(ArchOptimizer):
    """MiLeNAS first order (eq. 6): w <- w - lr_w grad_w L_tr;
    alpha <- alpha - lr_a (grad_a L_tr + lambda grad_a L_val), both gradients at the same (w, alpha).

    One backward of L_tr yields grad_w L_tr and grad_a L_tr together; the L_val pass computes the
    alpha gradient only. lambda = 0 skips the validation pass and is exactly single-level.
    """

    name = "milenas"

    def step(self, train_batch, val_batch):
        self.w_optim.zero_grad(set_to_none=True)
        self.a_optim.zero_grad(set_to_none=True)
        loss, correct, n = self._forward(train_batch)
        loss.backward()  # grad_w L_tr and grad_a L_tr in one pass
        self._sync_param_grads(self.weights + self.alphas)
        stats = StepStats(train_loss=loss.item(), train_correct=correct, train_n=n)
        if self.lam > 0:
            val_loss, val_correct, val_n, g_val = self._alpha_grad(val_batch)
            for a, g in zip(self.alphas, g_val):
                a.grad.add_(g, alpha=self.lam)
            stats.update(val_loss=val_loss.item(), val_correct=val_correct, val_n=val_n)
        self._weight_step()
        self.a_optim.step()
        return stats


def method_class(name: str) -> type[ArchOptimizer]:
    try:
        return METHODS[name]
    except KeyError:
        raise GradnasError(f"unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}") from None


def make_method(name: str, model, **kwargs) -> ArchOptimizer:
    return method_class(name)(model, **kwargs)
