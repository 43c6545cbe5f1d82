"""Decode an ImageFolder tree -- a directory or a tar archive of one -- into uint8 NCHW tensors.

Layouts understood (``P/`` is an optional chain of wrapper folders, e.g. ``cifar10-jpeg/``):

* ``P/train/<class>/...`` plus optionally ``P/test/<class>/...`` (or ``P/val/<class>/...``);
* ``P/<class>/...`` -- all images are training data and the test split is empty.

Classes are the sorted class-folder names; samples are ordered by (class, path), so a directory and
an archive of it give identical tensors. Archives are read into memory with ``tarfile`` (never
extracted to disk), and large trees are decoded by a pool of forked worker processes.
"""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import multiprocessing
import os
import sys
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from gradnas.data import cache
from gradnas.errors import GradnasError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"})
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
TEST_SPLITS = ("test", "val")  # first one present wins
# Forking workers costs ~0.1 s; only worth it for big trees (decoding takes ~0.1-0.2 ms per image).
_POOL_MIN_IMAGES = 2000
_MAX_WORKERS = 8


def is_archive(path: Path) -> bool:
    """True for a tar file (by suffix, or by content for oddly named ones)."""
    if not path.is_file():
        return False
    if path.name.lower().endswith(ARCHIVE_SUFFIXES):
        return True
    try:
        return tarfile.is_tarfile(path)
    except (OSError, EOFError, zlib.error):
        return False


