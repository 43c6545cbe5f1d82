"""`gradnas genotype` (check a genotype against a space) and `gradnas lookup` (its NAS-Bench-201 accuracy)."""
from __future__ import annotations

import sys

from gradnas import overrides
from gradnas.cli.common import read_genotype

# The DARTS paper's cell (DARTS_V2), the default genotype of `gradnas bench --train`.
DARTS_V2 = ("normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|sep_conv_3x3~0|sep_conv_3x3~1|+|skip_connect~0|sep_conv_3x3~1|"
            "+|skip_connect~0|dil_conv_3x3~2|;reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~1|skip_connect~2|"
            "+|max_pool_3x3~0|skip_connect~2|+|max_pool_3x3~1|skip_connect~2|")


def add_genotype_parser(sub):
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


def add_lookup_parser(sub):
    p = sub.add_parser("lookup", help="NAS-Bench-201 test accuracy of a cell",
                       description="The 200-epoch test accuracy (%%) of a NAS-Bench-201 cell on CIFAR-10, "
                                   "CIFAR-100 and ImageNet16-120, from the benchmark table shipped with gradnas, and "
                                   "its rank among the 15,625 cells on each (1 = best; cells with equal accuracy "
                                   "share a rank, and the ties are stated).")
    p.add_argument("genotype", help="'|op~0|+|op~0|op~1|+|op~0|op~1|op~2|', an NB-201 genotype.json or a run folder")
    return p


def run_genotype(args) -> int:
    from gradnas.space import check_genotype
    from gradnas.space.genotype import save_genotype
    geno = read_genotype(args.genotype)
    cfg = overrides.genotype_space_config(args.config, args.space, args.set, geno.space)
    geno = check_genotype(geno, cfg.space, cfg.space_config)
    print(geno.to_string())
    if args.json:
        save_genotype(geno, args.json)
        print(f"written {args.json}", file=sys.stderr)
    return 0


def run_lookup(args) -> int:
    from gradnas.benchmark.nb201 import lookup, rank
    geno = read_genotype(args.genotype)
    figures, ranks = lookup(geno), rank(geno)
    print(geno.to_string())
    for name, acc in figures.items():
        r = ranks[name]
        tied = (f" (tied with {r['tied']} other cell{'s' if r['tied'] > 1 else ''} at {acc:.2f}: a shared rank, "
                f"1 + the cells above)" if r["tied"] else "")
        print(f"{name:16s}{acc:6.2f}  rank {r['rank']} / {r['of']}{tied}")
    return 0
