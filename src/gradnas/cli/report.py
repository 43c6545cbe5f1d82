"""The commands that read finished (or unfinished) runs: plot, draw, report, sizes and compare."""
from __future__ import annotations

import logging
from pathlib import Path

from gradnas.cli.common import is_dir, read_genotype

logger = logging.getLogger(__name__)


def add_plot_parser(sub):
    p = sub.add_parser("plot", help="draw a run's figures to PNG",
                       description="Draw a run's figures. A search: relaxed op weights per edge over epochs, training "
                                   "curves, the probes that were recorded, NAS-Bench-201 accuracy per epoch, and the "
                                   "derived cells (needs Graphviz's `dot`). A training run: accuracy, loss, lr and "
                                   "drop-path schedule, and its cells. Works on unfinished runs too.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", help="folder for the PNGs (default: RUN_DIR/plots)")
    return p


def add_draw_parser(sub):
    p = sub.add_parser("draw", help="draw the cells of a genotype with Graphviz",
                       description="Draw the normal and reduction cells of a genotype (genotype JSON, run folder or "
                                   "canonical string) as <out>/cell-normal.<fmt> and <out>/cell-reduce.<fmt>.")
    p.add_argument("genotype", help="genotype.json, a run folder, or 'normal=|...|;reduce=|...|'")
    p.add_argument("--out", help="folder (default: RUN/plots for a run folder, else the current folder)")
    p.add_argument("--format", default="png", choices=("png", "svg", "pdf"))
    return p


def add_report_parser(sub):
    p = sub.add_parser("report", help="write report.md beside a run",
                       description="Write RUN_DIR/report.md. A search: config, genotype and cell diagrams, "
                                   "parameters, metric curves, probes, model sizes and benchmark accuracy when "
                                   "recorded, wall time per epoch. A training run: test top-1 / top-5, parameters, "
                                   "multiply-adds, the reported epoch, curves and schedules. Figures go to "
                                   "RUN_DIR/plots.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    return p


def add_sizes_parser(sub):
    p = sub.add_parser("sizes", help="a search's model sizes: best genotype per size, and their plots",
                       description="MiLeNAS model size-based search (section 5.1): print the table of model sizes "
                                   "(N,R = conv ops in the normal and the reduction cell) a search went through, "
                                   "with the parameters of each size's best genotype (evaluation network, CIFAR "
                                   "setting), its validation accuracy, epoch and genotype file (for `gradnas train "
                                   "--genotype RUN_DIR --size N,R`), and draw Figure 3b/3c: sizes-per-epoch.png and "
                                   "sizes-accuracy.png. Works on unfinished runs too.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", help="folder for the PNGs (default: RUN_DIR/plots)")
    return p


def add_compare_parser(sub):
    p = sub.add_parser("compare", help="one table and overlaid plots for several runs",
                       description="Compare searches (methods, lambdas, seeds): final and best validation accuracy, "
                                   "gap, search time per epoch, genotype, parameters and NB201 accuracy, with mean "
                                   "and standard deviation over runs that differ only in seed; or training runs: "
                                   "test top-1 / top-5, parameters, multiply-adds and curves. All of one kind.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="compare", help="folder for compare.md and the plots (default: ./compare)")
    return p


def run_plot(args) -> int:
    from gradnas.report.report import plot_run
    from gradnas.report.run import load_run
    paths, missing, warnings = plot_run(load_run(args.run_dir), args.out)
    for path in paths:
        print(path)
    _print_notes(missing, warnings)
    return 0


def _print_notes(missing, warnings) -> None:
    if missing:
        flags = ", ".join("--probe-" + m.replace("_", "-") for m in missing)
        logger.info(f"not recorded in this run: {', '.join(missing)} (search with {flags} to get them)")
    for warning in warnings:
        logger.warning(warning)


def run_draw(args) -> int:
    from gradnas.report.cells import draw_genotype
    from gradnas.report.report import PLOTS_DIR
    genotype = read_genotype(args.genotype)
    out = args.out
    if out is None:
        out = Path(args.genotype) / PLOTS_DIR if is_dir(args.genotype) else Path(".")
    for path in draw_genotype(genotype, out, fmt=args.format):
        print(path)
    return 0


def run_report(args) -> int:
    from gradnas.report.report import write_report
    path, missing, warnings = write_report(args.run_dir)
    _print_notes(missing, warnings)
    print(path)
    return 0


def run_sizes(args) -> int:
    from gradnas.report.plots import plot_sizes
    from gradnas.report.report import PLOTS_DIR
    from gradnas.report.run import SEARCH, load_run
    from gradnas.report.sizes import format_table, size_records, sizes_table, stop_record
    run = load_run(args.run_dir, kinds=(SEARCH,), command="`gradnas sizes` (the model sizes a search went through)")
    epochs, entries, recorded = size_records(run)
    if not recorded:
        logger.warning(f"{run.path} has no model-size records (searched before gradnas tracked them); sizes "
                       "computed from metrics.jsonl, no genotype files")
    stop = stop_record(run)
    print(f"model sizes of {run.path} ({len(epochs)} epochs; N,R = conv ops in the normal, reduction cell; params "
          "of the evaluation network, CIFAR setting):")
    print(format_table(*sizes_table(entries)))
    if stop:
        print(f"stopped after epoch {stop['epoch']}: {stop['reason']}")
    for path in plot_sizes(run, Path(args.out) if args.out else run.path / PLOTS_DIR, epochs=epochs,
                           entries=entries, stop=stop):
        print(path)
    return 0


def run_compare(args) -> int:
    from gradnas.report.compare import compare
    path = compare(args.run_dirs, args.out)[0]
    print(path)
    return 0