def _clean_parts(name: str) -> list[str] | None:
    """Path components of an image entry, or None for non-images and macOS/hidden junk."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts or parts[0] == "__MACOSX":
        return None
    if any(p.startswith(".") for p in parts):  # ._foo.jpg resource forks, .git, ...
        return None
    if os.path.splitext(parts[-1])[1].lower() not in IMAGE_SUFFIXES:
        return None
    return parts


# ----------------------------------------------------------------------------------- layout


@dataclass
class Layout:
    """Which images form each split, and their labels, in output order."""
    classes: list[str]
    train: list[tuple[str, int]]  # (entry name, label)
    test: list[tuple[str, int]]


def resolve_layout(names: Iterable[str], where: str, fix: str) -> Layout:
    """Work out splits and classes from the image entry names (relative, '/'-separated)."""
    parts = [p.split("/") for p in names]
    if not parts:
        raise GradnasError(
            f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {where}. {fix}"
        )
    # A split layout: some ancestor folder called "train" with class folders below it.
    prefixes = set()
    for p in parts:
        for i in range(len(p) - 2):
            if p[i].lower() == "train":
                prefixes.add(tuple(p[:i]))
                break
    if len(prefixes) > 1:
        found = ", ".join(sorted("/".join((*q, "train")) for q in prefixes))
        raise GradnasError(
            f"{where} contains several train/ folders ({found}); point --data-dir at the one to use. {fix}"
        )

    def members(prefix: tuple, split: str | None) -> list[tuple[str, str]]:
        """(name, class) of images under prefix[/split]/<class>/..."""
        start = len(prefix) + (split is not None)
        out = []
        for p in parts:
            if len(p) < start + 2 or tuple(p[: len(prefix)]) != prefix:
                continue
            if split is not None and p[len(prefix)].lower() != split:
                continue
            out.append(("/".join(p), p[start]))
        return out

    if prefixes:
        prefix = prefixes.pop()
        train = members(prefix, "train")
        test: list[tuple[str, str]] = []
        for split in TEST_SPLITS:
            test = members(prefix, split)
            if test:
                break
        root_desc = f"{where}/{'/'.join((*prefix, 'train'))}".replace("//", "/")
    else:
        # No split folders: class folders sit under the deepest folder common to all images.
        nested = [p[:-2] for p in parts if len(p) >= 2]
        if not nested:
            raise GradnasError(
                f"the images in {where} are not in class subfolders; an image folder needs one "
                f"subfolder per class (<class>/<image>, or train/<class>/<image>). {fix}"
            )
        prefix = tuple(os.path.commonprefix(nested))  # element-wise on lists of components
        train, test = members(prefix, None), []
        root_desc = f"{where}/{'/'.join(prefix)}".rstrip("/")

    classes = sorted({c for _, c in train})
    if len(classes) < 2:
        got = f"only one class ({classes[0]!r})" if classes else "no class folders"
        raise GradnasError(
            f"found {got} in {root_desc}; classification needs at least 2 classes, one subfolder "
            f"each (<class>/<image>). {fix}"
        )
    index = {c: i for i, c in enumerate(classes)}
    stray = sorted({c for _, c in test} - index.keys())
    if stray:
        raise GradnasError(
            f"{where}: test/val classes {stray} have no training folder (training classes: {classes}). "
            f"Use the same class folders in both splits. {fix}"
        )

    def labelled(items: list[tuple[str, str]]) -> list[tuple[str, int]]:
        # Class-major, then by path: the order torchvision's ImageFolder uses too.
        return sorted(((n, index[c]) for n, c in items), key=lambda t: (t[1], t[0]))

    return Layout(classes, labelled(train), labelled(test))


# ----------------------------------------------------------------------------------- decoding


def _decode(payload: bytes | str):
    """Decode one image (its bytes, or a file path) to an H x W (grayscale) or H x W x 3 uint8 array.

    Runs in worker processes, so errors come back as a message string instead of an exception.
    """
    try:
        if isinstance(payload, str):  # a file path (directory source): read it here, in the worker
            with open(payload, "rb") as f:
                payload = f.read()
        with Image.open(io.BytesIO(payload)) as im:
            im.load()  # decode now: a truncated file raises here, not later
            mode = "L" if im.mode in ("L", "1") else "RGB"
            return np.asarray(im if im.mode == mode else im.convert(mode))
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, struct.error, ...
        return f"{type(exc).__name__}: {exc}"


def _worker_count() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, _MAX_WORKERS))


def _decode_all(payloads: list[bytes | str], desc: str) -> list:
    """Decode every payload, in order; each result is an array or an error message."""
    pool = None
    workers = _worker_count()
    # fork (as torch's DataLoader does on Linux): workers only run Pillow/numpy and need no re-import.
    if len(payloads) >= _POOL_MIN_IMAGES and workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        try:
            pool = multiprocessing.get_context("fork").Pool(workers)
        except (OSError, AssertionError):  # no resources, or we are a daemon process: decode here
            pool = None
    results = []
    bar = tqdm(total=len(payloads), desc=desc, unit="img", leave=False, file=sys.stderr, disable=None)
    try:
        decoded = pool.imap(_decode, payloads, chunksize=256) if pool is not None else map(_decode, payloads)
        for r in decoded:
            results.append(r)
            bar.update()
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    return results


def _decompress(raw: bytes) -> bytes:
    """The tar bytes inside a gzip/bzip2/xz file (or ``raw`` itself for a plain tar)."""
    if raw[:2] == b"\x1f\x8b":
        return gzip.decompress(raw)
    if raw[:3] == b"BZh":
        return bz2.decompress(raw)
    if raw[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(raw)
    return raw


def _archive_items(path: Path, fix: str) -> list[tuple[str, bytes]]:
    """(name, bytes) of every image member of a tar archive, read without extracting anything.

    The archive is decompressed into memory in one go and then indexed by tarfile: several times
    faster than tarfile's stream mode for 60k small members, and the decoded images will need far
    more memory than the archive anyway.
    """
    try:
        buf = _decompress(path.read_bytes())
        items = []
        with tarfile.open(fileobj=io.BytesIO(buf), mode="r:") as tf:
            for member in tf:
                parts = _clean_parts(member.name) if member.isfile() else None
                if parts is None:
                    continue
                if member.issparse():  # rare; let tarfile reassemble it
                    data = tf.extractfile(member).read()
                else:
                    data = buf[member.offset_data:member.offset_data + member.size]
                if len(data) != member.size:
                    raise EOFError(f"member {member.name} is cut off")
                items.append(("/".join(parts), data))
        return items
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as exc:
        raise GradnasError(
            f"archive {path} is truncated or corrupt ({type(exc).__name__}: {exc}); download or "
            f"create it again. {fix}"
        ) from None


def _list_dir(root: Path) -> list[str]:
    names = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__MACOSX"]
        rel = Path(dirpath).relative_to(root).as_posix()
        for f in filenames:
            name = f if rel == "." else f"{rel}/{f}"
            if _clean_parts(name) is not None:
                names.append(name)
    return names


def _check_decoded(items: list[tuple[str, int]], arrays: list, display, fix: str) -> tuple[int, int, int]:
    """Raise for the first undecodable or odd-sized image; return the common (C, H, W)."""
    for (name, _), a in zip(items, arrays):
        if isinstance(a, str):
            raise GradnasError(f"cannot decode image {display(name)} ({a}); remove or replace the file. {fix}")
    ref_name, ref = items[0][0], arrays[0]
    h, w = ref.shape[:2]
    for (name, _), a in zip(items, arrays):
        if a.shape[:2] != (h, w):
            raise GradnasError(
                f"image {display(name)} is {a.shape[1]}x{a.shape[0]} pixels but {display(ref_name)} is "
                f"{w}x{h}; all images must have the same size. Resize them first (e.g. with Pillow: "
                f"Image.open(path).resize(({w}, {h})).save(path)). {fix}"
            )
    channels = 3 if any(a.ndim == 3 for a in arrays) else 1
    return channels, h, w


def _stack(items: list[tuple[str, int]], arrays: list,
           shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Copy decoded (and checked) arrays into one N x C x H x W uint8 tensor, plus the labels."""
    out = np.empty((len(items), *shape), dtype=np.uint8)
    for i, a in enumerate(arrays):
        # A grayscale image in an RGB set broadcasts to 3 equal channels, as PIL's convert("RGB") would.
        out[i] = a if a.ndim == 2 else a.transpose(2, 0, 1)
    labels = torch.tensor([label for _, label in items], dtype=torch.int64)
    return torch.from_numpy(out), labels


