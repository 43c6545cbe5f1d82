"""The `gradnas` command. Only this module knows every stage; errors become one message and exit 2."""
from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from gradnas.errors import GradnasError
from gradnas.signals import Interrupted

DEFAULT_CONFIG = "quick"  # what plain `gradnas search` runs: MiLeNAS-1st on Fashion-MNIST, a proxy supernet
DEFAULT_SETTING = "quick"  # what plain `gradnas train` runs: a small network on Fashion-MNIST, minutes on a CPU

# flag -> dotted config key; only flags the user actually gives are applied (argparse default None).
SEARCH_FLAGS = {
    "space": "space", "method": "method", "order": "order", "lam": "lambda", "relax": "relax",
    "dataset": "data.dataset", "data_dir": "data.data_dir", "epochs": "epochs", "batch_size": "batch_size",
    "seed": "seed", "device": "device", "threads": "threads", "xi": "xi",
    "probe_gap": "probes.gap", "probe_grad_corr": "probes.grad_corr", "probe_dl_dp": "probes.dl_dp_edges",
    "probe_batches": "probes.batches",
    "alpha_data": "alpha_data", "switch_at": "switch_at", "then": "then", "lr_decay": "collapse.lr_decay",
    "collapse_threshold": "collapse.threshold",
    "stop_at_size": "stop.at_size", "stop_when_smaller": "stop.when_smaller",
    "no_warmup": "pvll.warmup", "uniform_sampling": "pvll.uniform_sampling", "unweighted_loss": "pvll.weighted_loss",
}
# --cells / --channels set the shape of whichever space is searched.
SPACE_FLAGS = {
    "darts": {"cells": "supernet.cells", "channels": "supernet.channels"},
    "nb201": {"cells": "nb201.cells_per_stage", "channels": "nb201.channels"},
}
TRAIN_FLAGS = {
    "dataset": "data.dataset", "data_dir": "data.data_dir", "epochs": "epochs", "batch_size": "batch_size",
    "cells": "network.cells", "channels": "network.channels", "lr": "optim.lr", "seed": "seed", "device": "device",
    "threads": "threads", "precision": "precision", "channels_last": "channels_last",
}


def _search_parser(sub):
    p = sub.add_parser("search", help="search a cell with a gradient-based method",
                       description="Search a cell. Without --config this runs the built-in quick default "
                                   "(MiLeNAS-1st on Fashion-MNIST with a small proxy supernet, a few minutes on "
                                   "2 CPU cores). Precedence: --config < flags < --set.")
    _add_config_flags(p, grid=False)
    p.add_argument("--out", help="run folder (default: runs/<method>-<dataset>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the search in RUN_DIR from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
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
    p.add_argument("--order", type=int, help="1 (first order) or 2 (second order: darts, milenas; one virtual "
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
    p.add_argument("--switch-at", type=int, metavar="E",
                   help="method schedule: run --method for the first E epochs, then --then (weights, alphas and "
                        "optimizer state carry over; MiLeNAS Fig. 2b: --method darts --switch-at 35 --then milenas)")
    p.add_argument("--then", metavar="METHOD", help="the method after --switch-at epochs")
    p.add_argument("--lr-decay-on-collapse", dest="lr_decay", action="store_const", const=True,
                   help="single-level paper 4.1.4: after an epoch whose cell has more than collapse.threshold "
                        "parameter-free ops, multiply the weight lr by collapse.lr_factor (0.5), at most "
                        "collapse.max_decays (3) times")
    p.add_argument("--collapse-threshold", type=float, metavar="SHARE",
                   help="share of parameter-free ops (none, pooling, skip) above which a search warns and, with "
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
    p.add_argument("--epochs", type=int, help="epochs (not read by pvll, which counts pvll.steps)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--cells", type=int, help="darts: cells in the network; nb201: cells per stage (N)")
    p.add_argument("--channels", type=int, help="initial channels (C)")
    if not grid:
        p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores)" if not grid else
                   "CPU threads per run (default: the cores divided among --jobs)")
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
                        "first, middle and last cells. Cost per epoch: for each probe batch pair one forward and "
                        "one input-gradient backward per batch, about one search step per pair")
    g.add_argument("--probe-dl-dp", action="append", metavar="CELL:T<-S",
                   help="dL/dp for every op on an edge (single-level paper Fig. 3): CELL is a searched cell's "
                        "index, last, or a cell kind for the weight all such cells share (darts: normal, reduce; "
                        "nb201: cell); S may be *, e.g. 'last:3<-*'. Repeatable. Cost: shares the --probe-grad-corr "
                        "passes (the same cost if used alone)")
    g.add_argument("--probe-batches", type=int, metavar="N",
                   help="batch pairs per epoch for the gradient probes (default 2); their cost grows with N")


