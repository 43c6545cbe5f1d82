"""The `gradnas` command: one parser, one table of commands, one place where errors become a message.

Each command lives in the module of its group (search.py: search and sweep, report.py: plot, draw, report,
sizes and compare, ...) as a parser builder and a runner; how flags become configs is gradnas.overrides'
business, not this package's. ``--plugin`` modules are imported before any command runs (plugins.py).
"""
from __future__ import annotations

import argparse

from gradnas.cli import bench, doctor, export, genotype, plugins, report, reproduce, search, train
from gradnas.cli.common import Command, guarded
from gradnas.cli.genotype import DARTS_V2
from gradnas.cli.search import resolve_search_config

__all__ = ["COMMANDS", "DARTS_V2", "build_parser", "main", "resolve_search_config"]

# name -> how to build its parser, how to run it; in the order `gradnas --help` lists them.
COMMANDS = {
    "search": Command(search.add_search_parser, search.run_search),
    "train": Command(train.add_parser, train.run),
    "bench": Command(bench.add_parser, bench.run),
    "genotype": Command(genotype.add_genotype_parser, genotype.run_genotype),
    "lookup": Command(genotype.add_lookup_parser, genotype.run_lookup),
    "export": Command(export.add_parser, export.run),
    "plot": Command(report.add_plot_parser, report.run_plot),
    "draw": Command(report.add_draw_parser, report.run_draw),
    "report": Command(report.add_report_parser, report.run_report),
    "sizes": Command(report.add_sizes_parser, report.run_sizes),
    "compare": Command(report.add_compare_parser, report.run_compare),
    "sweep": Command(search.add_sweep_parser, search.run_sweep),
    "reproduce": Command(reproduce.add_parser, reproduce.run),
    "doctor": Command(doctor.add_parser, doctor.run),
}


def version() -> str:
    """The installed distribution's version, or the package's own for a source tree that is not installed."""
    from importlib import metadata
    try:
        return metadata.version("gradnas")
    except metadata.PackageNotFoundError:
        from gradnas import __version__
        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradnas", description="Gradient-based neural architecture search.")
    parser.add_argument("--version", action="version", version=f"gradnas {version()}")
    plugins.add_option(parser, before_command=True)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        p = command.add_parser(sub)
        plugins.add_option(p, before_command=False)
        p.add_argument("-v", "--verbose", action="count", default=0,
                       help="debug messages too (what runs where, the commands a sweep starts)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    args.plugins = plugins.requested(args)

    def run() -> int:
        plugins.load(args.plugins)  # inside the guard: a plugin that fails to import is one error line
        return COMMANDS[args.command].run(args)

    from gradnas import distributed
    from gradnas.log import QUIET, cli_logging
    verbosity = QUIET if getattr(args, "quiet", False) else args.verbose
    with cli_logging(verbosity, rank=distributed.launch_rank()):
        return guarded(run)
