"""`gradnas search` (one search, or the continuation of one) and `gradnas sweep` (a grid of searches)."""
from __future__ import annotations

import argparse
import logging
from datetime import datetime
from pathlib import Path

from gradnas import overrides
from gradnas.cli.common import (add_backend_flags, add_launch_flags, add_tracker_flags, backend_args,
                                check_resume_out, drive, process_group, speaker, whole_number)
from gradnas.cli.plugins import portable
from gradnas.errors import GradnasError

logger = logging.getLogger(__name__)


def add_search_parser(sub):
    p = sub.add_parser("search", help="search a cell with a gradient-based method",
                       description="Search a cell. Without --config this runs the built-in quick default "
                                   "(single-level search with the sigmoid relaxation on Fashion-MNIST with a small "
                                   "proxy supernet, about 3 minutes on 2 CPU cores). Precedence: --config < flags < --set.")
    _add_config_flags(p, grid=False)
    p.add_argument("--out", help="run folder (default: runs/<method>-<dataset>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the search in RUN_DIR from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="warnings and errors only, no progress bars (bars show only "
                                                        "on a terminal)")
    add_launch_flags(p)
    return p


def _add_config_flags(p, *, grid: bool):
    """The flags that set search config keys; `grid` (sweep) leaves out method, lambda and seed."""
    from gradnas.config import CONFIG_DIR
    shipped = ", ".join(sorted(c.stem for c in CONFIG_DIR.glob("*.yaml")))
    p.add_argument("--config", help=f"YAML file, or the name of a shipped config ({shipped})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set w_optim.lr=0.01 (repeatable)")
    p.add_argument("--space", help="search space: darts or nb201 (NAS-Bench-201)")
    if not grid:
        p.add_argument("--method", help="architecture optimizer: milenas, darts, single-level, or pvll (PVLL-NAS: a "
                                        "learned validation-loss estimator guides the sampling; settings in the "
                                        "pvll config section)")
    p.add_argument("--order", type=whole_number, help="1 (first order) or 2 (second order: darts, milenas; one virtual "
                                             "weight step, finite-difference Hessian-vector product; pvll: train "
                                             "each sampled cell before measuring its loss, the paper's main setting)")
    if not grid:
        p.add_argument("--lambda", dest="lam", type=float,
                       help="MiLeNAS lambda: weight of the validation term in first order, of the training term in "
                            "second order (as the paper writes each update)")
    p.add_argument("--xi", type=float, help="order 2: virtual step size (default: the current weight learning rate)")
    p.add_argument("--relax", help="relaxation: softmax, sigmoid or gumbel (GDAS sampling)")
    p.add_argument("--alpha-data", choices=("split", "same-split", "same-batch"),
                   help="where the architecture batch comes from: split (the architecture half, default), "
                        "same-split (another batch of the weight half) or same-batch (the weight batch itself); "
                        "single-level paper, Table 1")
    p.add_argument("--switch-at", type=whole_number, metavar="E",
                   help="method schedule: run --method for the first E epochs, then --then (weights, alphas and "
                        "optimizer state carry over; MiLeNAS Fig. 2b: --method darts --switch-at 35 --then milenas)")
    p.add_argument("--then", metavar="METHOD", help="the method after --switch-at epochs")
    p.add_argument("--then-order", type=whole_number, metavar="ORDER",
                   help="the order of the --then method (default: --order); MiLeNAS Fig. 2b: --method darts "
                        "--order 2 --switch-at 35 --then milenas --then-order 1")
    p.add_argument("--arch-optim", choices=("adam", "sgd"),
                   help="optimizer of alpha: adam (default; betas from arch_optim.betas) or sgd (the single-level "
                        "paper's Tables 1-2; arch_optim.momentum, arch_optim.nesterov)")
    p.add_argument("--lr-decay-on-collapse", dest="lr_decay", action="store_const", const=True,
                   help="single-level paper 4.1.4: after an epoch whose cell has more than collapse.threshold "
                        "parameter-free ops, multiply the weight lr by collapse.lr_factor (0.5), at most "
                        "collapse.max_decays (3) times")
    p.add_argument("--collapse-threshold", type=float, metavar="SHARE",
                   help="share of parameter-free ops (none, pooling, skip; DARTS: in the normal cell, collapse.cells) "
                        "above which a search warns and, with "
                        "--lr-decay-on-collapse, lowers the lr (default 0.3; --set collapse.warn=false: no warning)")
    p.add_argument("--stop-at-size", type=_size_arg, metavar="N,R",
                   help="MiLeNAS 5.2: end the search at the first epoch whose genotype has N conv ops (sep_conv, "
                        "dil_conv) in the normal cell and R in the reduction cell (the paper: 6,0); NB-201: N "
                        "(nor_conv ops in the cell)")
    p.add_argument("--stop-when-smaller", type=float, metavar="P",
                   help="end the search at the first epoch whose evaluation network (CIFAR setting) has fewer than "
                        "P million parameters after an earlier one had at least P")
    g = p.add_argument_group(
        "pvll", "PVLL-NAS ablations (paper Table 5); more keys in the pvll section, e.g. --set pvll.steps=100 "
                "--set pvll.population=100 --set pvll.train_batches=10. pvll counts steps, not epochs.")
    g.add_argument("--no-warmup", dest="no_warmup", action="store_const", const=False,
                   help="no warm-up population: search pvll.steps + pvll.population steps instead (same budget)")
    g.add_argument("--uniform-sampling", action="store_const", const=True,
                   help="sample architectures uniformly instead of from A (A still follows the estimator)")
    g.add_argument("--unweighted-loss", dest="unweighted_loss", action="store_const", const=False,
                   help="train the estimator with a plain MSE instead of eq. 8's 1/p_t weights")
    p.add_argument("--dataset", help="cifar10, fashion-mnist or imagefolder")
    p.add_argument("--data-dir", help="where the dataset is (folder or .tar.gz)")
    p.add_argument("--epochs", type=whole_number, help="epochs (not read by pvll, which counts pvll.steps)")
    p.add_argument("--batch-size", type=whole_number)
    p.add_argument("--cells", type=whole_number, help="darts: cells in the network; nb201: cells per stage (N)")
    p.add_argument("--channels", type=whole_number, help="initial channels (C)")
    if not grid:
        p.add_argument("--seed", type=whole_number)
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--compile", choices=("off", "default", "reduce-overhead", "max-autotune"),
                   help="torch.compile the supernet's forward pass of every search step (per-batch methods; not "
                        "with the gumbel relaxation): default, reduce-overhead (CUDA graphs, CUDA only) or "
                        "max-autotune; off (default) runs eager. The first steps pay the compilation")
    p.add_argument("--precision", choices=("fp32", "bf16"),
                   help="bf16 = bfloat16 autocast of the search's forward passes (weights and alphas stay fp32)")
    p.add_argument("--callback", action="append", metavar="NAME",
                   help="attach a callback registered under NAME (gradnas.callbacks.register_callback; import its "
                        "module with --plugin); repeatable; saved in config.yaml, so --resume attaches it again")
    p.add_argument("--threads", type=whole_number, help="CPU threads (default: all cores)" if not grid else
                   "CPU threads per run (default: the cores divided among --jobs)")
    add_tracker_flags(p)
    g = p.add_argument_group(
        "probes", "Optional per-epoch measurements, recorded in metrics.jsonl and drawn by `gradnas plot`; all off "
                  "by default, and none changes the search. The relaxed op weights of every edge are always "
                  "recorded (edge_weights, no cost). More keys: probes.grad_corr_cells, probes.batches.")
    g.add_argument("--probe-gap", action="store_true", default=None,
                   help="train/validation loss and accuracy gap, both halves in eval mode (MiLeNAS Fig. 2a). "
                        "Cost: one more validation-sized pass per epoch")
    g.add_argument("--probe-grad-corr", action="store_true", default=None,
                   help="per node, the correlation of the loss gradients w.r.t. its output on the batch that "
                        "updates w and the one that updates alpha (single-level paper eq. 13, Fig. 2), in the "
                        "first, middle and last cells; eq. 13 as written (per-sample gradient products). Cost per "
                        "epoch: for each probe batch pair one forward per batch and one backward per sample "
                        "(batched); probes.grad_corr_form=proxy: the batch-summed cosine, one backward per batch, "
                        "about one search step per pair")
    g.add_argument("--probe-dl-dp", action="append", metavar="CELL:T<-S",
                   help="dL/dp for every op on an edge (single-level paper Fig. 3): CELL is a searched cell's "
                        "index, last, or a cell kind for the weight all such cells share (darts: normal, reduce; "
                        "nb201: cell); S may be *, e.g. 'last:3<-*'. Repeatable. Cost: one forward and one backward "
                        "per probe batch (shared with --probe-grad-corr's proxy form)")
    g.add_argument("--probe-batches", type=whole_number, metavar="N",
                   help="batch pairs per epoch for the gradient probes (default 2); their cost grows with N")