def _size_arg(text: str) -> list:
    """``N,R`` (or ``N`` for NB-201) -> [N, R]: conv-op counts, integers >= 0."""
    parts = text.replace(" ", "").split(",")
    if not 1 <= len(parts) <= 2 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: expected N,R, the conv ops in the normal and in the reduction "
                                         "cell as integers >= 0 (e.g. 6,0; NB-201: N)")
    return [int(p) for p in parts]


def _bench_parser(sub):
    from gradnas.bench import BASELINE, BENCH_METHODS
    p = sub.add_parser("bench", help="time one search step of each method (or, with --train, one training "
                                     "step of an evaluation network) on random data",
                       description="Seconds per search step, images per second and peak memory of each method "
                                   "with the real supernet of --space on random 3x32x32 data, 10 classes. With "
                                   "--train: seconds per training step of a genotype's evaluation network (the "
                                   "network, batch and input of --setting) in fp32 and bf16 autocast, with and "
                                   "without channels_last.")
    p.add_argument("--space", help="darts (default) or nb201")
    p.add_argument("--relax", help="softmax (default), sigmoid or gumbel")
    p.add_argument("--batch", type=int, help="batch size (default: 64; with --train the setting's)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per method")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (oneDNN builds its kernels there)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cells", type=int, help="darts: cells (default 8); nb201: cells per stage (default 5); with "
                                             "--train: the setting's")
    p.add_argument("--channels", type=int, help="default: 16; with --train the setting's")
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    p.add_argument("--methods", help=f"comma-separated (default {BENCH_METHODS}); METHOD:2 is second order; "
                                     f"'{BASELINE}' is one plain pass with all gradients")
    p.add_argument("--train", action="store_true", help="time training steps of an evaluation network instead")
    p.add_argument("--genotype", help="with --train: the genotype (file, string or run folder; default DARTS_V2)")
    p.add_argument("--setting", help="with --train: cifar (default), imagenet, nb201, quick or a YAML file")
    p.add_argument("--precision", help="with --train: comma-separated precisions (default fp32,bf16)")
    p.add_argument("--channels-last", help="with --train: off, on or off,on (the default)")
    p.add_argument("--out", default="bench.json", help="JSON file for the results")
    return p


