"""`gradnas train`: train a genotype's evaluation network from scratch, or continue such a training."""
from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from gradnas import overrides
from gradnas.cli.common import (add_launch_flags, add_tracker_flags, check_resume_out, drive, process_group, speaker,
                                whole_number)
from gradnas.errors import GradnasError


def add_parser(sub):
    p = sub.add_parser("train", help="train a genotype's network from scratch and report its test accuracy",
                       description="Build the evaluation network of a genotype and train it from scratch. Prints "
                                   "its parameters and multiply-adds first, the test accuracy at the end. Without "
                                   "--setting this runs the quick setting (Fashion-MNIST, minutes on a CPU). "
                                   "Precedence: --setting < flags < --set. Under torchrun (--nproc_per_node K) the "
                                   "global batch is split over K processes.")
    p.add_argument("--genotype", metavar="SOURCE", help="genotype JSON file, genotype string (DARTS "
                                                         "'normal=|...|;reduce=|...|' or NB-201 '|op~0|+|...|') or "
                                                         "search run folder (the genotype --pick chooses)")
    p.add_argument("--size", metavar="N,R", help="with a run folder: the genotype its model-size index lists for "
                                                 "N convolutions in the normal and R in the reduction cell")
    p.add_argument("--pick", choices=("best", "last"),
                   help="with a search run folder: best (the default; the epoch with the best validation accuracy, "
                        "best-genotype.json, as MiLeNAS section 4.1 chooses) or last (its final genotype)")
    p.add_argument("--setting", help="cifar, imagenet, imagenet-pdarts, nb201, pvll, quick (the default) or a YAML "
                                     "file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting, e.g. --set optim.lr=0.05 --set network.drop_path=0.3 (repeatable)")
    p.add_argument("--dataset", help="cifar10, fashion-mnist or imagefolder")
    p.add_argument("--data-dir", help="where the dataset is (folder or .tar.gz)")
    p.add_argument("--epochs", type=whole_number)
    p.add_argument("--batch-size", type=whole_number, help="global batch size")
    p.add_argument("--cells", type=whole_number, help="DARTS: cells in the network; NB-201: cells per stage")
    p.add_argument("--channels", type=whole_number, help="initial channels")
    p.add_argument("--lr", type=float, help="initial learning rate")
    p.add_argument("--seed", type=whole_number)
    p.add_argument("--precision", choices=["fp32", "bf16"], help="bf16 = bfloat16 autocast")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory format")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--callback", action="append", metavar="NAME",
                   help="attach a callback registered under NAME (gradnas.callbacks.register_callback; import its "
                        "module with --plugin); repeatable; saved in config.yaml, so --resume attaches it again")
    p.add_argument("--threads", type=whole_number, help="CPU threads (default: all cores)")
    add_tracker_flags(p)
    p.add_argument("--out", help="run folder (default: runs/train-<dataset>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the training in RUN_DIR from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="warnings and errors only, no progress bars (bars show only "
                                                        "on a terminal)")
    add_launch_flags(p)
    return p


def train_flags(args) -> dict:
    """The training flags of a parsed command line, by the names gradnas.overrides reads (None: not given)."""
    return {name: getattr(args, name) for name in overrides.TRAIN_FLAGS}


def run(args) -> int:
    from gradnas import distributed
    from gradnas.space.genotype import load_genotype
    from gradnas.train.genotypes import genotype_from_source, parse_size
    from gradnas.run import GENOTYPE_FILE
    from gradnas.train.loop import Training

    if args.resume:
        overrides.check_training_folder(args.resume)
        check_resume_out(args)
        for flag, given in (("--setting", args.setting), ("--genotype", args.genotype), ("--size", args.size),
                            ("--pick", args.pick)):
            if given:
                raise GradnasError(f"--resume takes the setting and genotype from the run folder; drop {flag}")
        saved = overrides.saved_train_config(args.resume)
        cfg = overrides.resumed_train_config(args.resume, saved, train_flags(args), args.set)
        out = Path(args.resume)
        genotype, source = load_genotype(out / GENOTYPE_FILE), str(out / GENOTYPE_FILE)
    else:
        if not args.genotype:
            raise GradnasError("give the architecture to train: --genotype FILE|STRING|RUN_DIR (or --resume RUN_DIR)")
        size = parse_size(args.size) if args.size else None
        genotype, source = genotype_from_source(args.genotype, size=size, pick=args.pick)
        cfg = overrides.resolve_train_config(args.setting, train_flags(args), args.set)
    with process_group(cfg.device, args.dist_timeout) as world:
        if not args.resume:
            out = Path(args.out) if args.out else Path(distributed.from_main(str(Path("runs") / (
                f"train-{genotype.space}-{cfg.data.dataset}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"))))
        say = speaker(world.is_main)
        training = Training(cfg, genotype, out, resume=bool(args.resume), progress=not args.quiet)
        h, w = training.data.image_size
        say(f"genotype ({source}): {genotype}", file=sys.stderr)
        say(f"network: {training.params_m:.3f}M parameters (auxiliary head excluded), {training.macs_m:.1f}M "
            f"multiply-adds per {training.data.channels}x{h}x{w} image", file=sys.stderr)
        summary = drive(training, resumed=bool(args.resume), say=say)
        if isinstance(summary, int):
            return summary
    say(f"params: {summary['params_m']:.3f}M  multiply-adds: {summary['macs_m']:.1f}M")
    if "test_acc" in summary:
        top5 = f"  top-5: {summary['test_top5']:.2f}%" if "test_top5" in summary else ""
        say(f"test acc: {summary['test_acc']:.2f}%{top5} (last epoch)")
    selected = summary.get("selected") or {}
    if selected.get("by") == "valid_acc":
        say(f"selected: epoch {selected['epoch']} by validation accuracy {selected['valid_acc']:.2f}% "
            f"(test acc {selected['test_acc']:.2f}% there); its weights are in {out / selected['weights']}")
    say(f"run folder: {out}")
    return 0
