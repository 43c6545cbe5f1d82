"""Read the official CIFAR-10 "python version" (the ``cifar-10-batches-py`` folder) safely.

The batches are pickles, and unpickling an arbitrary file can run arbitrary code. The real files only
hold dicts, lists, ints, byte strings and one uint8 numpy array, so a restricted Unpickler that can
build exactly those (and nothing else) reads them all while refusing a crafted file.
"""
from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np

from gradnas.errors import GradnasError

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
# Used when batches.meta is absent: the official order, which is also alphabetical.
DEFAULT_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _allowed_globals() -> dict:
    """The only callables a CIFAR batch pickle may reference, keyed by (module, name) as pickled.

    numpy moved ``numpy.core`` to ``numpy._core`` in 2.0; files written by either spelling (the official
    files are Python 2 pickles using ``numpy.core``) resolve to the same, current functions, without
    importing the deprecated alias module.
    """
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    table = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
             # Python 3 protocol-2 pickles spell bytes objects as _codecs.encode(str, "latin1").
             ("_codecs", "encode"): codecs.encode}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(mod, "_reconstruct")] = multiarray._reconstruct
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        table[(mod, "_frombuffer")] = numeric._frombuffer
    return table


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list (told apart from plain corruption)."""


class _RestrictedUnpickler(pickle.Unpickler):
    _allowed = None

    def find_class(self, module: str, name: str):
        if _RestrictedUnpickler._allowed is None:
            _RestrictedUnpickler._allowed = _allowed_globals()
        try:
            return _RestrictedUnpickler._allowed[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None


def _unpickle(path: Path, fix: str) -> dict:
    """Load one batch file with the restricted unpickler; keys are returned as str."""
    try:
        with path.open("rb") as f:
            # encoding="bytes": the official files are Python 2 pickles whose str objects are bytes.
            obj = _RestrictedUnpickler(f, encoding="bytes").load()
    except _RefusedGlobal as exc:
        raise GradnasError(
            f"refusing to load {path}: the pickle references {exc}, which a CIFAR-10 batch never "
            f"contains (the file is not a genuine CIFAR-10 batch and may be malicious). {fix}"
        ) from None
    except OSError as exc:
        raise GradnasError(f"cannot read CIFAR-10 batch {path}: {exc.strerror or exc}. {fix}") from None
    except Exception as exc:  # unpickling raises many types (EOFError, UnpicklingError, ValueError, ...)
        raise GradnasError(
            f"CIFAR-10 batch {path} is truncated or corrupt ({type(exc).__name__}: {exc}). {fix}"
        ) from None
    if not isinstance(obj, dict):
        raise GradnasError(f"CIFAR-10 batch {path} holds a {type(obj).__name__}, not a dict. {fix}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _read_batch(path: Path, fix: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N x 3 x 32 x 32 uint8) and labels (N int64) of one batch file."""
    d = _unpickle(path, fix)
    if "data" not in d or "labels" not in d:
        raise GradnasError(
            f"CIFAR-10 batch {path} lacks the 'data' or 'labels' entry (has: {sorted(d)}). {fix}"
        )
    data = d["data"]
    if isinstance(data, (bytes, bytearray)):
        data = np.frombuffer(data, dtype=np.uint8)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.size % 3072 != 0:
        desc = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise GradnasError(
            f"CIFAR-10 batch {path}: 'data' is a {desc}, expected uint8 rows of 3072 values "
            f"(3 x 32 x 32). {fix}"
        )
    # Rows are R plane, G plane, B plane, each 32x32 row-major: exactly NCHW.
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32))
    try:
        labels = np.asarray(d["labels"], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise GradnasError(f"CIFAR-10 batch {path}: 'labels' are not integers ({exc}). {fix}") from None
    if len(labels) != len(images):
        raise GradnasError(
            f"CIFAR-10 batch {path} has {len(images)} images but {len(labels)} labels. {fix}"
        )
    return images, labels


def _read_classes(folder: Path, fix: str) -> list[str]:
    meta = folder / META
    if not meta.is_file():
        return list(DEFAULT_CLASSES)
    names = _unpickle(meta, fix).get("label_names")
    if not isinstance(names, list) or not names:
        raise GradnasError(f"{meta} has no 'label_names' list. {fix}")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]


def read_cifar_folder(folder: Path, fix: str):
    """Read ``folder`` (a cifar-10-batches-py directory).

    Returns ``(train_x, train_y, test_x, test_y, classes)`` as numpy arrays and a list of names.
    """
    missing = [n for n in (*TRAIN_BATCHES, TEST_BATCH) if not (folder / n).is_file()]
    if missing:
        raise GradnasError(f"CIFAR-10 folder {folder} lacks {', '.join(missing)}. {fix}")
    classes = _read_classes(folder, fix)
    parts = [_read_batch(folder / n, fix) for n in TRAIN_BATCHES]
    test_x, test_y = _read_batch(folder / TEST_BATCH, fix)
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    for labels, name in ((train_y, "data_batch_*"), (test_y, TEST_BATCH)):
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise GradnasError(
                f"CIFAR-10 folder {folder}: {name} has labels outside 0..{len(classes) - 1}. {fix}"
            )
    return train_x, train_y, test_x, test_y, classes