def _train_parser(sub):
    p = sub.add_parser("train", help="train a genotype's network from scratch and report its test accuracy",
                       description="Build the evaluation network of a genotype and train it from scratch. Prints "
                                   "its parameters and multiply-adds first, the test accuracy at the end. Without "
                                   "--setting this runs the quick setting (Fashion-MNIST, minutes on a CPU). "
                                   "Precedence: --setting < flags < --set. Under torchrun (--nproc_per_node K) the "
                                   "global batch is split over K processes.")
    p.add_argument("--genotype", metavar="SOURCE", help="genotype JSON file, genotype string (DARTS "
                                                         "'normal=|...|;reduce=|...|' or NB-201 '|op~0|+|...|') or "
                                                         "search run folder (its final genotype)")
    p.add_argument("--size", metavar="N,R", help="with a run folder: the genotype its model-size index lists for "
                                                 "N convolutions in the normal and R in the reduction cell")
    p.add_argument("--setting", help="cifar, imagenet, nb201, quick (the default) or a YAML file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting, e.g. --set optim.lr=0.05 --set network.drop_path=0.3 (repeatable)")
    p.add_argument("--dataset", help="cifar10, fashion-mnist or imagefolder")
    p.add_argument("--data-dir", help="where the dataset is (folder or .tar.gz)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="global batch size")
    p.add_argument("--cells", type=int, help="DARTS: cells in the network; NB-201: cells per stage")
    p.add_argument("--channels", type=int, help="initial channels")
    p.add_argument("--lr", type=float, help="initial learning rate")
    p.add_argument("--seed", type=int)
    p.add_argument("--precision", choices=["fp32", "bf16"], help="bf16 = bfloat16 autocast")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory format")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    p.add_argument("--out", help="run folder (default: runs/train-<dataset>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the training in RUN_DIR from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def apply_train_overrides(d: dict, args) -> dict:
    """Apply the train flags the user gave, then each --set, to a setting dict (in place)."""
    from gradnas.config import apply_override
    for attr, key in TRAIN_FLAGS.items():
        value = getattr(args, attr)
        if value is not None:
            _assign(d, key, value)
    for assignment in args.set:
        apply_override(d, assignment)
    return d


def cmd_train(args) -> int:
    from gradnas import distributed
    from gradnas.config import load_yaml, resume_conflicts
    from gradnas.train.config import TrainConfig, load_setting
    from gradnas.train.genotypes import genotype_from_source, parse_size
    from gradnas.train.loop import CONFIG_FILE, GENOTYPE_FILE, Training
    from gradnas.space.genotype import load_genotype

    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / CONFIG_FILE).is_file() or not (run_dir / GENOTYPE_FILE).is_file():
            raise GradnasError(f"{run_dir} is not a gradnas training run folder (no {CONFIG_FILE} / {GENOTYPE_FILE})")
        for flag, given in (("--setting", args.setting), ("--genotype", args.genotype), ("--size", args.size)):
            if given:
                raise GradnasError(f"--resume takes the setting and genotype from the run folder; drop {flag}")
        saved_dict = load_yaml(str(run_dir / CONFIG_FILE))
        if "method" in saved_dict or "space" in saved_dict:
            raise GradnasError(f"{run_dir} is a search run folder, not a training one; train its genotype with "
                               f"`gradnas train --genotype {run_dir}`")
        saved = TrainConfig.from_dict(saved_dict)
        cfg = TrainConfig.from_dict(apply_train_overrides(saved.to_dict(), args))
        diff = resume_conflicts(saved.to_dict(), cfg.to_dict())
        if diff:
            key, old, new = diff[0]
            raise GradnasError(f"{run_dir} was trained with {key}={old!r}, not {new!r}; a resumed run keeps its "
                               "setting (only --device and --threads may change). Start a new --out instead.")
        genotype, source = load_genotype(run_dir / GENOTYPE_FILE), str(run_dir / GENOTYPE_FILE)
        out = run_dir
    else:
        if not args.genotype:
            raise GradnasError("give the architecture to train: --genotype FILE|STRING|RUN_DIR (or --resume RUN_DIR)")
        size = parse_size(args.size) if args.size else None
        genotype, source = genotype_from_source(args.genotype, size=size)
        cfg = TrainConfig.from_dict(apply_train_overrides(load_setting(args.setting or DEFAULT_SETTING), args))
    world = distributed.init_from_env(cfg.device)
    try:
        if not args.resume:
            out = Path(args.out) if args.out else Path(distributed.from_main(str(Path("runs") / (
                f"train-{genotype.space}-{cfg.data.dataset}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"))))
        say = print if world.is_main else (lambda *a, **k: None)
        training = Training(cfg, genotype, out, resume=bool(args.resume), progress=not args.quiet)
        h, w = training.data.image_size
        say(f"genotype ({source}): {genotype}", file=sys.stderr)
        say(f"network: {training.params_m:.3f}M parameters (auxiliary head excluded), {training.macs_m:.1f}M "
            f"multiply-adds per {training.data.channels}x{h}x{w} image", file=sys.stderr)
        if args.resume:
            mid = f" and step {training.step} of epoch {training.epoch + 1}" if training.step else ""
            say(f"resuming {out} after epoch {training.epoch}/{cfg.epochs}{mid}", file=sys.stderr)
        try:
            summary = training.run(stop_on_signal=True)
        except Interrupted as stop:
            say(f"\ngradnas: {stop}", file=sys.stderr)
            return stop.exit_code
        except KeyboardInterrupt:
            say(f"\ninterrupted; the last finished epoch ({training.epoch}) is saved. Continue with:\n"
                f"  gradnas train --resume {out}", file=sys.stderr)
            return 130
    finally:
        distributed.shutdown()
    say(f"params: {summary['params_m']:.3f}M  multiply-adds: {summary['macs_m']:.1f}M")
    if "test_acc" in summary:
        top5 = f"  top-5: {summary['test_top5']:.2f}%" if "test_top5" in summary else ""
        say(f"test acc: {summary['test_acc']:.2f}%{top5}")
    say(f"run folder: {out}")
    return 0


def _genotype_parser(sub):
    p = sub.add_parser("genotype", help="check a genotype against a search space and print its canonical form",
                       description="Read a genotype (JSON file, run folder or string), check that it fits the "
                                   "space of --space/--config/--set (node count, op list), print it. Without "
                                   "--space or --config the space is the genotype's own.")
    p.add_argument("genotype", help="genotype.json, a run folder, a DARTS 'normal=|...|;reduce=|...|' or an NB-201 "
                                    "'|op~0|+|op~0|op~1|+|op~0|op~1|op~2|' string")
    p.add_argument("--config", help="config whose space section defines the space (default: quick)")
    p.add_argument("--space", help="darts or nb201 (default: the config's, or without --config the genotype's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", metavar="FILE", help="also write the genotype as JSON to FILE")
    return p


def _lookup_parser(sub):
    p = sub.add_parser("lookup", help="NAS-Bench-201 test accuracy of a cell",
                       description="The 200-epoch test accuracy (%%) of a NAS-Bench-201 cell on CIFAR-10, "
                                   "CIFAR-100 and ImageNet16-120, from the benchmark table shipped with gradnas.")
    p.add_argument("genotype", help="'|op~0|+|op~0|op~1|+|op~0|op~1|op~2|', an NB-201 genotype.json or a run folder")
    return p


def _read_genotype(text: str):
    """A genotype from a string, a JSON file or a run folder (its genotype.json)."""
    from gradnas.report.cells import read_genotype
    return read_genotype(text)


def cmd_genotype(args) -> int:
    from gradnas.config import SearchConfig, apply_override, load_yaml
    from gradnas.space import check_genotype
    from gradnas.space.genotype import save_genotype
    geno = _read_genotype(args.genotype)
    d = load_yaml(args.config or DEFAULT_CONFIG)
    if args.space:
        d["space"] = args.space
    elif not args.config:
        d["space"] = geno.space
    for assignment in args.set:
        apply_override(d, assignment)
    cfg = SearchConfig.from_dict(d)
    geno = check_genotype(geno, cfg.space, cfg.space_config)
    print(geno.to_string())
    if args.json:
        save_genotype(geno, args.json)
        print(f"written {args.json}", file=sys.stderr)
    return 0


def _is_dir(text: str) -> bool:
    try:
        return Path(text).is_dir()
    except OSError:  # e.g. a genotype string longer than a file name may be
        return False


def cmd_lookup(args) -> int:
    from gradnas.benchmark.nb201 import lookup
    geno = _read_genotype(args.genotype)
    figures = lookup(geno)
    print(geno.to_string())
    for name, acc in figures.items():
        print(f"{name:16s}{acc:6.2f}")
    return 0


def resolve_search_config(args):
    """The resolved SearchConfig: shipped/default YAML, then flags, then --set."""
    from gradnas.config import load_yaml
    return config_from_cli(load_yaml(args.config or DEFAULT_CONFIG), args)


def config_from_cli(d: dict, args):
    """The SearchConfig of a config dict with the command line applied (:func:`apply_cli_overrides`).
    A --set of a key in a section the search does not read (another space's or relaxation's) is an error,
    not a silent no-op."""
    from gradnas.config import SearchConfig, unused_section
    cfg = SearchConfig.from_dict(apply_cli_overrides(d, args))
    if cfg.method == "pvll" and getattr(args, "epochs", None) is not None:
        raise GradnasError("--epochs does not apply to method pvll: its budget is pvll.steps search steps after "
                           "pvll.population warm-up architectures (--set pvll.steps=N)")
    pvll_flags = [f for f in ("no_warmup", "uniform_sampling", "unweighted_loss") if getattr(args, f, None) is not None]
    if pvll_flags and cfg.method != "pvll":
        raise GradnasError(f"--{pvll_flags[0].replace('_', '-')} is a PVLL-NAS ablation; use it with --method pvll")
    for assignment in args.set:
        problem = unused_section(cfg, assignment.partition("=")[0].strip())
        if problem:
            raise GradnasError(f"--set {assignment}: {problem}; drop it or set that section instead")
    return cfg


def apply_cli_overrides(d: dict, args) -> dict:
    """Apply the flags the user gave, then each --set, to a config dict (in place); --cells / --channels go
    to the section of the space being searched."""
    from gradnas.config import apply_override
    for attr, key in SEARCH_FLAGS.items():
        value = getattr(args, attr, None)
        if value is not None:
            _assign(d, key, value)
    space = d.get("space", "darts")
    for assignment in args.set:  # a --set space=... decides too: --set is applied last
        key, _, raw = assignment.partition("=")
        if key.strip() == "space":
            space = raw.strip()
    for attr, key in SPACE_FLAGS.get(space, SPACE_FLAGS["darts"]).items():
        value = getattr(args, attr)
        if value is not None:
            _assign(d, key, value)
    for assignment in args.set:
        apply_override(d, assignment)
    return d


def _assign(d: dict, key: str, value) -> None:
    *sections, last = key.split(".")
    node = d
    for section in sections:
        node = node.setdefault(section, {})
    node[last] = value


def cmd_search(args) -> int:
    from gradnas import distributed
    from gradnas.config import SearchConfig, load_yaml, resume_conflicts
    from gradnas.search.loop import CONFIG_FILE, open_search

    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / CONFIG_FILE).is_file():
            raise GradnasError(f"{run_dir} is not a gradnas run folder (no {CONFIG_FILE}); give the folder a "
                               "search wrote")
        saved_dict = load_yaml(str(run_dir / CONFIG_FILE))
        if "network" in saved_dict:
            raise GradnasError(f"{run_dir} is a training run folder, not a search; continue it with "
                               f"`gradnas train --resume {run_dir}`")
        saved = SearchConfig.from_dict(saved_dict)
        if args.config:
            raise GradnasError("--resume takes its config from the run folder; drop --config")
        cfg = config_from_cli(saved.to_dict(), args)
        diff = resume_conflicts(saved.to_dict(), cfg.to_dict())
        if diff:
            key, old, new = diff[0]
            raise GradnasError(f"{run_dir} was searched with {key}={old!r}, not {new!r}; a resumed search keeps "
                               "its config (only --device and --threads may change). Start a new --out instead.")
        out = run_dir
    else:
        cfg = resolve_search_config(args)
        out = None
    world = distributed.init_from_env(cfg.device)  # a no-op unless started by torchrun
    try:
        if out is None:
            out = Path(args.out) if args.out else Path(distributed.from_main(str(Path("runs") / (
                f"{cfg.method}-{cfg.space}-{cfg.data.dataset}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"))))
        say = print if world.is_main else (lambda *a, **k: None)
        search = open_search(cfg, out, resume=bool(args.resume), progress=not args.quiet)
        done = (f"round {search.round}/{len(search.plan)}" if cfg.method == "pvll"
                else f"epoch {search.epoch}/{cfg.epochs}"
                + (f" and step {search.step} of epoch {search.epoch + 1}" if search.step else ""))
        if args.resume:
            say(f"resuming {out} after {done}", file=sys.stderr)
        try:
            summary = search.run(stop_on_signal=True)
        except Interrupted as stop:
            say(f"\ngradnas: {stop}", file=sys.stderr)
            return stop.exit_code
        except KeyboardInterrupt:
            last = f"round ({search.round})" if cfg.method == "pvll" else f"epoch ({search.epoch})"
            say(f"\ninterrupted; the last finished {last} is saved. Continue with:\n"
                f"  gradnas search --resume {out}", file=sys.stderr)
            return 130
    finally:
        distributed.shutdown()
    if "stop" in summary:
        say(f"stopped after epoch {summary['stop']['epoch']} of {cfg.epochs}: {summary['stop']['reason']}")
    say(f"genotype: {summary['genotype']}")
    if "best_valid_acc" in summary:
        say(f"best valid acc: {summary['best_valid_acc']:.2f}%")
    else:  # pvll: the derived sub-network, measured in the supernet as every sample was
        say(f"derived sub-network in the supernet: valid loss {summary['valid_loss']:.4f}, "
            f"acc {summary['valid_acc']:.2f}%")
    if search.benchmark and search.benchmark[0] in summary:
        from gradnas.benchmark import format_benchmark
        key = search.benchmark[0]
        say(f"{key} test acc: {format_benchmark(summary[key])}")
    say(f"run folder: {out}")
    return 0


