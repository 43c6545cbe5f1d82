"""`gradnas bench`: time search steps of each method, or (--train) training steps of an evaluation network."""
from __future__ import annotations

import logging

from gradnas import overrides
from gradnas.cli.genotype import DARTS_V2
from gradnas.errors import GradnasError

logger = logging.getLogger(__name__)

# Input shape and classes of the datasets a setting may name (imagefolder: those of ImageNet).
BENCH_INPUTS = {"cifar10": ((3, 32, 32), 10), "fashion-mnist": ((1, 28, 28), 10)}


def add_parser(sub):
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
    p.add_argument("--threads", help="CPU threads: a number, or auto for the cores that no other process keeps "
                                     "busy right now (default: torch's, all cores)")
    p.add_argument("--sweep", action="append", metavar="KEY=V1,V2,...",
                   help="time every method at each value of one of batch, cells, channels (e.g. batch=16,32,64)")
    p.add_argument("--methods", help=f"comma-separated (default {BENCH_METHODS}); METHOD:2 is second order; "
                                     f"'{BASELINE}' is one plain pass with all gradients")
    p.add_argument("--train", action="store_true", help="time training steps of an evaluation network instead")
    p.add_argument("--genotype", help="with --train: the genotype (file, string or run folder; default DARTS_V2)")
    p.add_argument("--setting", help="with --train: cifar (default), imagenet, nb201, quick or a YAML file")
    p.add_argument("--precision", help="search steps: fp32 (default) or bf16 (autocast, as --precision of gradnas "
                                       "search); with --train: comma-separated precisions (default fp32,bf16)")
    p.add_argument("--compile", help="search steps: off (default), default, reduce-overhead (CUDA graphs) or "
                                     "max-autotune: the supernet forward through torch.compile, as gradnas search "
                                     "--compile")
    p.add_argument("--channels-last", help="with --train: off, on or off,on (the default)")
    p.add_argument("--out", default="bench.json", help="JSON file for the results")
    return p


def _bench_train(args, device: str):
    from gradnas.bench import run_train_bench
    from gradnas.data.sources import dataset_key
    from gradnas.train.genotypes import genotype_from_source
    for flag in ("methods", "space", "relax"):
        if getattr(args, flag) is not None:
            raise GradnasError(f"--{flag} belongs to timing search steps; it does not go with --train (the "
                               "genotype names the space)")
    flags = {name: getattr(args, name) for name in overrides.BENCH_TRAIN_FLAGS}
    cfg = overrides.bench_train_config(args.setting, flags)
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
    logger.info(f"gradnas bench --train: {genotype.space} network, {cfg.network.cells} cells, {cfg.network.channels} "
                f"channels, batch {cfg.batch_size} of {'x'.join(map(str, shape))}, device {device}")
    return run_train_bench(genotype=genotype.to_string(), config=cfg.to_dict(), input_shape=shape, classes=classes,
                           batch=cfg.batch_size, steps=args.steps, warmup=args.warmup, device=device,
                           threads=args.threads, precisions=precisions,
                           channels_last=[formats[x] for x in layouts])


def _threads(text):
    """--threads: None, "auto" (resolved by gradnas.bench when the bench starts) or a whole number in range."""
    from gradnas.bench import resolve_threads
    if text is None or text == "auto":
        return text
    try:
        threads = int(text)
    except ValueError:
        raise GradnasError(f"--threads {text!r}: give a whole number of threads or auto") from None
    return resolve_threads(threads)[0]  # refuses a count out of range before anything runs


def _sweep(args):
    from gradnas.bench import parse_sweep
    if not args.sweep:
        return None
    if len(args.sweep) > 1:
        raise GradnasError(f"--sweep given {len(args.sweep)} times: one swept key per run; run gradnas bench once "
                           "per key")
    key, values = parse_sweep(args.sweep[0])
    if getattr(args, key) is not None:
        raise GradnasError(f"--{key} and --sweep {key}=... both set the {key}; leave --{key} out")
    return key, values


def run(args) -> int:
    from gradnas.bench import BENCH_METHODS, run_bench, write_bench
    from gradnas.distributed import resolve_device
    device = str(resolve_device(args.device))
    args.threads = _threads(args.threads)
    if args.train:
        if args.sweep:
            raise GradnasError("--sweep times search steps; it does not go with --train")
        result = _bench_train(args, device)
    else:
        for flag in ("genotype", "setting", "channels_last"):
            if getattr(args, flag) is not None:
                raise GradnasError(f"--{flag.replace('_', '-')} goes with --train (timing an evaluation network)")
        sweep = _sweep(args)
        space, relax, batch, channels = args.space or "darts", args.relax or "softmax", args.batch or 64, \
            args.channels or 16
        methods = [m.strip() for m in (args.methods or BENCH_METHODS).split(",") if m.strip()]
        shape = {"batch": f"batch {batch}", "cells": f"{args.cells or 'default'} cells",
                 "channels": f"{channels} channels"}
        if sweep:
            shape[sweep[0]] = f"{sweep[0]} {','.join(map(str, sweep[1]))}"
        logger.info(f"gradnas bench: space {space}, relax {relax}, {', '.join(shape.values())}, device {device}")
        result = run_bench(methods=methods, batch=batch, steps=args.steps, warmup=args.warmup, device=device,
                           cells=args.cells, channels=channels, threads=args.threads, space=space, relax=relax,
                           sweep=sweep, compile=args.compile or "off", precision=args.precision or "fp32")
    write_bench(result, args.out)
    print(f"written {args.out}")
    return 0
