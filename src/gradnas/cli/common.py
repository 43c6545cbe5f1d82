"""What several commands share: the command record, the error guard, genotype sources, quiet workers."""
from __future__ import annotations

import argparse
import decimal
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, NamedTuple

from gradnas.errors import GradnasError
from gradnas.signals import Interrupted

logger = logging.getLogger(__name__)


class Command(NamedTuple):
    add_parser: Callable  # (subparsers) -> the command's ArgumentParser
    run: Callable         # (args) -> exit status


def _speaks(exc: BaseException) -> bool:
    """Whether this process prints ``exc``. Under torchrun an error that every rank raises alike (found before
    the process group was joined, or shared by rank 0: distributed.run_on_main) is said by rank 0 alone; one
    that only this rank met is said by it, naming its rank."""
    from gradnas import distributed
    if getattr(exc, "silent", False):
        return False
    return distributed.launch_rank() == 0 or not getattr(exc, "shared", True)


def guarded(run: Callable[[], int]) -> int:
    """``run()``'s exit status; a GradnasError or OSError becomes one `gradnas: error:` line and exit 2, an
    interrupt exit 130 (128 + N for a signal N that stopped it at once)."""
    try:
        return run()
    except GradnasError as exc:
        if _speaks(exc):
            from gradnas import distributed
            rank = distributed.launch_rank()
            logger.error(f"{f'(rank {rank}) ' if rank else ''}{exc}")
        return 2
    except OSError as exc:  # a full disk, a folder without write permission, a path that cannot be one
        where = f" ({_shorten(exc.filename)})" if exc.filename else ""
        logger.error(f"{exc.strerror or exc}{where}; {_os_fix(exc)}")
        return 2
    except KeyboardInterrupt as exc:
        from gradnas import distributed
        if distributed.launch_rank() == 0:
            logger.warning("interrupted")
        return getattr(exc, "exit_code", 130)


_RESUME_HINT = "then run again (a search or training continues with --resume RUN_DIR)"


def _os_fix(exc: OSError) -> str:
    """What the user can do about an OSError, by its errno: only a full disk is a disk-space problem."""
    import errno
    if exc.errno == errno.ENAMETOOLONG:
        return "that is too long to be a file name; check what was given where a path is expected"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR):
        return "check the path"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"fix the permissions or choose another folder, {_RESUME_HINT}"
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return f"free some disk space, {_RESUME_HINT}"
    return f"free disk space or fix the permissions, {_RESUME_HINT}"


def _shorten(name, limit: int = 80) -> str:
    name = str(name)
    return name if len(name) <= limit else f"{name[:limit]}... ({len(name)} characters)"


def read_genotype(text: str):
    """A genotype from a string of any form, a published cell's name (DARTS_V2), a JSON file or a run folder
    (its genotype.json). A string written as a genotype is read as one, never looked up as a path."""
    from gradnas.space.genotype import load_genotype, looks_like_genotype
    if looks_like_genotype(text):
        return load_genotype(text)
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


def tell(is_main: bool, message: str, *, level: int = logging.INFO) -> None:
    """A message of the main process to the ``gradnas`` logger (under torchrun the other processes stay silent)."""
    if is_main:
        logger.log(level, message)


def drive(run, *, resumed: bool, say: Callable) -> dict | int:
    """Run a search or training harness (``gradnas.run.Harness``) the CLI's way: say where a resumed run
    continues, stop cleanly on SIGINT / SIGTERM (the message names the resume command). Returns the summary, or
    the exit code of an interrupted run."""
    unit, total = run.job.unit, run.job.units()
    if resumed:
        mid = f" and step {run.step} of {unit} {run.done + 1}" if run.step else ""
        tell(run.is_main, f"resuming {run.out} after {unit} {run.done}/{total}{mid}")
    from gradnas import distributed
    try:
        return run.run(stop_on_signal=True)
    except Interrupted as stop:
        distributed.mark_stopped()
        distributed.abandon()
        tell(run.is_main, str(stop), level=logging.WARNING)
        return stop.exit_code
    except KeyboardInterrupt as stop:  # a second signal, or any signal under torchrun
        distributed.abandon()
        code = getattr(stop, "exit_code", 130)
        if run.world.size > 1:
            lost = distributed.lost_message(None, where=f"in {unit} {run.done + 1}", resume=run.resume_hint())
            if lost is not None:  # torchrun stopped this rank because another one died
                if lost:
                    logger.error(lost)
                return 2
            distributed.mark_stopped()
        tell(run.is_main, f"interrupted ({(stop.args or ('SIGINT',))[0]}); {run.resume_hint()}", level=logging.WARNING)
        return code


