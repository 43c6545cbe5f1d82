"""Checkpoints: one state dict per file, written atomically, read back without running pickled code."""
from __future__ import annotations

import json
import os
import pickle
import sys
import zipfile
from pathlib import Path

import torch

from gradnas.errors import GradnasError

FORMAT = "gradnas.checkpoint/1"


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the old one: a crash at any
    moment leaves either the previous checkpoint or the new one, never a torn file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed write (disk full) as RuntimeError
        tmp.unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip().splitlines()[0]
        kept = "the previous checkpoint there is intact" if path.exists() else "no earlier checkpoint exists"
        raise GradnasError(f"could not write the checkpoint {path} ({reason}); {kept}. Free some disk space "
                           "(or fix the folder's permissions), then resume the run") from None


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load with ``weights_only=True``: tensors, numbers, strings and containers only."""
    path = Path(path)
    if not path.is_file():
        raise GradnasError(f"no checkpoint at {path}; resume needs a run folder written by `gradnas search`")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GradnasError(f"checkpoint {path} is corrupt or not a gradnas checkpoint ({first}); "
                           "delete it to start the run afresh") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
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
        print(f"gradnas: {run_dir} has no checkpoint yet (stopped during the first {unit}); starting from "
              f"{unit} 1", file=sys.stderr)
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
