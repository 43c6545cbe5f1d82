"""Export an evaluation network for use outside gradnas (``gradnas export``).

Four formats, each of the network in eval mode (BatchNorm running statistics, no drop path, no auxiliary
head output), taking a float32 batch of N x C x H x W images (the shape of the run's images, any batch
size) and returning the N x classes logits:

* ``state_dict``: ``torch.save`` of the weights (load with ``torch.load(..., weights_only=True)`` into
  ``gradnas.load_network(source, weights=False)``);
* ``pt2``: ``torch.export.export`` + ``torch.export.save`` (load with ``torch.export.load(f).module()``);
* ``onnx``: the dynamo-based ONNX exporter, ``torch.onnx.export(..., dynamo=True)``, input ``images``,
  output ``logits`` (run with onnxruntime); needs the ``export`` extra: ``pip install 'gradnas[export]'``;
* ``torchscript``: ``torch.jit.script`` (load with ``torch.jit.load``).

The batch dimension is dynamic in pt2 and onnx (traced with a batch of 2); the image size is fixed.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
from pathlib import Path

import torch

from gradnas.errors import GradnasError

FORMATS = ("state_dict", "pt2", "onnx", "torchscript")
ONNX_PACKAGES = ("onnx", "onnxscript")  # what torch.onnx.export(dynamo=True) imports; onnxruntime runs the file
INSTALL_EXPORT = "pip install 'gradnas[export]' (or: pip install onnx onnxscript onnxruntime)"
EXAMPLE_BATCH = 2  # a batch of 1 would let torch.export specialise the batch dimension to 1


def export_network(network: torch.nn.Module, out, *, format: str, input_shape: tuple) -> Path:
    """Write ``network`` (put in eval mode, on its device) to ``out`` in ``format``; ``input_shape`` is one
    image's (channels, height, width). Returns the path written. The file appears whole or not at all."""
    if format not in FORMATS:
        raise GradnasError(f"unknown export format {format!r}; valid formats: {', '.join(FORMATS)}")
    if format == "onnx":
        missing = [p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None]
        if missing:
            raise GradnasError(f"--format onnx needs the package(s) {', '.join(missing)}; install them with "
                               f"{INSTALL_EXPORT}")
    if input_shape is None or len(input_shape) != 3:
        raise GradnasError(f"export needs one image's shape (channels, height, width), got {input_shape!r}")
    out = Path(out)
    if not out.parent.is_dir():
        raise GradnasError(f"cannot write {out}: the folder {out.parent} does not exist; create it first")
    network.eval()
    device = next(network.parameters()).device
    example = torch.zeros(EXAMPLE_BATCH, *input_shape, device=device)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")  # same suffix: torch.export.save checks it
    try:
        _WRITERS[format](network, example, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def export_source(source, out, *, format: str, **load_options) -> tuple:
    """Export the network ``gradnas.load_network(source, **load_options)`` gives (built on the CPU):
    (path written, its NetworkPlan)."""
    from gradnas.network import build_planned, plan_network
    plan = plan_network(source, **load_options)
    if plan.input_shape is None:
        raise GradnasError(f"the image size of {plan.source}'s network is not known (its dataset is not a builtin "
                           "one); export a training run folder, whose network.json records it")
    network = build_planned(plan, device="cpu")
    return export_network(network, out, format=format, input_shape=plan.input_shape), plan


# ---- writers -----------------------------------------------------------------------------------

def _state_dict(network, example, path: Path) -> None:
    torch.save(network.state_dict(), path)


def _dynamic_batch(example) -> tuple:
    return ({0: torch.export.Dim("batch", min=1)},)


def _pt2(network, example, path: Path) -> None:
    with torch.no_grad():
        program = _unsupported("torch.export", lambda: torch.export.export(
            network, (example,), dynamic_shapes=_dynamic_batch(example)))
    torch.export.save(program, str(path))


def _onnx(network, example, path: Path) -> None:
    # The exporter prints its progress; the one line gradnas export prints is enough.
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        _unsupported("the ONNX exporter", lambda: torch.onnx.export(
            network, (example,), str(path), dynamo=True, input_names=["images"], output_names=["logits"],
            dynamic_shapes=_dynamic_batch(example), external_data=False, verbose=False))


def _torchscript(network, example, path: Path) -> None:
    scripted = _unsupported("torch.jit.script", lambda: torch.jit.script(network))
    scripted.save(str(path))


def _unsupported(tool: str, run):
    """``run()``; a failure of the exporter (e.g. a custom op it cannot read) as one clear error."""
    try:
        return run()
    except GradnasError:
        raise
    except Exception as exc:  # noqa: BLE001 - the exporters raise many kinds; re-raised as one message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GradnasError(f"{tool} could not export the network ({type(exc).__name__}: {first}); the builtin "
                           "ops export, a custom op (register_op) must itself be exportable with it") from exc


_WRITERS = {"state_dict": _state_dict, "pt2": _pt2, "onnx": _onnx, "torchscript": _torchscript}
