"""What several commands share: the command record, the error guard, genotype sources, quiet workers."""
from __future__ import annotations

import argparse
import decimal
import sys
from pathlib import Path
from typing import Callable, NamedTuple

from gradnas.errors import GradnasError
from gradnas.signals import Interrupted


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


def whole_number(text: str) -> int:
    """The argparse type of an integer flag: 12, or a float spelling of a whole number (1e3, 2.0); 1.5 is refused."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = decimal.Decimal(text.strip())
    except decimal.InvalidOperation:
        value = None
    if value is None or not value.is_finite() or value != value.to_integral_value() or value.adjusted() >= 100:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    return int(value)


def speaker(is_main: bool) -> Callable:
    """print on the main process; under torchrun the other processes stay silent."""
    return print if is_main else (lambda *a, **k: None)


def drive(run, *, resumed: bool, say: Callable) -> dict | int:
    """Run a search or training harness (``gradnas.run.Harness``) the CLI's way: say where a resumed run
    continues, stop cleanly on SIGINT / SIGTERM (the message names the resume command). Returns the summary, or
    the exit code of an interrupted run."""
    unit, total = run.job.unit, run.job.units()
    if resumed:
        mid = f" and step {run.step} of {unit} {run.done + 1}" if run.step else ""
        say(f"resuming {run.out} after {unit} {run.done}/{total}{mid}", file=sys.stderr)
    try:
        return run.run(stop_on_signal=True)
    except Interrupted as stop:
        say(f"\ngradnas: {stop}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        say(f"\ninterrupted; the last finished {unit} ({run.done}) is saved. Continue with:\n"
            f"  gradnas {run.command} --resume {run.out}", file=sys.stderr)
        return 130