# The DARTS paper's cell (DARTS_V2), the default genotype of `gradnas bench --train`.
DARTS_V2 = ("normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|sep_conv_3x3~0|sep_conv_3x3~1|+|skip_connect~0|sep_conv_3x3~1|"
            "+|skip_connect~0|dil_conv_3x3~2|;reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~1|skip_connect~2|"
            "+|max_pool_3x3~0|skip_connect~2|+|max_pool_3x3~1|skip_connect~2|")
# Input shape and classes of the datasets a setting may name (imagefolder: those of ImageNet).
BENCH_INPUTS = {"cifar10": ((3, 32, 32), 10), "fashion-mnist": ((1, 28, 28), 10)}


def _bench_train(args, device: str):
    from gradnas.bench import run_train_bench
    from gradnas.data.sources import dataset_key
    from gradnas.train.config import TrainConfig, load_setting
    from gradnas.train.genotypes import genotype_from_source
    for flag in ("methods", "space", "relax"):
        if getattr(args, flag) is not None:
            raise GradnasError(f"--{flag} belongs to timing search steps; it does not go with --train (the "
                               "genotype names the space)")
    d = load_setting(args.setting or "cifar")
    for flag, key in (("batch", "batch_size"), ("cells", "network.cells"), ("channels", "network.channels")):
        if getattr(args, flag) is not None:
            _assign(d, key, getattr(args, flag))
    cfg = TrainConfig.from_dict(d)
    genotype, _ = genotype_from_source(args.genotype or DARTS_V2)
    if cfg.data.random_resized_crop:
        shape, classes = (3, cfg.data.random_resized_crop, cfg.data.random_resized_crop), 1000
    else:
        key = dataset_key(cfg.data.dataset)
        if key not in BENCH_INPUTS:
            raise GradnasError(f"bench --train: the images of dataset {key!r} have no fixed size; use a setting with "
                               f"dataset {' or '.join(BENCH_INPUTS)} or with random_resized_crop")
        shape, classes = BENCH_INPUTS[key]
    precisions = [p.strip() for p in (args.precision or "fp32,bf16").split(",") if p.strip()]
    formats = {"off": False, "on": True}
    layouts = [x.strip() for x in (args.channels_last or "off,on").split(",") if x.strip()]
    if not layouts or any(x not in formats for x in layouts):
        raise GradnasError(f"--channels-last {args.channels_last!r}: give off, on or off,on")
    print(f"gradnas bench --train: {genotype.space} network, {cfg.network.cells} cells, {cfg.network.channels} "
          f"channels, batch {cfg.batch_size} of {'x'.join(map(str, shape))}, device {device}", file=sys.stderr)
    return run_train_bench(genotype=genotype.to_string(), config=cfg.to_dict(), input_shape=shape, classes=classes,
                           batch=cfg.batch_size, steps=args.steps, warmup=args.warmup, device=device,
                           threads=args.threads, precisions=precisions,
                           channels_last=[formats[x] for x in layouts])