def _decode_tree(source: Path, fix: str) -> dict:
    """Decode ``source`` (directory or archive) into the payload dict stored in the cache."""
    if source.is_dir():
        names = _list_dir(source)
        payload_of = lambda n: str(source / n)  # noqa: E731  (workers read the files themselves)
        display = lambda n: str(source / n)  # noqa: E731
        where = f"folder {source}"
    else:
        members = dict(_archive_items(source, fix))
        names, payload_of = list(members), members.__getitem__
        display = lambda n: f"{source}:{n}"  # noqa: E731
        where = f"archive {source}"
    # Layout first (names only), so a wrong tree fails before any decoding, and only images that
    # belong to a split are decoded.
    layout = resolve_layout(names, where, fix)
    items = layout.train + layout.test
    arrays = _decode_all([payload_of(n) for n, _ in items], desc=f"decoding {source.name}")
    shape = _check_decoded(items, arrays, display, fix)
    n_train = len(layout.train)
    train_x, train_y = _stack(layout.train, arrays[:n_train], shape)
    test_x, test_y = _stack(layout.test, arrays[n_train:], shape)
    return {"version": cache.CACHE_VERSION, "source": str(source), "classes": layout.classes,
            "train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def _valid_payload(p: dict) -> bool:
    """Cheap structural check of a cache payload (a stale or foreign file must not be trusted)."""
    try:
        tx, ty, vx, vy, classes = p["train_x"], p["train_y"], p["test_x"], p["test_y"], p["classes"]
        return (p.get("version") == cache.CACHE_VERSION
                and isinstance(classes, list) and len(classes) >= 2
                and all(isinstance(c, str) for c in classes)
                and all(isinstance(t, torch.Tensor) for t in (tx, ty, vx, vy))
                and tx.dtype == vx.dtype == torch.uint8 and tx.dim() == vx.dim() == 4
                and tx.shape[1:] == vx.shape[1:] and ty.dtype == vy.dtype == torch.int64
                and ty.shape == tx.shape[:1] and vy.shape == vx.shape[:1])
    except (KeyError, TypeError, AttributeError):
        return False


def load_image_tree(source: Path, *, fix: str, cache_dir=None) -> dict:
    """Decoded contents of an ImageFolder directory or archive, through the on-disk cache.

    Returns a dict with ``classes`` (list of str) and uint8/int64 tensors ``train_x``, ``train_y``,
    ``test_x``, ``test_y`` (test may be empty). ``fix`` is appended to error messages.
    """
    source = source.resolve()
    cache_file = cache.cache_path(source, "imagetree", cache_dir)
    payload = cache.load(cache_file)
    if payload is not None and _valid_payload(payload):
        return payload
    payload = _decode_tree(source, fix)
    cache.save(cache_file, payload)
    return payload
