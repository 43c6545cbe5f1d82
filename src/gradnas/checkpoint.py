"""Checkpoints: one state dict per file, written atomically, checksummed, read back without running pickled code.

A checkpoint file (format ``gradnas.checkpoint/2``) is one header line and the bytes ``torch.save`` made of the
state dict::

    gradnas.checkpoint/2 sha256=<64 hex digits> size=<payload bytes>\n<payload>

The checksum travels in the same file as the bytes it covers, and the file is renamed into place whole, so a
crash can never pair a new payload with an old checksum; a flipped or lost byte anywhere is found on load.
Before a new checkpoint replaces ``checkpoint.pt`` the previous one is kept as ``checkpoint.prev.pt`` (a hard
link, so no copy is made): when the newest one is damaged, the error names the previous one and how to resume
from it (gradnas never switches to it by itself: the user decides to lose that unit of work).

Files of format ``gradnas.checkpoint/1`` (a bare ``torch.save`` zip, written by gradnas before checksums) still
load; they are not verified, and the next checkpoint the resumed run writes has a checksum.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import zipfile
from pathlib import Path

import torch

from gradnas.errors import GradnasError

logger = logging.getLogger(__name__)

FORMAT = "gradnas.checkpoint/2"
OLD_FORMATS = ("gradnas.checkpoint/1",)  # no checksum; still loaded
_HEADER = FORMAT.encode() + b" sha256="
_HEADER_MAX = 200  # bytes: the header line is far shorter


def previous_path(path: str | os.PathLike) -> Path:
    """Where the checkpoint before ``path``'s current one is kept (checkpoint.pt -> checkpoint.prev.pt)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(state: dict, path: str | os.PathLike, *, keep_previous: bool = True) -> None:
    """Write to a temporary file in the same folder, fsync, (``keep_previous``: keep the current checkpoint as the
    previous one, :func:`previous_path`,) then rename the new one over it: a crash at any moment leaves a whole
    checkpoint at ``path`` (the previous one or the new one, each with its own checksum), never a torn file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        buffer = io.BytesIO()
        torch.save({"format": FORMAT, **state}, buffer)
        payload = buffer.getbuffer()
        with open(tmp, "wb") as f:
            f.write(_HEADER + hashlib.sha256(payload).hexdigest().encode() + f" size={len(payload)}\n".encode())
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            _keep_previous(path)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed write (disk full) as RuntimeError
        tmp.unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip().splitlines()[0]
        kept = "the previous checkpoint there is intact" if path.exists() else "no earlier checkpoint exists"
        raise GradnasError(f"could not write the checkpoint {path} ({reason}); {kept}. Free some disk space "
                           "(or fix the folder's permissions), then resume the run") from None


def _keep_previous(path: Path) -> None:
    """checkpoint.pt -> checkpoint.prev.pt without ever leaving checkpoint.pt missing: a hard link (or, where
    the file system has none, a copy) under a temporary name, renamed over the old previous one."""
    prev = previous_path(path)
    tmp = prev.with_name(prev.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:
        import shutil
        shutil.copyfile(path, tmp)
    os.replace(tmp, prev)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _payload(path: Path) -> bytes:
    """The torch.save bytes of a checkpoint file, verified against its checksum (format 2), or the whole file
    (format 1, which has no checksum)."""
    data = path.read_bytes()
    if data.startswith(b"PK"):
        return data  # format 1: a bare torch.save zip
    head, sep, payload = data[:_HEADER_MAX].partition(b"\n")
    if not data.startswith(_HEADER) or not sep:
        raise _damaged(path, f"no {FORMAT!r} header")
    payload = data[len(head) + 1:]
    try:
        digest, size = head[len(_HEADER):].decode("ascii").split(" size=")
        size = int(size)
    except ValueError:
        raise _damaged(path, "its header is damaged") from None
    if size != len(payload):
        raise _damaged(path, f"it holds {len(payload)} bytes, its header says {size}")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise _damaged(path, "its contents do not match their SHA-256 checksum")
    return payload


def _damaged(path: Path, why: str) -> GradnasError:
    prev = previous_path(path)
    if path.name.endswith(".prev.pt") or not prev.is_file():
        fix = "no earlier checkpoint is kept: delete it to start the run afresh"
    else:
        fix = (f"the checkpoint before it is kept: to continue from there (the work since it is done again), "
               f"move it into place with `mv {prev} {path}` and resume; or delete it (and {prev.name}) to start the run "
               "afresh")
    return GradnasError(f"checkpoint {path} is corrupt or not a gradnas checkpoint ({why}); {fix}")


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load with ``weights_only=True``: tensors, numbers, strings and containers only; the checksum is
    verified first (a mismatch is one error naming the file and the previous checkpoint)."""
    path = Path(path)
    if not path.is_file():
        raise GradnasError(f"no checkpoint at {path}; resume needs a run folder written by `gradnas search`")
    try:
        payload = _payload(path)
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except GradnasError:
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GradnasError(f"checkpoint {path} is corrupt or not a gradnas checkpoint ({first}); "
                           "delete it to start the run afresh") from None
    if not isinstance(state, dict) or state.get("format") not in (FORMAT, *OLD_FORMATS):
        raise GradnasError(f"{path} is not a gradnas checkpoint (format {FORMAT!r} expected)")
    return state


def resume_point(run_dir: str | os.PathLike, *, unit: str, map_location="cpu", main: bool = True,
                 checkpoint: str, metrics: str, config: str) -> dict | None:
    """The checkpoint state a resumed run continues from, or None when the run (its folder has its config)
    was stopped before it wrote its first checkpoint: nothing done then counts, so (on the main process) its
    metrics file is emptied and the run says it starts again from its first ``unit`` (epoch, round)."""
    run_dir = Path(run_dir)
    if (run_dir / checkpoint).exists() or not (run_dir / config).is_file():
        return load_checkpoint(run_dir / checkpoint, map_location=map_location)  # or its clear error
    if main:
        (run_dir / metrics).write_text("")
        logger.warning(f"{run_dir} has no checkpoint yet (stopped during the first {unit}); starting from "
                       f"{unit} 1")
    return None


def metrics_until(path: str | os.PathLike, epoch: int) -> list[dict]:
    """The metrics records of epochs up to ``epoch`` (a checkpoint's): later ones belong to an epoch that runs
    again, and a line torn by a crash during its write is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # torn (or blank): the crash came while it was written
        if isinstance(record, dict) and isinstance(record.get("epoch"), int) and record["epoch"] <= epoch:
            kept.append(record)
    return kept


def keep_metrics_until(path: str | os.PathLike, epoch: int) -> None:
    """On resume: rewrite the metrics file (atomically) with only :func:`metrics_until`'s records."""
    path = Path(path)
    if not path.exists():
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in metrics_until(path, epoch)))
    os.replace(tmp, path)