def _size_arg(text: str) -> list:
    """``N,R`` (or ``N`` for NB-201) -> [N, R]: conv-op counts, integers >= 0."""
    parts = text.replace(" ", "").split(",")
    if not 1 <= len(parts) <= 2 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: expected N,R, the conv ops in the normal and in the reduction "
                                         "cell as integers >= 0 (e.g. 6,0; NB-201: N)")
    return [int(p) for p in parts]


def add_sweep_parser(sub):
    p = sub.add_parser("sweep", help="run a grid of searches, then compare them",
                       description="Run a grid of searches (methods x lambdas x seeds x --grid keys), one after "
                                   "another, --jobs at a time, or as Ray tasks (--backend ray), each in OUT/<name> "
                                   "with its log in search.log, then write OUT/compare.md. Run the same command "
                                   "again to resume: finished runs are skipped, interrupted ones continue from "
                                   "their checkpoint. Every search flag and --set applies to all runs.")
    p.add_argument("--out", required=True, help="sweep folder; one run folder per grid point inside")
    p.add_argument("--methods", help="comma-separated, e.g. single-level,milenas,darts (default: the config's)")
    p.add_argument("--lambdas", help="comma-separated MiLeNAS lambdas, e.g. 0.1,1,999 (milenas runs only)")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2 (default: the config's)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a grid axis over any config key, values read as --set reads them, e.g. --grid "
                        "w_optim.lr=0.01,0.025 --grid stop.at_size=[6,0],[4,0] (repeatable; run names get one part "
                        "per key with more than one value)")
    add_backend_flags(p, noun="run")
    p.add_argument("--quiet", action="store_true", help="warnings and errors only, no progress bar")
    _add_config_flags(p, grid=True)
    return p


