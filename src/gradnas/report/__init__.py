"""Analysis of search runs: figures (plots, cells), report.md of one run, comparison of several, sweeps.

Reads run folders only (config.yaml, metrics.jsonl, summary.json, genotype.json, checkpoint.pt), so it
works on finished, unfinished and copied runs alike.
"""
