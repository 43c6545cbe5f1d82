"""Second-order architecture gradients: the one-step unrolled hypergradient (DARTS eq. 7-8; MiLeNAS 3.1
and supplementary B), shared by DARTS-2nd and MiLeNAS-2nd.

For an outer loss f (L_val, or L_tr for MiLeNAS's training term) and the inner training loss L_tr,
the weights after one virtual step of the weight optimizer are

    w' = w - xi * d(w, alpha),   d = the SGD step direction: grad_w L_tr(w, alpha) + wd * w, plus
                                     momentum * buffer (the optimizer's own update, as DARTS takes it),

and the gradient of f(w'(alpha), alpha) with respect to alpha is, exactly,

    grad_a f(w', a) - xi * H v,   H = grad^2_{a,w} L_tr(w, a),  v = grad_{w'} f(w', a)        (eq. 7)

(wd * w and the momentum buffer do not depend on alpha). H v is a mixed second derivative; it is taken
by central finite differences (eq. 8), which costs two passes that need only alpha's gradient:

    H v ~ [grad_a L_tr(w + eps v, a) - grad_a L_tr(w - eps v, a)] / (2 eps),   eps = 0.01 / ||v||.

Everything here is pure: the virtual weights are passed to the network with
``torch.func.functional_call``, so the real parameters, their ``.grad``, the optimizer state, the
BatchNorm running statistics (each pass gets its own copy of the buffers) and the global random stream
(each pass runs under ``fork_rng``) are never touched. Only alpha's gradient comes out.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call

from gradnas.search.accel import autocast, full_precision

#: DARTS's finite-difference step: eps = FD_SCALE / ||v||
FD_SCALE = 0.01

Batch = tuple  # (x, y)


@dataclass
class Pass:
    """Loss, correct predictions and batch size of one forward pass (for the loop's running averages): the
    loss and the count as detached 0-dim tensors on the device (read without waiting for it), n an int."""

    loss: torch.Tensor
    correct: torch.Tensor
    n: int


class Functional:
    """The supernet as a function of (weights, batch): the weights are substituted for the module's own
    weight parameters; alphas stay the module's parameters, so autograd can reach them.

    ``sync`` (optional) averages a list of gradient tensors in place across data-parallel ranks. ``net``
    (optional): the model's compiled forward (``gradnas.search.accel.CompiledForward``) to run instead;
    ``precision`` bf16: every pass under bfloat16 autocast, the loss in float32."""

    def __init__(self, model: torch.nn.Module, weights: Sequence[torch.nn.Parameter],
                 sync: Callable | None = None, *, net=None, precision: str = "fp32"):
        self.model = model
        by_id = {id(p): name for name, p in model.named_parameters()}
        self.names = [by_id[id(w)] for w in weights]
        self.sync = sync
        self.net = net
        self.precision = precision

    def _grad(self, loss, inputs, *, materialize: bool = True):
        # Weights of ops a sampled (Gumbel) forward pass did not run get an exact zero gradient, or None
        # (materialize=False) where, as for torch.optim.SGD, "no gradient" must differ from a zero one.
        grads = list(torch.autograd.grad(loss, inputs, allow_unused=True, materialize_grads=materialize))
        if self.sync is not None:
            self.sync([g for g in grads if g is not None])
        return grads

    @contextmanager
    def _isolated(self):
        """Keep the real step's random streams as they were: the global one and the relaxation's own
        generator (Gumbel noise). Every virtual pass therefore sees the draws the real step will see: the
        hypergradient is taken for the very architecture sample the weights then train."""
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
        generator = getattr(getattr(self.model, "relaxation", None), "generator", None)
        saved = generator.get_state() if generator is not None else None
        try:
            with torch.random.fork_rng(devices=devices):
                yield
        finally:
            if generator is not None:
                generator.set_state(saved)

    @contextmanager
    def in_float32(self):
        """The passes inside run without autocast, whatever the precision: the finite differences of
        :func:`fd_hvp`, whose weight perturbation eps * v (0.01 in norm over all weights) is below bfloat16's
        resolution of most weights; in bf16 they give noise (alpha gradients measured at a cosine of 0.09 to
        0.7 to fp32's in tests/test_step_perf.py's setting, against >= 0.95 with float32 differences)."""
        saved, self.precision = self.precision, "fp32"
        try:
            yield
        finally:
            self.precision = saved

    def forward(self, weights: Sequence[torch.Tensor], batch: Batch):
        x, y = batch
        # fresh copies of the buffers: training-mode BN updates its running statistics in place
        tensors = {name: buf.clone() for name, buf in self.model.named_buffers()}
        tensors.update(zip(self.names, weights))
        with autocast(x.device, self.precision):
            logits = (functional_call(self.model, tensors, (x,)) if self.net is None else
                      self.net.functional(tensors, x))
        loss = F.cross_entropy(full_precision(logits), y)
        return loss, Pass(loss.detach(), (logits.detach().argmax(1) == y).sum(), y.numel())

    def weight_grad(self, weights, batch):
        """grad_w L(w, alpha; batch) (alpha's gradient is not computed)."""
        with self._isolated():
            w = [t.detach().requires_grad_(True) for t in weights]
            loss, info = self.forward(w, batch)
            return self._grad(loss, w, materialize=False), info

    def alpha_grad(self, weights, alphas, batch):
        """grad_a L(w, alpha; batch); the weights are constants, so no weight gradient is computed."""
        with self._isolated():
            loss, info = self.forward([t.detach() for t in weights], batch)
            return self._grad(loss, alphas), info

    def both_grads(self, weights, alphas, batch):
        """(grad_a L, grad_w L) at the given weights, from one backward pass."""
        with self._isolated():
            w = [t.detach().requires_grad_(True) for t in weights]
            loss, info = self.forward(w, batch)
            grads = self._grad(loss, list(alphas) + w)
            return grads[:len(alphas)], grads[len(alphas):], info


def sgd_direction(w_optim: torch.optim.SGD, weights: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]):
    """The direction d of the next step of ``w_optim`` (w <- w - lr * d) for these gradients, computed as
    torch.optim.SGD computes it (weight decay, momentum buffer, dampening, Nesterov), without stepping."""
    if not isinstance(w_optim, torch.optim.SGD):
        raise TypeError(f"the virtual step follows torch.optim.SGD, not {type(w_optim).__name__}")
    group_of = {id(p): g for g in w_optim.param_groups for p in g["params"]}
    out = []
    for w, g in zip(weights, grads):
        if g is None:  # SGD skips a parameter without a gradient (an op a Gumbel sample did not run)
            out.append(torch.zeros_like(w))
            continue
        group = group_of[id(w)]
        g = -g if group.get("maximize") else g
        d = g + group["weight_decay"] * w.detach() if group["weight_decay"] else g
        mu = group["momentum"]
        if mu:
            buf = w_optim.state.get(w, {}).get("momentum_buffer")
            buf = d if buf is None else buf * mu + (1 - group["dampening"]) * d
            d = d + mu * buf if group["nesterov"] else buf
        out.append(d)
    return out


def fd_hvp(fn: Functional, weights, alphas, v, batch, *, scale: float = FD_SCALE):
    """Central finite difference of grad_a L(w, a; batch) along v: approximately grad^2_{a,w} L . v.

    eps = scale / ||v|| (DARTS), so the weights move by ``scale`` in norm. Returns (H v per alpha, eps)."""
    norm = torch.sqrt(sum((t.double() ** 2).sum() for t in v)).item()
    if norm == 0.0:  # f does not depend on w: the correction term is exactly zero
        return [torch.zeros_like(a) for a in alphas], 0.0
    eps = scale / norm
    with fn.in_float32():
        plus, _ = fn.alpha_grad([w + eps * t for w, t in zip(weights, v)], alphas, batch)
        minus, _ = fn.alpha_grad([w - eps * t for w, t in zip(weights, v)], alphas, batch)
    return [(p - m) / (2 * eps) for p, m in zip(plus, minus)], eps


@dataclass
class Unrolled:
    """The virtual step w' = w - xi * d, computed once and shared by every outer term."""

    weights: list  # w (detached views of the real parameters)
    virtual: list  # w'
    xi: float
    inner: Pass  # the training pass that gave d


def virtual_step(fn: Functional, weights, w_optim, train_batch: Batch, xi: float,
                 train_grads: Sequence[torch.Tensor] | None = None) -> Unrolled:
    """w' = w - xi * d(w, a); ``train_grads`` (grad_w L_tr at the current w and a) is computed when not given."""
    w = [t.detach() for t in weights]
    inner = None
    if train_grads is None:
        train_grads, inner = fn.weight_grad(w, train_batch)
    d = sgd_direction(w_optim, weights, train_grads)
    return Unrolled(w, [wi - xi * di for wi, di in zip(w, d)], xi, inner)


def unrolled_term(fn: Functional, unrolled: Unrolled, alphas, outer_batch: Batch, train_batch: Batch, *,
                  fd_scale: float = FD_SCALE):
    """grad_a f(w', a) - xi * grad^2_{a,w} L_tr(w, a) grad_{w'} f(w', a), f the loss on ``outer_batch``.

    Returns (gradient per alpha, the outer pass at w', the finite-difference eps)."""
    g_alpha, v, outer = fn.both_grads(unrolled.virtual, alphas, outer_batch)
    hv, eps = fd_hvp(fn, unrolled.weights, alphas, v, train_batch, scale=fd_scale)
    return [g - unrolled.xi * h for g, h in zip(g_alpha, hv)], outer, eps