def search_flags(args) -> dict:
    """The search flags of a parsed command line, by the names gradnas.overrides reads (None: not given;
    sweep has no --method, --lambda or --seed)."""
    return {name: getattr(args, name, None) for name in (*overrides.SEARCH_FLAGS, "cells", "channels")}


def resolve_search_config(args):
    """The SearchConfig of a parsed `gradnas search` command line: --config (or the default), flags, --set."""
    return overrides.resolve_search_config(args.config, search_flags(args), args.set)


def run_search(args) -> int:
    from gradnas import distributed
    from gradnas.search.loop import Search
    from gradnas.space import get_space

    if args.resume:
        saved = overrides.saved_search_config(args.resume)
        check_resume_out(args)
        if args.config:
            raise GradnasError("--resume takes its config from the run folder; drop --config")
        cfg = overrides.resumed_search_config(args.resume, saved, search_flags(args), args.set)
        out = Path(args.resume)
    else:
        cfg = resolve_search_config(args)
        out = None
    with process_group(cfg.device, args.dist_timeout) as world:  # a no-op unless started by torchrun
        if out is None:
            out = Path(args.out) if args.out else Path(distributed.from_main(str(Path("runs") / (
                f"{cfg.method}-{cfg.space}-{cfg.data.dataset}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"))))
        say = speaker(world.is_main)
        explicit = overrides.given_keys(cfg.to_dict(), search_flags(args), args.set)  # checked as the CLI's
        search = Search(cfg, out, resume=bool(args.resume), progress=not args.quiet, explicit_keys=explicit)
        unit, total = search.job.unit, search.job.units()
        summary = drive(search, resumed=bool(args.resume), say=say)
        if isinstance(summary, int):
            return summary
    if "stop" in summary:
        say(f"stopped after {unit} {summary['stop']['epoch']} of {total}: {summary['stop']['reason']}")
    say(f"genotype: {summary['genotype']}")
    if "best_valid_acc" in summary:
        on_test = " (on the test split: data.split_fraction 1 leaves no architecture half)" if (
            summary.get("valid_on") == "test") else ""
        say(f"best valid acc: {summary['best_valid_acc']:.2f}%{on_test}")
    else:  # pvll: the derived sub-network, measured in the supernet as every sample was
        say(f"derived sub-network in the supernet: valid loss {summary['valid_loss']:.4f}, "
            f"acc {summary['valid_acc']:.2f}%")
    if "collapse" in summary:
        from gradnas.search.callbacks import describe_collapse
        if summary["collapse"]["collapsed"]:
            logger.warning(describe_collapse(summary["collapse"]))
        else:
            say(describe_collapse(summary["collapse"]))
    benchmark = get_space(cfg.space).benchmark
    if benchmark and benchmark.key in summary:
        from gradnas.benchmark import format_benchmark
        say(f"{benchmark.key} test acc: {format_benchmark(summary[benchmark.key])}")
    say(f"run folder: {out}")
    return 0


def _csv(text, kind, flag):
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise GradnasError(f"{flag} {text!r}: expected comma-separated {kind.__name__} values") from None


def run_sweep(args) -> int:
    from gradnas.config import load_yaml
    from gradnas.report.sweep import check_backend, parse_grid, plan_sweep, run_sweep as run_grid
    backend = backend_args(args)
    check_backend(jobs=args.jobs, **backend)  # before any run folder is made
    base = overrides.apply_search_overrides(load_yaml(args.config or overrides.DEFAULT_CONFIG), search_flags(args),
                                            args.set)
    runs = plan_sweep(base, args.out, grid=parse_grid(args.grid), methods=_csv(args.methods, str, "--methods"),
                      lambdas=_csv(args.lambdas, float, "--lambdas"), seeds=_csv(args.seeds, int, "--seeds"))
    try:
        result = run_grid(runs, args.out, jobs=args.jobs, progress=not args.quiet, plugins=portable(args.plugins),
                          **backend)
    except KeyboardInterrupt:
        logger.warning("interrupted; every run keeps its last finished epoch. Run the same command again to resume.")
        return 130
    if result["compare"] is not None:
        print(result["compare"])
    if result["failed"]:
        raise GradnasError(f"{len(result['failed'])} of {len(runs)} runs failed ({', '.join(result['failed'])}); "
                           f"see search.log in their folders under {args.out}, fix the cause and run the same "
                           "command again to resume")
    return 0
