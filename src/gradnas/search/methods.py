"""Architecture optimizers: how one search step updates the weights w and the architecture alpha.

One class per method, registered by name in the one registry of search methods
(``gradnas.search.algorithm.METHODS``, with ``@register_method``); each takes a supernet that exposes
``weight_parameters()`` and ``arch_parameters()`` and the two optimizers, and implements
``step(train_batch, val_batch)``. The epoch loop around them is ``gradnas.search.gradient.GradientSearch``;
the run around that (metrics, checkpoints, callbacks) is ``gradnas.search.loop.Search``.

A plug-in method subclasses :class:`ArchOptimizer`, sets ``name`` (and ``orders``, ``uses_val_batch``), declares
the config keys it reads (``reads``, e.g. ``("lambda",)``; an option no running component reads is refused)
and, for settings of its own, ``config_section`` + ``config_class`` (a frozen dataclass, handed to it as
``self.config``). Its forward passes go through ``self._forward`` (or call ``self.net`` under ``self._autocast``),
so the search's ``compile`` and ``precision`` apply to them; ``self.model`` is the eager module.

Notation: L_tr is the loss on the batch that trains w, L_val the loss on the batch from the
architecture half of the split.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import ClassVar

import torch
import torch.nn.functional as F

from gradnas.errors import GradnasError
from gradnas.search import accel, hypergrad
from gradnas.search.algorithm import METHODS, method_class, register_method


class StepStats(dict):
    """Per-step numbers for the loop's running averages: ``{train,val}_loss`` / ``_correct`` / ``_n`` on each
    batch used. The built-in methods give the loss and the correct count as 0-dim tensors on the device
    (detached), the count as an int, so that a step never waits for the device; the epoch loop sums them
    there and reads them where it shows or records them. Python numbers (a plug-in's) work as well;
    ``float(stats["train_loss"])`` reads either (:meth:`numbers`: all of them)."""

    def numbers(self) -> dict:
        """The stats as Python numbers (waits for the device)."""
        return {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in self.items()}


class ArchOptimizer:
    name: ClassVar[str] = "base"
    orders: ClassVar[tuple] = (1,)
    #: does the method read the architecture-half batch?
    uses_val_batch: ClassVar[bool] = True
    #: config keys it reads beyond the common ones and the epoch loop's (see gradnas.config.check_components)
    reads: ClassVar[tuple] = ()
    #: a section of its own (plug-ins): the top-level config key and its frozen dataclass
    config_section: ClassVar[str | None] = None
    config_class: ClassVar[type | None] = None

    def __init__(self, model, *, w_optim: torch.optim.Optimizer, a_optim: torch.optim.Optimizer,
                 grad_clip: float = 5.0, order: int = 1, lam: float = 1.0, xi: float | None = None,
                 fd_scale: float | None = None, config=None, net=None, precision: str = "fp32"):
        if order not in self.orders:
            raise GradnasError(f"method {self.name!r} supports order {' or '.join(map(str, self.orders))}, "
                               f"not {order}")
        if order == 1 and (xi is not None or fd_scale is not None):
            raise GradnasError("xi and fd_scale belong to the second-order virtual step; set order: 2 "
                               "(darts or milenas) or remove them")
        if order == 2 and not isinstance(w_optim, torch.optim.SGD):
            raise GradnasError(f"second order unrolls one step of SGD; the weight optimizer is "
                               f"{type(w_optim).__name__}")
        if xi is not None and xi < 0 or fd_scale is not None and fd_scale <= 0:
            raise GradnasError(f"xi must be >= 0 and fd_scale > 0 (got xi={xi}, fd_scale={fd_scale})")
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
        self.xi = xi  # None: the current weight learning rate (DARTS)
        self.fd_scale = hypergrad.FD_SCALE if fd_scale is None else fd_scale
        #: the method's own config section (an instance of ``config_class``), or None
        self.config = config if config is not None or self.config_class is None else self.config_class()
        #: what runs the forward passes of a step: the model, or its compiled forward
        #: (``gradnas.search.accel.compile_forward``); parameters, state and evaluation stay the model's
        self.net = model if net is None else net
        #: fp32, or bf16: the forward passes under bfloat16 autocast, losses in float32 (accel.autocast)
        if precision not in accel.PRECISIONS:
            raise GradnasError(f"precision must be one of {', '.join(accel.PRECISIONS)}, got {precision!r}")
        self.precision = precision

    def step(self, train_batch, val_batch) -> StepStats:
        raise NotImplementedError

    # -- shared pieces
    def begin_step(self) -> None:
        """Called by the epoch loop before every step (CUDA graphs mark a new step)."""
        if hasattr(self.net, "step_begin"):
            self.net.step_begin()

    def _autocast(self, x: torch.Tensor):
        return accel.autocast(x.device, self.precision)

    def _forward(self, batch):
        """(loss, correct, n) of the step's net on ``batch``: the loss a float32 tensor with its graph, the
        correct count a detached 0-dim tensor, n an int."""
        x, y = batch
        with self._autocast(x):
            logits = self.net(x)
        loss = F.cross_entropy(accel.full_precision(logits), y)  # under bf16 the loss in float32
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

    def _functional(self) -> hypergrad.Functional:
        return hypergrad.Functional(self.model, self.weights, sync=self.grad_sync,
                                    net=self.net if self.net is not self.model else None, precision=self.precision)

    def _current_xi(self) -> float:
        return self.w_optim.param_groups[0]["lr"] if self.xi is None else self.xi

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


def _correct(logits, y) -> torch.Tensor:
    """Correct predictions of a batch, a 0-dim int64 tensor on the logits' device (read without a wait)."""
    return (logits.detach().argmax(1) == y).sum()


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
        return StepStats(train_loss=loss.detach(), train_correct=correct, train_n=n)


@register_method
class Bilevel(ArchOptimizer):
    """DARTS: alpha descends L_val(w, alpha), then w descends L_tr(w, alpha) with the new alpha.

    First order uses grad_a L_val at the current w. Its pass computes the alpha gradient only, which skips
    every weight gradient (the costly part of depthwise conv backward). Second order (DARTS eq. 7-8)
    uses the gradient through one virtual SGD step, w' = w - xi * d (see ``gradnas.search.hypergrad``):
    grad_a L_val(w', a) - xi * grad^2_{a,w} L_tr(w, a) grad_{w'} L_val(w', a), the Hessian-vector
    product by central finite differences.
    """

    name = "darts"
    orders = (1, 2)
    reads = ("xi", "fd_scale")

    def step(self, train_batch, val_batch):
        if self.order == 1:
            val_loss, val_correct, val_n, g_val = self._alpha_grad(val_batch)
            val_loss = val_loss.detach()
        else:
            fn = self._functional()
            unrolled = hypergrad.virtual_step(fn, self.weights, self.w_optim, train_batch, self._current_xi())
            g_val, outer, _ = hypergrad.unrolled_term(fn, unrolled, self.alphas, val_batch, train_batch,
                                                      fd_scale=self.fd_scale)
            val_loss, val_correct, val_n = outer.loss, outer.correct, outer.n
        self._set_alpha_grads(g_val)
        self.a_optim.step()

        self.w_optim.zero_grad(set_to_none=True)
        loss, correct, n = self._forward(train_batch)
        loss.backward(inputs=self.weights)
        self._sync_param_grads(self.weights)
        self._weight_step()
        return StepStats(train_loss=loss.detach(), train_correct=correct, train_n=n,
                         val_loss=val_loss, val_correct=val_correct, val_n=val_n)


@register_method
class MixedLevel(ArchOptimizer):
    """MiLeNAS. Both updates start from the same (w, alpha).

    First order (eq. 6): w <- w - lr_w grad_w L_tr; alpha <- alpha - lr_a (grad_a L_tr + lambda grad_a L_val).
    One backward of L_tr yields grad_w L_tr and grad_a L_tr together; the L_val pass computes the alpha
    gradient only. lambda = 0 skips the validation pass and is exactly single-level.

    Second order (section 3.1 and supplementary B): alpha descends the one-step unrolled gradient of the
    validation loss plus lambda times that of the training loss, each with its own finite-difference
    correction (eps_val from grad_{w'} L_val, eps_tr from grad_{w'} L_tr). The weight step reuses
    grad_w L_tr(w, alpha), the gradient the virtual step is built from.

    Where lambda sits, as the paper writes each update: on L_val in the first order (eq. 6:
    grad_a L_tr + lambda grad_a L_val, so lambda = 0 is single-level) and on L_tr in the second order
    (supplementary B: grad_a L_val(w') + lambda grad_a L_tr(w'), so lambda = 0 is DARTS-2nd). Both are
    implemented as written. The authors' released code differs: it adds lambda * g_tr to g_val in both
    orders (first order: grad_a L_val + lambda grad_a L_tr). The two agree at lambda = 1 (the paper's
    default, and gradnas's); for another lambda, gradnas's first order with lambda equals the authors' with
    1 / lambda, up to a factor lambda on the step (alpha's lr).
    """

    name = "milenas"
    orders = (1, 2)
    reads = ("lambda", "xi", "fd_scale")

    def step(self, train_batch, val_batch):
        self.w_optim.zero_grad(set_to_none=True)
        self.a_optim.zero_grad(set_to_none=True)
        loss, correct, n = self._forward(train_batch)
        stats = StepStats(train_loss=loss.detach(), train_correct=correct, train_n=n)
        if self.order == 1:
            loss.backward()  # grad_w L_tr and grad_a L_tr in one pass
            self._sync_param_grads(self.weights + self.alphas)
            if self.lam > 0:
                val_loss, val_correct, val_n, g_val = self._alpha_grad(val_batch)
                for a, g in zip(self.alphas, g_val):
                    a.grad.add_(g, alpha=self.lam)
                stats.update(val_loss=val_loss.detach(), val_correct=val_correct, val_n=val_n)
        else:
            loss.backward(inputs=self.weights)  # grad_w L_tr(w, a): the weight step and the virtual step
            self._sync_param_grads(self.weights)
            fn = self._functional()
            unrolled = hypergrad.virtual_step(fn, self.weights, self.w_optim, train_batch, self._current_xi(),
                                              train_grads=[w.grad for w in self.weights])
            g_alpha, outer, _ = hypergrad.unrolled_term(fn, unrolled, self.alphas, val_batch, train_batch,
                                                        fd_scale=self.fd_scale)
            stats.update(val_loss=outer.loss, val_correct=outer.correct, val_n=outer.n)
            if self.lam > 0:
                g_tr, _, _ = hypergrad.unrolled_term(fn, unrolled, self.alphas, train_batch, train_batch,
                                                     fd_scale=self.fd_scale)
                g_alpha = [gv + self.lam * gt for gv, gt in zip(g_alpha, g_tr)]
            self._set_alpha_grads(g_alpha)
        self._weight_step()
        self.a_optim.step()
        return stats


def make_method(name: str, model, **kwargs) -> ArchOptimizer:
    """The architecture optimizer ``name`` over ``model`` (keyword arguments: see :class:`ArchOptimizer`)."""
    cls = method_class(name)
    if not (isinstance(cls, type) and issubclass(cls, ArchOptimizer)):
        raise GradnasError(f"method {name!r} runs its own search loop, not per-batch steps; start it through "
                           f"gradnas.search.loop.Search (gradnas search --method {name})")
    return cls(model, **kwargs)
