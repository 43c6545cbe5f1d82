"""The `gradnas` command. Only this module knows every stage; errors become one message and exit 2."""
from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from gradnas.errors import GradnasError

DEFAULT_CONFIG = "quick"  # what plain `gradnas search` runs: MiLeNAS-1st on Fashion-MNIST, a proxy supernet

# flag -> dotted config key; only flags the user actually gives are applied (argparse default None).
SEARCH_FLAGS = {
    "space": "space", "method": "method", "order": "order", "lam": "lambda", "relax": "relax",
    "dataset": "data.dataset", "data_dir": "data.data_dir", "epochs": "epochs", "batch_size": "batch_size",
    "seed": "seed", "device": "device", "threads": "threads", "xi": "xi",
    "alpha_data": "alpha_data", "switch_at": "switch_at", "then": "then", "lr_decay": "collapse.lr_decay",
    "collapse_threshold": "collapse.threshold",
}
# --cells / --channels set the shape of whichever space is searched.
SPACE_FLAGS = {
    "darts": {"cells": "supernet.cells", "channels": "supernet.channels"},
    "nb201": {"cells": "nb201.cells_per_stage", "channels": "nb201.channels"},
}


def _search_parser(sub):
    p = sub.add_parser("search", help="search a cell with a gradient-based method",
                       description="Search a cell. Without --config this runs the built-in quick default "
                                   "(MiLeNAS-1st on Fashion-MNIST with a small proxy supernet, a few minutes on "
                                   "2 CPU cores). Precedence: --config < flags < --set.")
    from gradnas.config import CONFIG_DIR
    shipped = ", ".join(sorted(c.stem for c in CONFIG_DIR.glob("*.yaml")))
    p.add_argument("--config", help=f"YAML file, or the name of a shipped config ({shipped})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set w_optim.lr=0.01 (repeatable)")
    p.add_argument("--space", help="search space: darts or nb201 (NAS-Bench-201)")
    p.add_argument("--method", help="architecture optimizer: milenas, darts, single-level")
    p.add_argument("--order", type=int, help="1 (first order) or 2 (second order: darts, milenas; one virtual "
                                             "weight step, finite-difference Hessian-vector product)")
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
    p.add_argument("--dataset", help="cifar10, fashion-mnist or imagefolder")
    p.add_argument("--data-dir", help="where the dataset is (folder or .tar.gz)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--cells", type=int, help="darts: cells in the network; nb201: cells per stage (N)")
    p.add_argument("--channels", type=int, help="initial channels (C)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    p.add_argument("--out", help="run folder (default: runs/<method>-<dataset>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the search in RUN_DIR from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _bench_parser(sub):
    from gradnas.bench import BASELINE
    p = sub.add_parser("bench", help="time one search step of each method on random data",
                       description="Seconds per search step, images per second and peak memory of each method "
                                   "with the real supernet of --space on random 3x32x32 data, 10 classes.")
    p.add_argument("--space", default="darts", help="darts or nb201")
    p.add_argument("--relax", default="softmax", help="softmax, sigmoid or gumbel")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=3, help="timed steps per method")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (oneDNN builds its kernels there)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cells", type=int, help="darts: cells (default 8); nb201: cells per stage (default 5)")
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    p.add_argument("--methods", default=f"{BASELINE},single-level,darts,milenas,darts:2,milenas:2",
                   help="comma-separated; METHOD:2 is second order; 'forward-backward' is one plain pass with "
                        "all gradients")
    p.add_argument("--out", default="bench.json", help="JSON file for the results")
    return p


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
    from gradnas.search.loop import GENOTYPE_FILE
    from gradnas.space.genotype import load_genotype
    source = Path(text)
    if source.is_dir():
        source = source / GENOTYPE_FILE
    return load_genotype(source)


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
        value = getattr(args, attr)
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
    from gradnas.config import SearchConfig, load_yaml, resume_conflicts
    from gradnas.search.loop import CONFIG_FILE, Search

    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / CONFIG_FILE).is_file():
            raise GradnasError(f"{run_dir} is not a gradnas run folder (no {CONFIG_FILE}); give the folder a "
                               "search wrote")
        saved = SearchConfig.from_dict(load_yaml(str(run_dir / CONFIG_FILE)))
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
        out = Path(args.out) if args.out else Path("runs") / (
            f"{cfg.method}-{cfg.space}-{cfg.data.dataset}-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    search = Search(cfg, out, resume=bool(args.resume), progress=not args.quiet)
    if args.resume:
        print(f"resuming {out} after epoch {search.epoch}/{cfg.epochs}", file=sys.stderr)
    try:
        summary = search.run()
    except KeyboardInterrupt:
        print(f"\ninterrupted; the last finished epoch ({search.epoch}) is saved. Continue with:\n"
              f"  gradnas search --resume {out}", file=sys.stderr)
        return 130
    print(f"genotype: {summary['genotype']}")
    print(f"best valid acc: {summary['best_valid_acc']:.2f}%")
    if search.benchmark and search.benchmark[0] in summary:
        from gradnas.benchmark import format_benchmark
        key = search.benchmark[0]
        print(f"{key} test acc: {format_benchmark(summary[key])}")
    print(f"run folder: {out}")
    return 0


def cmd_bench(args) -> int:
    from gradnas.bench import run_bench, write_bench
    from gradnas.search.loop import resolve_device
    device = str(resolve_device(args.device))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    print(f"gradnas bench: space {args.space}, relax {args.relax}, batch {args.batch}, "
          f"{args.cells or 'default'} cells, {args.channels} channels, device {device}", file=sys.stderr)
    result = run_bench(methods=methods, batch=args.batch, steps=args.steps, warmup=args.warmup, device=device,
                       cells=args.cells, channels=args.channels, threads=args.threads, space=args.space,
                       relax=args.relax)
    write_bench(result, args.out)
    print(f"written {args.out}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="gradnas", description="Gradient-based neural architecture search.")
    sub = parser.add_subparsers(dest="command", required=True)
    _search_parser(sub)
    _bench_parser(sub)
    _genotype_parser(sub)
    _lookup_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"search": cmd_search, "bench": cmd_bench, "genotype": cmd_genotype, "lookup": cmd_lookup}
    try:
        return handlers[args.command](args)
    except GradnasError as exc:
        print(f"gradnas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ngradnas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
