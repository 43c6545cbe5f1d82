"""How a search step runs fast on a GPU: a compiled supernet forward, bf16 autocast, and batches prepared
one step ahead. None of it changes what a step computes in fp32 without compilation (the default).

* :func:`compile_forward` wraps the supernet with ``torch.compile`` (config ``compile``: ``default``,
  ``reduce-overhead`` = CUDA graphs, ``max-autotune``). The scope is the supernet's forward pass, so every
  per-batch method (both orders, the finite-difference passes included) runs through it, and autograd
  differentiates the compiled graph. The eager module stays the one that is saved, loaded, evaluated and
  probed: checkpoints of a compiled search have the eager keys (no ``_orig_mod.``) and resume either way.
  Inductor fuses ops, so compiled numbers differ from eager ones in the last bits; the ``aot_eager``
  backend (same kernels) reproduces eager bit for bit (tests/test_step_perf.py).
* :func:`autocast` is the bf16 autocast of config ``precision`` (as training's): the forward passes run in
  bfloat16 where autocast chooses to, losses are taken in float32, weights, alphas and optimizer state stay
  float32.
* :class:`Prefetcher` draws the next batch on a side CUDA stream while the current step runs (the loader's
  gather and augmentation, and a pinned, non-blocking copy of host tensors); on the CPU it passes the
  batches through.
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import torch

from gradnas.config import COMPILE_MODES, SEARCH_PRECISIONS as PRECISIONS
from gradnas.errors import GradnasError
from gradnas.relax import Relaxation

#: the torch.compile backend of every mode but off (tests set "aot_eager": eager kernels, bit-for-bit)
BACKEND = "inductor"


def check_compile(mode: str, *, relaxation=None, device=None) -> None:
    """Refuse what a compiled forward cannot run (one GradnasError naming the fix)."""
    if mode not in COMPILE_MODES:
        raise GradnasError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    if mode == "off":
        return
    if relaxation is not None and type(relaxation).forward_weights is not Relaxation.forward_weights:
        # Gumbel (GDAS) samples the ops of every forward pass on the host (its own CPU generator, then
        # the sampled columns as Python lists): the graph would change with every sample.
        raise GradnasError(f"compile {mode} cannot capture relaxation {relaxation.name!r}: it samples which ops a "
                           "forward pass runs (host-side randomness and data-dependent control flow); use "
                           "compile: off with it, or a deterministic relaxation (softmax, sigmoid)")
    if mode == "reduce-overhead" and device is not None and torch.device(device).type != "cuda":
        raise GradnasError("compile reduce-overhead captures CUDA graphs and needs a CUDA device; on the CPU use "
                           "compile: default (or max-autotune)")


def compile_forward(model: torch.nn.Module, mode: str, *, backend: str | None = None):
    """The callable that runs ``model``'s forward pass for the search step: ``model`` itself for mode off,
    else ``torch.compile(model, mode=...)`` (an ``OptimizedModule`` sharing ``model``'s parameters and buffers;
    save and load ``model``, never the wrapper). ``backend``: default :data:`BACKEND`."""
    check_compile(mode)
    if mode == "off":
        return model
    backend = backend or BACKEND
    # Only inductor has modes; aot_eager and other backends take none.
    options = {"mode": mode} if backend == "inductor" and mode != "default" else {}
    return CompiledForward(model, torch.compile(model, backend=backend, **options), mode)


class CompiledForward:
    """``torch.compile(model)`` as the search step calls it.

    Inside the compiled region the separable / dilated convs use plain autograd
    (``gradnas.space.ops.twice_differentiable``): their memory-saving ``autograd.Function`` recomputes in a
    backward that calls autograd itself, which Dynamo cannot trace (it would break the graph into pieces).
    Same forward numbers; the gradients too (its backward computes what autograd does).
    ``parameter_prefix`` is what the wrapper's parameter names carry (``torch.func.functional_call``)."""

    parameter_prefix = "_orig_mod."

    def __init__(self, model: torch.nn.Module, compiled: torch.nn.Module, mode: str):
        self.model, self.compiled, self.mode = model, compiled, mode

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from gradnas.space.ops import twice_differentiable
        with twice_differentiable():
            return self.compiled(x)

    def functional(self, tensors: dict, x: torch.Tensor) -> torch.Tensor:
        """``functional_call`` of the compiled model with ``tensors`` (names of the eager model) substituted."""
        from torch.func import functional_call

        from gradnas.space.ops import twice_differentiable
        prefixed = {self.parameter_prefix + name: t for name, t in tensors.items()}
        with twice_differentiable():
            return functional_call(self.compiled, prefixed, (x,))

    def step_begin(self) -> None:
        """A new step: CUDA graphs (reduce-overhead) may reuse the memory of the last step's outputs."""
        if self.mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()


