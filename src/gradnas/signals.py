"""Stopping a long job on SIGINT / SIGTERM without losing work.

A job that runs under :class:`StopOnSignal` turns the first SIGINT (Ctrl-C) or SIGTERM (``kill``, a
cluster scheduler's pre-emption) into a request: the step in flight finishes, the loop writes a checkpoint
of exactly where it is (mid-epoch included) and raises :class:`Interrupted`, which the CLI prints as one
message naming the resume command. A second signal while that is happening stops at once
(KeyboardInterrupt), leaving the last checkpoint on disk as it was: checkpoints are written atomically
(``gradnas.checkpoint``), so a stop at any moment leaves a whole one.

Only the main thread of a single process can own signal handlers; elsewhere (a thread, a torchrun
worker) the guard does nothing and the default behaviour stays: a SIGINT stops at once and the run
resumes from its last end-of-epoch checkpoint.
"""
from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """Raised by a loop after it has written the checkpoint a stop request asked for."""

    def __init__(self, message: str, *, signum: int):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention for "ended by signal N"


class SecondSignal(KeyboardInterrupt):
    """A second SIGINT / SIGTERM during a stop: stop at once. ``signum`` gives the exit code (128 + N), so a double
    SIGTERM still ends with 143, as a SIGTERM should."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _SignalGuard:
    """Context manager that routes SIGINT / SIGTERM to :meth:`_handle` while active (only where handlers can be
    set: the main thread) and puts the previous handlers back on exit (or ``replacement``, see :meth:`_restore`)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self._previous = {}

    def _handle(self, signum, frame):
        raise NotImplementedError

    def __enter__(self):
        if self.enabled:
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _restore(self, replacement=None) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler if replacement is None else replacement)
        self._previous.clear()


class StopOnSignal(_SignalGuard):
    """Context manager: while active, SIGINT / SIGTERM set :attr:`requested` (the signal number) instead of
    interrupting; a second one raises :class:`SecondSignal` (a KeyboardInterrupt). Previous handlers come back on exit."""

    def __init__(self, enabled: bool = True):
        super().__init__(enabled)
        self.requested: int | None = None

    def _handle(self, signum, frame):
        if self.requested is not None:
            raise SecondSignal(signum)
        self.requested = signum

    def __exit__(self, *exc):
        self._restore()
        return False

    @property
    def name(self) -> str:
        return signal.Signals(self.requested).name if self.requested is not None else ""


class StopAtOnce(_SignalGuard):
    """Context manager for a multi-process (torchrun) run, where a checkpoint cannot be written mid-unit: the first
    SIGINT or SIGTERM (Ctrl-C, or torchrun ending the others after a rank was lost) raises :class:`SecondSignal`
    at once, so the CLI says one line instead of dying silently; any later one is ignored (the run is already
    stopping, and a second exception during the message would be a traceback)."""

    def __init__(self, enabled: bool = True):
        super().__init__(enabled)
        self.fired = False

    def _handle(self, signum, frame):
        if self.fired:
            return
        self.fired = True
        raise SecondSignal(signum)

    def quiet(self) -> None:
        """Ignore every further signal (the run is stopping for another reason: a lost rank)."""
        self.fired = True

    def __exit__(self, *exc):
        stopping = self.fired or exc[0] is not None
        # stopping: keep ignoring signals while the message is said and the group is left
        self._restore(signal.SIG_IGN if stopping else None)
        return False
