"""`gradnas reproduce NAME|SPEC.yaml --budget tiny|proxy|paper --out DIR` and `gradnas reproduce --list`."""
from __future__ import annotations

import logging

from gradnas.cli.common import add_backend_flags, backend_args
from gradnas.errors import GradnasError

logger = logging.getLogger(__name__)


def add_parser(sub):
    p = sub.add_parser(
        "reproduce", help="run the searches behind a table or figure of a paper and report them beside it",
        description="Run an experiment spec (a shipped name from --list, or your own spec YAML): its searches, "
                    "their training from scratch where the result needs it, then OUT/report.md with the runs' "
                    "numbers beside the paper's and the paper's orderings checked. Run the same command again "
                    "to resume. Budgets: tiny (seconds, a check that the spec runs), proxy (about an hour on 2 "
                    "CPU cores; the report states what it shrinks) and paper (the paper's setting, for a GPU).")
    p.add_argument("spec", nargs="?", help="a shipped spec name (see --list) or a spec YAML file")
    p.add_argument("--list", action="store_true", help="list the shipped specs with their budgets")
    p.add_argument("--budget", default="proxy", help="tiny, proxy (default) or paper")
    p.add_argument("--out", help="output folder (default: runs/reproduce-<spec>-<budget>)")
    p.add_argument("--dataset", help="dataset of every search and training (default: the spec's)")
    p.add_argument("--data-dir", help="where that dataset is, for every search and training")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change a search setting of every run (after the spec's own), e.g. --set threads=1")
    p.add_argument("--train-set", action="append", default=[], metavar="KEY=VALUE",
                   help="change a training setting of every training run")
    add_backend_flags(p, noun="search")
    p.add_argument("--in-process", action="store_true",
                   help="run the searches one after another in this process (no subprocess start-up each; "
                        "for the tiny budget)")
    p.add_argument("--quiet", action="store_true", help="warnings and errors only, no progress bars")
    return p


def _sets(assignments, flag) -> dict:
    from gradnas.config import apply_override
    d: dict = {}
    for a in assignments:
        if "=" not in a:
            raise GradnasError(f"{flag} {a!r}: expected key=value, e.g. {flag} epochs=2")
        one: dict = {}
        apply_override(one, a)  # the value parsed as --set parses it
        key = a.split("=", 1)[0].strip()
        node = one
        for part in key.split(".")[:-1]:
            node = node[part]
        d[key] = node[key.split(".")[-1]]
    return d


def list_specs() -> str:
    from gradnas.reproduce import load_spec, shipped_specs
    lines = []
    for name in shipped_specs():
        spec = load_spec(name)
        lines.append(f"{name}: {spec.title}")
        lines.append(f"    {spec.paper}; {len(spec.runs)} runs" + (", each trained from scratch" if spec.train else ""))
        for b in spec.budgets.values():
            hours = f", about {b.hours:g} h expected" if b.hours else ""
            lines.append(f"    --budget {b.name}: {len(b.seeds)} seed(s){hours}" + (f"; {b.note}" if b.note else ""))
    return "\n".join(lines)


def run(args) -> int:
    from pathlib import Path

    from gradnas.reproduce import reproduce
    from gradnas.reproduce.spec import BUDGETS

    if args.list:
        if args.spec:
            raise GradnasError("--list lists every shipped spec; drop the spec name")
        print(list_specs())
        return 0
    if not args.spec:
        raise GradnasError("name the spec to run (gradnas reproduce --list shows them), e.g. "
                           "gradnas reproduce milenas-fig2a --budget proxy --out runs/fig2a")
    if args.budget not in BUDGETS:
        raise GradnasError(f"--budget {args.budget!r}: choose {', '.join(BUDGETS)}")
    out = Path(args.out or Path("runs") / f"reproduce-{Path(args.spec).stem}-{args.budget}")
    try:
        result = reproduce(args.spec, out, budget=args.budget, jobs=args.jobs, in_process=args.in_process,
                           progress=not args.quiet, dataset=args.dataset, data_dir=args.data_dir,
                           sets=_sets(args.set, "--set"), train_sets=_sets(args.train_set, "--train-set"),
                           **backend_args(args))
    except KeyboardInterrupt:
        logger.warning("interrupted; every run keeps its last checkpoint. Run the same command again to resume.")
        return 130
    for check in result["results"]["expect"]:
        if check["holds"] is not None:
            print(f"{check['measure']}: paper's order {' / '.join(check['order'])}: "
                  f"{'holds' if check['holds'] else 'does not hold'}")
    print(f"report: {result['report']}")
    if result["failed"]:
        raise GradnasError(f"{len(result['failed'])} run(s) failed ({', '.join(result['failed'])}); see their logs "
                           f"under {out}, fix the cause and run the same command again to resume")
    return 0
