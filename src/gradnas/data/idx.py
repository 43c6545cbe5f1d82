"""Parse IDX files (the MNIST / Fashion-MNIST container format), gzipped or plain.

An IDX file is a 4-byte magic ``00 00 <type> <ndim>``, then ``ndim`` big-endian uint32 sizes, then the
values in row-major order. Only type 0x08 (unsigned byte) is supported: it is the only one the
(Fashion-)MNIST files use, and it maps straight onto uint8 tensors.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from gradnas.errors import GradnasError

_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08


def read_idx(path: Path, *, ndim: int, fix: str) -> np.ndarray:
    """Return the uint8 array stored in the IDX file ``path``, which must have ``ndim`` dimensions.

    ``fix`` is appended to every error message (how to get a good copy of the data).
    Raises GradnasError for an unreadable, truncated or malformed file.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise GradnasError(f"cannot read IDX file {path}: {exc.strerror or exc}. {fix}") from None
    # Decide by content, not by name: people gunzip files and keep the name, or the other way round.
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise GradnasError(
                f"IDX file {path} is a truncated or corrupt gzip file ({exc}). {fix}"
            ) from None

    header_len = 4 + 4 * ndim
    if len(raw) < 4:
        raise GradnasError(f"IDX file {path} is truncated: only {len(raw)} bytes. {fix}")
    zero1, zero2, dtype, file_ndim = raw[0], raw[1], raw[2], raw[3]
    if zero1 != 0 or zero2 != 0:
        raise GradnasError(
            f"{path} is not an IDX file (magic bytes {raw[:4].hex()}, expected 0000080{ndim}). {fix}"
        )
    if dtype != _UBYTE:
        raise GradnasError(
            f"IDX file {path} holds data type 0x{dtype:02x}; only unsigned bytes (0x08) are supported. {fix}"
        )
    if file_ndim != ndim:
        raise GradnasError(
            f"IDX file {path} has {file_ndim} dimensions where {ndim} were expected "
            f"(images have 3, labels 1): is it the right file? {fix}"
        )
    if len(raw) < header_len:
        raise GradnasError(f"IDX file {path} is truncated inside its header. {fix}")
    dims = struct.unpack(f">{ndim}I", raw[4:header_len])
    expected = int(np.prod(dims, dtype=np.int64))
    got = len(raw) - header_len
    if got != expected:
        shape = "x".join(str(d) for d in dims)
        what = "truncated" if got < expected else "longer than its header says"
        raise GradnasError(
            f"IDX file {path} is {what}: the header announces {shape} = {expected} bytes of data "
            f"but the file holds {got}. {fix}"
        )
    # Copy so the array owns writable memory (torch.from_numpy warns on read-only buffers).
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims).copy()
