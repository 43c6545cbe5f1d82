"""On-disk cache of decoded datasets (plain uint8 tensors), so 60k JPEGs are decoded only once.

A cache file is named after a fingerprint of its source: for a file its absolute path, size and
mtime; for a directory its absolute path and the mtime of every directory in the tree. Adding,
removing or renaming an image changes its folder's mtime and so the fingerprint; stat-ing only
directories keeps this cheap for trees of 60k images (editing a file in place is not detected).

Files are written with torch.save to a temporary name and moved into place with os.replace, so a
reader never sees half a file; they are read with ``weights_only=True`` (no code execution), and a
file that cannot be read or fails validation is simply rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import torch

# Bump when the layout of the cached payload (or how images are decoded) changes.
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """$GRADNAS_CACHE if set, else ~/.cache/gradnas."""
    env = os.environ.get("GRADNAS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gradnas"


def _dir_mtimes(root: Path) -> list:
    """(relative path, mtime_ns) of ``root`` and every directory below it, in a stable order."""
    out = []
    stack = [root]
    while stack:
        d = stack.pop()
        out.append((os.path.relpath(d, root), d.stat().st_mtime_ns))
        # scandir's is_dir() uses the d_type from the directory listing: no stat per image file.
        with os.scandir(d) as it:
            stack.extend(Path(e.path) for e in it if e.is_dir(follow_symlinks=False))
    return sorted(out)


def cache_path(source: Path, kind: str, cache_dir: str | os.PathLike | None) -> Path:
    """Where the decoded form of ``source`` is (or will be) cached."""
    source = source.resolve()
    st = source.stat()
    if source.is_dir():
        state = _dir_mtimes(source)
    else:
        state = [st.st_size, st.st_mtime_ns]
    key = json.dumps([CACHE_VERSION, kind, str(source), state])
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    # Keep a readable stem so people can tell cache files apart (and delete the right one).
    stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in source.name)[:60]
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / f"{kind}-{stem}-{digest}.pt"


def load(path: Path) -> dict | None:
    """The cached payload at ``path``, or None when it is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # truncated zip, garbage, foreign pickle: any of these just means "rebuild"
        return None
    return obj if isinstance(obj, dict) else None


def save(path: Path, payload: dict) -> None:
    """Write ``payload`` atomically; failure to cache is a warning, never an error."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
        tmp = None
    except (OSError, RuntimeError) as exc:  # read-only home, full disk (torch reports it as RuntimeError)
        warnings.warn(f"could not write the dataset cache {path} ({exc}); the data will be decoded "
                      f"again next time (set GRADNAS_CACHE to a writable folder)", stacklevel=3)
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
