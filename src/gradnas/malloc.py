"""Which C allocator a gradnas command runs on: the system's (glibc) by default, jemalloc on request.

Every tensor of a CPU search is a malloc'd block, and a search step allocates and frees tens of GB of
activations and gradients of a few recurring sizes. glibc keeps the blocks freed by one pass in its heap
but cannot always fit the next pass's blocks into them, so a process grows past what is ever live at once.
Measured on the DARTS supernet (8 cells, 16 channels, batch 64, MiLeNAS-1st, before the separable convs
recomputed their activations): glibc peaked at 4.6 GB RSS while about 2.8 GB was live; returning freed
memory to the system at once (a low ``M_MMAP_THRESHOLD``) peaked at the live 2.8 GB but page-faulted
~40 GB per step back in (sys time 24 s per step against 0.4 s); jemalloc with its default purging peaked
at 2.9 GB with 5 s of sys time per step, and with purging off it kept growing (3.4 then 4.2 GB over two
steps). So glibc stays the default (the ops keep little, see gradnas.space.ops, which brings it under
4 GB) and jemalloc is the choice for the lowest peak where memory, not time, is short.

jemalloc has to be loaded before the program starts (``LD_PRELOAD``), so with ``GRADNAS_MALLOC=jemalloc``
the ``gradnas`` command starts itself again with it (:func:`reexec_if_needed`, before anything heavy is
imported); ``MALLOC_CONF`` (jemalloc's own settings) passes through. ``GRADNAS_MALLOC=system`` (the
default) changes nothing. A process that imports gradnas as a library is left as it was; preload jemalloc
yourself there (``LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2``). Debian / Ubuntu:
``apt-get install libjemalloc2``. The allocator changes where blocks live, never a number computed in them.
"""
from __future__ import annotations

import os
import sys

from gradnas.errors import GradnasError

ENV = "GRADNAS_MALLOC"
CHOICES = ("system", "jemalloc")
# Set in the started-again process, so it never starts itself a third time.
_GUARD = "GRADNAS_MALLOC_STARTED"
_LIB = "libjemalloc.so.2"
_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib",
         "/opt/homebrew/lib")


def find_jemalloc(dirs=None) -> str | None:
    """The path of an installed libjemalloc.so.2 (the system's library folders, then this Python's prefix
    (conda)), or None."""
    search = list(_DIRS if dirs is None else dirs)
    if dirs is None:
        search.append(os.path.join(sys.prefix, "lib"))
    for d in search:
        path = os.path.join(d, _LIB)
        if os.path.isfile(path):
            return path
    return None


def loaded(maps_path: str = "/proc/self/maps") -> str:
    """The allocator this process runs on: ``jemalloc`` when the library is mapped in, else ``system``
    (also where /proc is missing: nothing preloaded it then as far as anyone can tell)."""
    try:
        with open(maps_path) as f:
            return "jemalloc" if any("libjemalloc" in line for line in f) else "system"
    except OSError:
        return "system"


def plan(environ, *, jemalloc_path: str | None, running: str) -> dict | None:
    """The environment to start the command again with, or None to go on as it is.

    ``environ``: this process's environment; ``jemalloc_path``: :func:`find_jemalloc`'s answer;
    ``running``: :func:`loaded`'s. A bad ``GRADNAS_MALLOC`` or ``jemalloc`` asked for and not installed is a
    GradnasError."""
    choice = environ.get(ENV, "system").strip().lower() or "system"
    if choice not in CHOICES:
        raise GradnasError(f"{ENV}={environ.get(ENV)!r}: valid values are {', '.join(CHOICES)} (the default: "
                           "system)")
    if choice == "system" or running == "jemalloc" or environ.get(_GUARD):
        return None
    if jemalloc_path is None:
        raise GradnasError(f"{ENV}=jemalloc, but {_LIB} is not installed; install it (Debian/Ubuntu: apt-get "
                           f"install libjemalloc2) or unset {ENV}")
    env = dict(environ)
    env["LD_PRELOAD"] = " ".join(p for p in (jemalloc_path, environ.get("LD_PRELOAD", "")) if p)
    env[_GUARD] = "1"
    return env


def reexec_if_needed(argv=None) -> None:
    """Start this ``gradnas`` command again on jemalloc when :func:`plan` says so (the process is replaced;
    Linux only, where LD_PRELOAD exists). Returns when it goes on as it is."""
    if not sys.platform.startswith("linux"):
        return
    env = plan(os.environ, jemalloc_path=find_jemalloc(), running=loaded())
    if env is None:
        return
    args = sys.argv[1:] if argv is None else list(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "gradnas", *args], env)

