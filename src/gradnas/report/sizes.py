"""`gradnas sizes`: a search's model sizes (MiLeNAS section 5.1, Figure 3b/3c) as a table and two plots.

Reads the run folder only: the per-epoch ``normal_convs`` / ``reduce_convs`` / ``params_m`` of
metrics.jsonl and the per-size index ``sizes/index.json``. A run from before the tracker existed has
neither; its sizes are then computed from the genotype and validation accuracy of each metrics line
(the same :class:`~gradnas.search.sizes.SizeTracker`), without genotype files.
"""
from __future__ import annotations

from gradnas.report.run import Run, md_table
from gradnas.search.sizes import SizeTracker

PER_EPOCH_KEYS = ("normal_convs", "reduce_convs", "params_m")


def size_records(run: Run) -> tuple[list, list, bool]:
    """(per-epoch records {epoch, normal_convs, reduce_convs, params_m, valid_acc}, per-size entries as in
    sizes/index.json, whether both were recorded by the search rather than computed here)."""
    recorded = bool(run.metrics) and all(all(k in m for k in PER_EPOCH_KEYS) for m in run.metrics)
    if recorded and run.sizes is not None:
        epochs = [{"epoch": m["epoch"], **{k: m[k] for k in PER_EPOCH_KEYS}, "valid_acc": m.get("valid_acc")}
                  for m in run.metrics]
        return epochs, list(run.sizes), True
    tracker = SizeTracker()
    tracker.replay([m for m in run.metrics if m.get("genotype") and m.get("valid_acc") is not None])
    entries = [{**e, "genotype_file": None} for e in tracker.index()]
    return tracker.history, entries, False


def stop_record(run: Run) -> dict | None:
    """The stop rule that ended the search, if one did (from summary.json, else the last metrics line)."""
    for source in (run.summary or {}, run.last):
        if isinstance(source.get("stop"), dict):
            return source["stop"]
    return None


def sizes_table(entries: list) -> tuple[list, list]:
    """(header, rows) of the per-size table, one row per (normal, reduction) conv count."""
    header = ["size (N,R)", "params (M)", "best valid acc (%)", "epoch", "epochs at size", "genotype file"]
    rows = []
    for e in entries:
        params, acc = e.get("params_m"), e.get("best_valid_acc")
        rows.append([f"{e['normal_convs']},{e['reduce_convs']}", "n/a" if params is None else f"{params:.3f}",
                     "n/a" if acc is None else f"{acc:.2f}", e.get("epoch", "n/a"), e.get("epochs_at_size", "n/a"),
                     e.get("genotype_file") or "-"])
    return header, rows


def format_table(header: list, rows: list) -> str:
    """Plain-text columns for a terminal."""
    widths = [max(len(str(h)), *(len(str(r[k])) for r in rows)) for k, h in enumerate(header)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def sizes_markdown(entries: list) -> str:
    return md_table(*sizes_table(entries))
