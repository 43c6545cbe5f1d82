"""Messages: the ``gradnas`` logger (``logging.getLogger("gradnas")``; each module logs to its own child,
``logging.getLogger(__name__)``).

A library leaves logging to the application: the ``gradnas`` logger has only a NullHandler, so
``Search(...).run()`` in a script prints nothing unless the script configures logging (e.g.
``logging.basicConfig(level=logging.INFO)``). The `gradnas` command configures it for the time of one command
(:func:`cli_logging`): one handler on stderr that writes through ``tqdm.write`` (a message printed while a
progress bar is on screen leaves the bar whole), info lines as they are, the others as ``gradnas: warning:
...``, ``gradnas: error: ...``, ``gradnas: debug: ...``. ``--quiet``: warnings and errors only; ``-v``: debug
lines too. Under torchrun the processes other than rank 0 say errors only.

The results a command prints (a genotype, a table, the run folder) go to stdout with print; they are the
command's output, not messages.
"""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager

from tqdm import tqdm

logger = logging.getLogger("gradnas")  # its NullHandler is added by the package (gradnas/__init__.py)

QUIET, NORMAL, VERBOSE = -1, 0, 1
_LEVELS = {QUIET: logging.WARNING, NORMAL: logging.INFO, VERBOSE: logging.DEBUG}


class MessageFormat(logging.Formatter):
    """Info lines as written; other levels behind ``gradnas: <level>:`` (the house style of warnings and errors)."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno == logging.INFO:
            return text
        level = "warning" if record.levelno == logging.WARNING else record.levelname.lower()
        return f"gradnas: {level}: {text}"


class TqdmHandler(logging.Handler):
    """Writes each message with ``tqdm.write`` to the stderr of the moment (a bar on screen is redrawn below it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - as logging.StreamHandler does
            self.handleError(record)


@contextmanager
def cli_logging(verbosity: int = NORMAL, *, rank: int = 0):
    """Configure the ``gradnas`` logger for one command (``verbosity``: :data:`QUIET`, :data:`NORMAL`,
    :data:`VERBOSE` or more), and restore it after, so that a script calling ``gradnas.cli.main`` keeps its
    own logging."""
    level = _LEVELS[max(QUIET, min(VERBOSE, verbosity))] if rank == 0 else logging.ERROR
    handler = TqdmHandler(level=level)
    handler.setFormatter(MessageFormat())
    outer = [h for h in logger.handlers if isinstance(h, TqdmHandler)]  # a command run inside another's scope
    saved = logger.level, logger.propagate
    for h in outer:
        logger.removeHandler(h)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # said once, here, not again by a root handler the application set up
    try:
        yield
    finally:
        logger.removeHandler(handler)
        for h in outer:
            logger.addHandler(h)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
