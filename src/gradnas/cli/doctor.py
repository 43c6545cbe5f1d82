"""`gradnas doctor`: what this machine gives gradnas, and what a feature would still need."""
from __future__ import annotations

import sys


def add_parser(sub):
    p = sub.add_parser("doctor", help="report what this machine gives gradnas (torch, device, threads, data, dot)",
                       description="Check the environment: gradnas and torch versions, the device, threads, the "
                                   "Python packages, Graphviz's dot, where the datasets are found, the NB-201 table "
                                   "and whether the run and cache folders are writable. Exit status 1 when "
                                   "something a feature needs is missing.")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    return p


def run(args) -> int:
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
