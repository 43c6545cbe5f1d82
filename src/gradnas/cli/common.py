"""What several commands share: the command record, the error guard, genotype sources, quiet workers."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, NamedTuple

from gradnas.errors import GradnasError


class Command(NamedTuple):
    add_parser: Callable  # (subparsers) -> the command's ArgumentParser
    run: Callable         # (args) -> exit status


def guarded(run: Callable[[], int]) -> int:
    """``run()``'s exit status; a GradnasError or OSError becomes one `gradnas: error:` line and exit 2, an
    interrupt exit 130."""
    try:
        return run()
    except GradnasError as exc:
        print(f"gradnas: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the machine's, not the input's: a full disk, a folder without write permission
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"gradnas: error: {exc.strerror or exc}{where}; free disk space or fix the permissions, then run "
              "again (a search or training continues with --resume RUN_DIR)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ngradnas: interrupted", file=sys.stderr)
        return 130


def read_genotype(text: str):
    """A genotype from a string, a JSON file or a run folder (its genotype.json)."""
    from gradnas.report.cells import read_genotype as read
    return read(text)


def is_dir(text: str) -> bool:
    try:
        return Path(text).is_dir()
    except OSError:  # e.g. a genotype string longer than a file name may be
        return False


def speaker(is_main: bool) -> Callable:
    """print on the main process; under torchrun the other processes stay silent."""
    return print if is_main else (lambda *a, **k: None)