def add_launch_flags(p) -> None:
    """--dist-timeout: how long a torchrun rank waits for the others (a run-time setting, not saved in the run)."""
    p.add_argument("--dist-timeout", type=float, metavar="SECONDS",
                   help="torchrun: seconds a process waits for the others in a collective before the run stops with "
                        "an error (default $GRADNAS_DIST_TIMEOUT, else 300)")


def _log_list(text: str) -> list:
    from gradnas.trackers import parse_log
    return parse_log(text)


def add_tracker_flags(p) -> None:
    """--log, --log-every, --mlflow-uri: the experiment trackers of a search or training run (saved in config.yaml,
    so --resume logs into the same tracker runs)."""
    g = p.add_argument_group("trackers", "Experiment trackers (gradnas.trackers): every number of each epoch's "
                                         "metrics, the running loss and accuracy every --log-every steps, and at "
                                         "the end the genotype and the cell images.")
    g.add_argument("--log", type=_log_list, metavar="TRACKERS",
                   help="comma-separated: tensorboard (RUN/tensorboard), wandb (offline in RUN/wandb unless "
                        "WANDB_MODE says otherwise), mlflow (RUN/mlruns or --mlflow-uri), csv (RUN/scalars.csv); "
                        "pip install 'gradnas[trackers]' for the first three")
    g.add_argument("--log-every", type=whole_number, metavar="N",
                   help="log the running loss and accuracy every N steps (tracking.every_steps, default 50; 0: per "
                        "epoch only)")
    g.add_argument("--mlflow-uri", metavar="URI", help="MLflow tracking server or store (tracking.mlflow_uri; "
                                                        "default: a file store in RUN/mlruns)")


def check_resume_out(args) -> None:
    """--out names a new run's folder; with --resume the run continues in its own folder."""
    if args.resume and args.out:
        raise GradnasError(f"--resume continues the run in its own folder ({args.resume}); drop --out (or drop "
                           "--resume to start a new run in --out)")


@contextmanager
def process_group(device: str, timeout):
    """Join torchrun's process group (a no-op without torchrun) for the body, and leave it after: through a
    barrier when every rank got through (see distributed.shutdown), at once after an error."""
    import warnings
    from gradnas import distributed
    if distributed.launch_rank() != 0:
        warnings.simplefilter("ignore")  # torch's and gradnas' warnings are said once, by rank 0
    world = distributed.init_from_env(device, timeout=timeout)
    try:
        yield world
    except GradnasError as exc:
        if not getattr(exc, "silent", False):
            distributed.mark_stopped()
        distributed.shutdown(clean=False)
        raise
    except BaseException:
        distributed.shutdown(clean=False)
        raise
    distributed.shutdown()


def add_backend_flags(p, *, noun: str = "run") -> None:
    """--jobs, --backend, --address, --cpus-per-run, --gpus-per-run: how a sweep's searches run (gradnas sweep,
    gradnas reproduce); read back with :func:`backend_args`."""
    p.add_argument("--jobs", type=whole_number, help=f"{noun}s at a time (local: parallel processes, default 1; "
                                                     "ray: default as many as the cluster's resources allow)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help=f"local: subprocesses on this machine (default); ray: one Ray task per {noun} (pip "
                        "install 'gradnas[ray]')")
    p.add_argument("--address", help="ray: the cluster to run on ('auto', HOST:PORT or ray://HOST:PORT; default: a "
                                     "local Ray started for the sweep); --out must be on a filesystem every node sees")
    p.add_argument("--cpus-per-run", type=float, metavar="N", help=f"ray: CPUs each {noun} holds (default 1; also "
                                                                    "its threads unless threads is set)")
    p.add_argument("--gpus-per-run", type=float, metavar="N", help=f"ray: GPUs each {noun} holds (default 0; a "
                                                                    "fraction shares a GPU)")


def backend_args(args) -> dict:
    """The backend keyword arguments of gradnas.report.sweep.run_sweep from flags added by :func:`add_backend_flags`."""
    return dict(backend=args.backend, address=args.address, cpus_per_run=args.cpus_per_run,
                gpus_per_run=args.gpus_per_run)