def cmd_bench(args) -> int:
    from gradnas.bench import BENCH_METHODS, run_bench, write_bench
    from gradnas.distributed import resolve_device
    device = str(resolve_device(args.device))
    if args.train:
        result = _bench_train(args, device)
    else:
        for flag in ("genotype", "setting", "precision", "channels_last"):
            if getattr(args, flag) is not None:
                raise GradnasError(f"--{flag.replace('_', '-')} goes with --train (timing an evaluation network)")
        space, relax, batch, channels = args.space or "darts", args.relax or "softmax", args.batch or 64, \
            args.channels or 16
        methods = [m.strip() for m in (args.methods or BENCH_METHODS).split(",") if m.strip()]
        print(f"gradnas bench: space {space}, relax {relax}, batch {batch}, {args.cells or 'default'} cells, "
              f"{channels} channels, device {device}", file=sys.stderr)
        result = run_bench(methods=methods, batch=batch, steps=args.steps, warmup=args.warmup, device=device,
                           cells=args.cells, channels=channels, threads=args.threads, space=space, relax=relax)
    write_bench(result, args.out)
    print(f"written {args.out}")
    return 0


def _analysis_parsers(sub):
    p = sub.add_parser("plot", help="draw a run's figures to PNG",
                       description="Draw a run's figures: relaxed op weights per edge over epochs, training "
                                   "curves, the probes that were recorded, and the derived cells (needs Graphviz's "
                                   "`dot`). Works on unfinished runs too.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", help="folder for the PNGs (default: RUN_DIR/plots)")

    p = sub.add_parser("draw", help="draw the cells of a genotype with Graphviz",
                       description="Draw the normal and reduction cells of a genotype (genotype JSON, run folder or "
                                   "canonical string) as <out>/cell-normal.<fmt> and <out>/cell-reduce.<fmt>.")
    p.add_argument("genotype", help="genotype.json, a run folder, or 'normal=|...|;reduce=|...|'")
    p.add_argument("--out", help="folder (default: RUN/plots for a run folder, else the current folder)")
    p.add_argument("--format", default="png", choices=("png", "svg", "pdf"))

    p = sub.add_parser("report", help="write report.md beside a run",
                       description="Write RUN_DIR/report.md: config, genotype and cell diagrams, parameters, "
                                   "metric curves, probes, model sizes and benchmark accuracy when recorded, wall "
                                   "time per epoch. Figures go to RUN_DIR/plots.")
    p.add_argument("run_dir", metavar="RUN_DIR")

    p = sub.add_parser("sizes", help="a search's model sizes: best genotype per size, and their plots",
                       description="MiLeNAS model size-based search (section 5.1): print the table of model sizes "
                                   "(N,R = conv ops in the normal and the reduction cell) a search went through, "
                                   "with the parameters of each size's best genotype (evaluation network, CIFAR "
                                   "setting), its validation accuracy, epoch and genotype file (for `gradnas train "
                                   "--genotype RUN_DIR --size N,R`), and draw Figure 3b/3c: sizes-per-epoch.png and "
                                   "sizes-accuracy.png. Works on unfinished runs too.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", help="folder for the PNGs (default: RUN_DIR/plots)")

    p = sub.add_parser("compare", help="one table and overlaid plots for several runs",
                       description="Compare runs (methods, lambdas, seeds): final and best validation accuracy, "
                                   "gap, search time per epoch, genotype, parameters and NB201 accuracy, with mean "
                                   "and standard deviation over runs that differ only in seed.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="compare", help="folder for compare.md and the plots (default: ./compare)")

    p = sub.add_parser("sweep", help="run a grid of searches, then compare them",
                       description="Run a grid of searches (methods x lambdas x seeds), one after another or "
                                   "--jobs at a time, each in OUT/<name> with its log in search.log, then write "
                                   "OUT/compare.md. Run the same command again to resume: finished runs are "
                                   "skipped, interrupted ones continue from their checkpoint. Every search flag "
                                   "and --set applies to all runs.")
    p.add_argument("--out", required=True, help="sweep folder; one run folder per grid point inside")
    p.add_argument("--methods", help="comma-separated, e.g. single-level,milenas,darts (default: the config's)")
    p.add_argument("--lambdas", help="comma-separated MiLeNAS lambdas, e.g. 0.1,1,999 (milenas runs only)")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2 (default: the config's)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time, as parallel processes (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_config_flags(p, grid=True)


def cmd_plot(args) -> int:
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
        print(f"not recorded in this run: {', '.join(missing)} (search with {flags} to get them)", file=sys.stderr)
    for warning in warnings:
        print(f"gradnas: warning: {warning}", file=sys.stderr)


def cmd_draw(args) -> int:
    from gradnas.report.cells import draw_genotype
    from gradnas.report.report import PLOTS_DIR
    genotype = _read_genotype(args.genotype)
    out = args.out
    if out is None:
        out = Path(args.genotype) / PLOTS_DIR if _is_dir(args.genotype) else Path(".")
    for path in draw_genotype(genotype, out, fmt=args.format):
        print(path)
    return 0


def cmd_report(args) -> int:
    from gradnas.report.report import write_report
    path, missing, warnings = write_report(args.run_dir)
    _print_notes(missing, warnings)
    print(path)
    return 0


def cmd_sizes(args) -> int:
    from gradnas.report.plots import plot_sizes
    from gradnas.report.report import PLOTS_DIR
    from gradnas.report.run import load_run
    from gradnas.report.sizes import format_table, size_records, sizes_table, stop_record
    run = load_run(args.run_dir)
    epochs, entries, recorded = size_records(run)
    if not recorded:
        print(f"gradnas: note: {run.path} has no model-size records (searched before gradnas tracked them); sizes "
              "computed from metrics.jsonl, no genotype files", file=sys.stderr)
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


def cmd_compare(args) -> int:
    from gradnas.report.compare import compare
    path, images = compare(args.run_dirs, args.out)
    print(path)
    return 0


def _csv(text, kind, flag):
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise GradnasError(f"{flag} {text!r}: expected comma-separated {kind.__name__} values") from None


def cmd_sweep(args) -> int:
    from gradnas.config import load_yaml
    from gradnas.report.sweep import plan_sweep, run_sweep
    base = apply_cli_overrides(load_yaml(args.config or DEFAULT_CONFIG), args)
    runs = plan_sweep(base, args.out, methods=_csv(args.methods, str, "--methods"),
                      lambdas=_csv(args.lambdas, float, "--lambdas"), seeds=_csv(args.seeds, int, "--seeds"))
    try:
        result = run_sweep(runs, args.out, jobs=args.jobs, progress=not args.quiet)
    except KeyboardInterrupt:
        print("\ninterrupted; every run keeps its last finished epoch. Run the same command again to resume.",
              file=sys.stderr)
        return 130
    if result["compare"] is not None:
        print(result["compare"])
    if result["failed"]:
        raise GradnasError(f"{len(result['failed'])} of {len(runs)} runs failed ({', '.join(result['failed'])}); "
                           f"see search.log in their folders under {args.out}, fix the cause and run the same "
                           "command again to resume")
    return 0


def _doctor_parser(sub):
    p = sub.add_parser("doctor", help="report what this machine gives gradnas (torch, device, threads, data, dot)",
                       description="Check the environment: gradnas and torch versions, the device, threads, the "
                                   "Python packages, Graphviz's dot, where the datasets are found, the NB-201 table "
                                   "and whether the run and cache folders are writable. Exit status 1 when "
                                   "something a feature needs is missing.")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    return p


def cmd_doctor(args) -> int:
    import json
    from gradnas.doctor import as_dicts, run_checks
    checks = run_checks()
    if args.json:
        print(json.dumps(as_dicts(checks), indent=2))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            print(f"{c.name:<{width}}  {c.status:<7}  {c.detail}")
    missing = [c.name for c in checks if c.status == "missing"]
    if missing:
        print(f"gradnas doctor: missing: {', '.join(missing)} (see the lines above for the fix)", file=sys.stderr)
    return 1 if missing else 0


def build_parser():
    parser = argparse.ArgumentParser(prog="gradnas", description="Gradient-based neural architecture search.")
    sub = parser.add_subparsers(dest="command", required=True)
    _search_parser(sub)
    _train_parser(sub)
    _bench_parser(sub)
    _genotype_parser(sub)
    _lookup_parser(sub)
    _analysis_parsers(sub)
    _doctor_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"search": cmd_search, "train": cmd_train, "bench": cmd_bench, "genotype": cmd_genotype,
                "lookup": cmd_lookup, "plot": cmd_plot, "draw": cmd_draw, "report": cmd_report,
                "compare": cmd_compare, "sweep": cmd_sweep, "sizes": cmd_sizes, "doctor": cmd_doctor}
    try:
        return handlers[args.command](args)
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


if __name__ == "__main__":
    sys.exit(main())