def autocast(device, precision: str):
    """The autocast context of a forward pass in ``precision`` (bf16: bfloat16 autocast on ``device``'s type;
    fp32: none)."""
    if precision not in PRECISIONS:
        raise GradnasError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def full_precision(logits: torch.Tensor) -> torch.Tensor:
    """Logits as the loss takes them: bfloat16 / float16 ones (autocast's) in float32, others as they are (the
    same tensor: fp32 and float64 runs are untouched)."""
    return logits.float() if logits.dtype in (torch.bfloat16, torch.float16) else logits


def check_precision(precision: str, device) -> None:
    if precision not in PRECISIONS:
        raise GradnasError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise GradnasError("precision bf16 needs a GPU with bfloat16 support; use --precision fp32")


class Prefetcher:
    """Iterate over ``batches`` (nested tuples / lists of tensors), each moved to ``device``.

    On CUDA (``ahead`` default) the next item is drawn while the current one is used: the loader runs on a
    side stream (its gathers and augmentation), host tensors are pinned and copied with non_blocking=True, and
    the compute stream waits for that stream before it is handed the item. Elsewhere the items pass through
    in turn (``ahead=True`` draws one ahead there as well, for tests). Same items, same order, either way;
    an item drawn ahead of a loop that stops early is dropped (a resumed loop starts its loader again at its
    step, see ``PairedBatches.epoch``). The loader's random streams are its own, so drawing ahead changes
    no draw a step makes."""

    def __init__(self, batches: Iterable, device, *, ahead: bool | None = None):
        self.batches = batches
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        self.ahead = cuda if ahead is None else ahead
        self.stream = torch.cuda.Stream(self.device) if cuda and self.ahead else None

    def __iter__(self) -> Iterator:
        it = iter(self.batches)
        if not self.ahead:
            for item in it:
                yield self._move(item)
            return
        pending = self._draw(it)
        while pending is not _END:
            item = pending
            if self.stream is not None:
                current = torch.cuda.current_stream(self.device)
                current.wait_stream(self.stream)
                self._record(item, current)
            pending = self._draw(it)  # the next one, while the caller computes on this one
            yield item

    def _draw(self, it):
        with torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext():
            try:
                return self._move(next(it))
            except StopIteration:
                return _END

    def _move(self, item, memo=None):
        # ``memo``: what each object of this item became, so an object that appears twice (same-batch alpha
        # data hands the train pair as the validation pair) is still one object afterwards
        memo, key = ({} if memo is None else memo), id(item)
        if key in memo:
            return memo[key]
        if isinstance(item, torch.Tensor):
            out = item
            if item.device != self.device:
                if self.device.type == "cuda" and item.device.type == "cpu" and not item.is_pinned():
                    item = item.pin_memory()
                out = item.to(self.device, non_blocking=True)
        elif isinstance(item, (tuple, list)):
            out = type(item)(self._move(t, memo) for t in item)
        else:
            out = item
        memo[key] = out
        return out

    def _record(self, item, stream) -> None:
        # tensors made on the side stream are used on the compute stream: keep their memory until it is done
        if isinstance(item, torch.Tensor):
            item.record_stream(stream)
        elif isinstance(item, (tuple, list)):
            for t in item:
                self._record(t, stream)


_END = object()
