"""`gradnas genotype` (check a genotype against a space, print it in any of its forms, list the published cells)
and `gradnas lookup` (its NAS-Bench-201 accuracy)."""
from __future__ import annotations

import logging

from gradnas import overrides
from gradnas.cli.common import read_genotype
from gradnas.errors import GradnasError
from gradnas.genotypes import FORMS
from gradnas.space.published import PUBLISHED

logger = logging.getLogger(__name__)

# The DARTS paper's cell (DARTS_V2), the default genotype of `gradnas bench --train`: from the table of
# published cells (gradnas.genotypes.named()), as its canonical string.
DARTS_V2 = PUBLISHED["DARTS_V2"].text


def add_genotype_parser(sub):
    p = sub.add_parser("genotype", help="check a genotype against a search space, print it (or convert it)",
                       description="Read a genotype (JSON file, run folder, string of any form or the name of a "
                                   "published cell), check that it fits the space of --space/--config/--set (node "
                                   "count, op list), print it: its canonical form, or the form --to names. Without "
                                   "--space or --config the space is the genotype's own. --list prints the "
                                   "published cells.")
    p.add_argument("genotype", nargs="?",
                   help="genotype.json, a run folder, a DARTS 'normal=|...|;reduce=|...|' or "
                        "\"Genotype(normal=[('sep_conv_3x3', 0), ...], ...)\", an NB-201 "
                        "'|op~0|+|op~0|op~1|+|op~0|op~1|op~2|' string, genotype JSON text or a published name "
                        "(DARTS_V2, ...)")
    p.add_argument("--to", choices=FORMS, help="print it in this form: gradnas (the canonical string, the default), "
                                                "darts (the DARTS code's Genotype(...)) or json")
    p.add_argument("--list", action="store_true", help="list the published cells gradnas knows by name")
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
    from gradnas.genotypes import named, to_form
    from gradnas.space import check_genotype
    from gradnas.space.genotype import save_genotype
    if args.list:
        if args.genotype or args.to or args.json or args.config or args.space or args.set:
            raise GradnasError("--list prints the published cells and takes no other argument; give it alone "
                               "(then `gradnas genotype NAME` for one of them)")
        for name, entry in named().items():
            print(f"{name}\t{entry.genotype}\t{entry.source}")
        return 0
    if not args.genotype:
        raise GradnasError("give a genotype (file, run folder, string or published name), or --list")
    geno = read_genotype(args.genotype)
    cfg = overrides.genotype_space_config(args.config, args.space, args.set, geno.space)
    geno = check_genotype(geno, cfg.space, cfg.space_config)
    print(to_form(geno, args.to or "gradnas"))
    if args.json:
        save_genotype(geno, args.json)
        logger.info(f"written {args.json}")
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
