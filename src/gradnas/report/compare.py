"""`gradnas compare RUN_DIR...`: one Markdown table and overlaid plots for several runs, all searches or all
training runs (a training run's experiment includes its genotype).

Runs whose configs differ only in the seed (and in where they ran: device, threads, or in probes, which
do not change a search) form a group; each group gets mean and sample standard deviation of its numbers.
Groups are labelled by the settings that tell them apart (method, lambda, relaxation, ...).
"""
from __future__ import annotations

import statistics
from pathlib import Path

from gradnas.errors import GradnasError
from gradnas.report import plots
from gradnas.report.params import LABEL as PARAMS_LABEL
from gradnas.report.params import NOTE as PARAMS_NOTE
from gradnas.report.params import run_params
from gradnas.report.run import KIND_WORDS, TRAINING, Run, load_run, md_table
from gradnas.run import write_text

COMPARE_FILE = "compare.md"
# Settings that do not make two searches different experiments.
_NOT_THE_EXPERIMENT = ("seed", "device", "threads", "probes")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
    return out


def _experiment_key(run: Run) -> tuple:
    flat = _flatten(run.config)
    if run.kind == TRAINING:  # the genotype is in genotype.json, not the setting
        flat["genotype"] = run.genotype_string
    return tuple(sorted((k, repr(v)) for k, v in flat.items() if k.split(".")[0] not in _NOT_THE_EXPERIMENT))


def group_runs(runs: list) -> list:
    """[(label, [runs])] in first-seen order; a group holds runs that differ only in seed."""
    groups: dict = {}
    for run in runs:
        groups.setdefault(_experiment_key(run), []).append(run)
    # Label each group by what sets it apart: the method words, then any other differing setting.
    keys = [dict(k) for k in groups]
    varying = sorted({k for d in keys for k in d if len({d2.get(k) for d2 in keys}) > 1}
                     - {"method", "lambda", "order", "relax", "genotype"})
    genotypes = list(dict.fromkeys(r.genotype_string for r in runs if r.kind == TRAINING))
    out = []
    for key, members in groups.items():
        d = dict(key)
        words = [members[0].describe()] + [f"{k}={_plain(d.get(k))}" for k in varying]
        if members[0].kind == TRAINING and len(genotypes) > 1:
            words.append(f"genotype {_letter(genotypes.index(members[0].genotype_string))}")
        out.append((" ".join(words), members))
    return out


def _letter(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else f"#{i + 1}"


def _plain(v):
    return "n/a" if v is None else str(v).strip("'")


def _fmt(v, digits=2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _mean_std(values, digits=2) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def run_figures(run: Run, params: dict) -> dict:
    """The numbers a comparison row shows for one run."""
    gap, source = run.gap()
    p = params.get(run.path)
    return {"final": run.final_valid_acc, "best": run.best_valid_acc, "gap": gap, "gap_source": source,
            "s_per_epoch": run.seconds_per_epoch, "params_m": p / 1e6 if p is not None else None,
            "nb201": run.nb201 or {}}


def compare(run_dirs, out_dir) -> tuple[Path, list]:
    """Write OUT/compare.md and OUT/compare-*.png for the runs. Returns (markdown path, image paths)."""
    if not run_dirs:
        raise GradnasError("compare needs at least one run folder")
    runs = [load_run(d) for d in run_dirs]
    kinds = {r.kind for r in runs}
    if len(kinds) > 1:
        a = next(r for r in runs if r.kind == runs[0].kind)
        b = next(r for r in runs if r.kind != runs[0].kind)
        raise GradnasError(f"compare mixes kinds of run: {a.path} is {KIND_WORDS[a.kind]}, {b.path} "
                           f"{KIND_WORDS[b.kind]}; compare searches with searches and training runs with training runs")
    if kinds == {TRAINING}:
        return compare_training(runs, Path(out_dir))
    names = [r.name for r in runs]
    unique = len(set(names)) == len(names)  # else two runs called "run" in different folders: use the paths
    display = {r.path: r.name if unique else str(r.path) for r in runs}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs)
    params = {r.path: run_params(r) for r in runs}
    figures = {r.path: run_figures(r, params) for r in runs}
    nb201_sets = sorted({k for f in figures.values() for k in f["nb201"]})
    any_running_gap = any(f["gap_source"] == "running" for f in figures.values())

    md = ["# Comparison of search runs\n",
          f"{len(runs)} runs in {len(groups)} setting(s). Accuracies in %, gap in percentage points (train - "
          "validation accuracy at the last epoch), time in seconds of search per epoch (probes excluded).\n"]

    header = ["run", "setting", "seed", "epochs", "final valid acc", "best valid acc", "gap", "s / epoch",
              PARAMS_LABEL] + [f"NB201 {k}" for k in nb201_sets] + ["genotype"]
    rows = []
    for label, members in groups:
        for r in members:
            f = figures[r.path]
            epochs = f"{r.epochs_done}" + ("" if r.finished else f"/{r.config.get('epochs')} (unfinished)")
            if r.finished and isinstance((r.summary or {}).get("stop"), dict):
                epochs = f"{r.epochs_done}/{r.config.get('epochs')} (stopped: {r.summary['stop']['rule']})"
            gap = _fmt(f["gap"]) + ("†" if f["gap_source"] == "running" else "")
            rows.append([display[r.path], label, r.config.get("seed"), epochs, _fmt(f["final"]),
                         _fmt(f["best"]), gap, _fmt(f["s_per_epoch"], 1), _fmt(f["params_m"], 3)]
                        + [_fmt(f["nb201"].get(k)) for k in nb201_sets]
                        + [f"`{_cell(r.genotype_string or 'n/a')}`"])
    md.append("## Runs\n\n" + md_table(header, rows))
    if any_running_gap:
        md.append("† no gap probe recorded: running training accuracy of the last epoch (train mode, weights "
                  "moving) - validation accuracy, as DARTS/MiLeNAS logs report it. With `--probe-gap` both are "
                  "measured in eval mode on equal-sized samples.\n")

    header = ["setting", "runs (seeds)", "final valid acc", "best valid acc", "gap", "s / epoch",
              PARAMS_LABEL] + [f"NB201 {k}" for k in nb201_sets]
    rows = []
    for label, members in groups:
        fs = [figures[r.path] for r in members]
        seeds = ", ".join(str(r.config.get("seed")) for r in members)
        rows.append([label, f"{len(members)} ({seeds})", _mean_std([f["final"] for f in fs]),
                     _mean_std([f["best"] for f in fs]), _mean_std([f["gap"] for f in fs]),
                     _mean_std([f["s_per_epoch"] for f in fs], 1), _mean_std([f["params_m"] for f in fs], 3)]
                    + [_mean_std([f["nb201"].get(k) for f in fs]) for k in nb201_sets])
    md.append("## Mean ± standard deviation over seeds\n\nRuns that differ only in the seed; sample standard "
              "deviation (n - 1); a single run shows its value.\n\n" + md_table(header, rows))

    images = plots.plot_comparison([(label, members) for label, members in groups], out_dir)
    md.append("## Plots\n\n" + "\n\n".join(f"![{p.stem}]({p.name})" for p in images) + "\n")
    spaces = sorted({r.config.get("space", "darts") for r in runs})
    md.append(f"*{PARAMS_LABEL}*: " + "; ".join(f"{space}: {PARAMS_NOTE.get(space, 'no counter for this space')}"
                                                  for space in spaces) + ".\n")
    path = write_text(out_dir / COMPARE_FILE, "\n".join(part.strip("\n") + "\n" for part in md))
    return path, images



def _display(runs) -> dict:
    names = [r.name for r in runs]
    unique = len(set(names)) == len(names)
    return {r.path: r.name if unique else str(r.path) for r in runs}


def compare_training(runs: list, out_dir: Path) -> tuple[Path, list]:
    """compare.md and compare-*.png for training runs: test top-1 / top-5 of the last epoch, the reported epoch,
    parameters and multiply-adds per run, mean ± std over seeds, overlaid test accuracy and loss curves."""
    from gradnas.report.train_report import size_figures
    out_dir.mkdir(parents=True, exist_ok=True)
    display = _display(runs)
    groups = group_runs(runs)
    genotypes = list(dict.fromkeys(r.genotype_string for r in runs))

    def figures(r):
        s = r.summary or {}
        params, macs = size_figures(r)
        sel = s.get("selected") if isinstance(s.get("selected"), dict) else {}
        return {"test": s.get("test_acc", r.last.get("test_acc")), "top5": s.get("test_top5", r.last.get("test_top5")),
                "selected_test": sel.get("test_acc") if sel.get("by") == "valid_acc" else None,
                "selected": (f"{sel['epoch']} (valid acc {sel['valid_acc']:.2f})" if sel.get("by") == "valid_acc"
                             else f"{sel['epoch']} (last)" if sel else "n/a"),
                "params": params, "macs": macs, "s_per_epoch": r.seconds_per_epoch}

    fig = {r.path: figures(r) for r in runs}
    md = ["# Comparison of training runs\n",
          f"{len(runs)} runs in {len(groups)} setting(s). Test accuracy in % at the last epoch; with a validation "
          "split also at the epoch chosen on it. Parameters (M, auxiliary head excluded) and multiply-adds (M, one "
          "image) of the evaluation network.\n"]
    header = ["run", "setting", "seed", "epochs", "test top-1", "test top-5", "reported epoch",
              "test top-1 there", "params (M)", "mult-adds (M)", "s / epoch"]
    rows = []
    for label, members in groups:
        for r in members:
            f = fig[r.path]
            epochs = f"{r.epochs_done}" + ("" if r.finished else f"/{r.config.get('epochs')} (unfinished)")
            rows.append([display[r.path], label, r.config.get("seed"), epochs, _fmt(f["test"]), _fmt(f["top5"]),
                         f["selected"], _fmt(f["selected_test"]), _fmt(f["params"], 3), _fmt(f["macs"], 1),
                         _fmt(f["s_per_epoch"], 1)])
    md.append("## Runs\n\n" + md_table(header, rows))
    header = ["setting", "runs (seeds)", "test top-1", "test top-5", "params (M)", "mult-adds (M)"]
    rows = []
    for label, members in groups:
        fs = [fig[r.path] for r in members]
        rows.append([label, f"{len(members)} ({', '.join(str(r.config.get('seed')) for r in members)})",
                     _mean_std([f["test"] for f in fs]), _mean_std([f["top5"] for f in fs]),
                     _mean_std([f["params"] for f in fs], 3), _mean_std([f["macs"] for f in fs], 1)])
    md.append("## Mean ± standard deviation over seeds\n\nRuns that differ only in the seed; sample standard "
              "deviation (n - 1); a single run shows its value.\n\n" + md_table(header, rows))
    if len(genotypes) > 1:
        md.append("## Genotypes\n\n" + md_table(["", "genotype"], [[_letter(i), f"`{_cell(g or 'n/a')}`"]
                                                                     for i, g in enumerate(genotypes)]))
    else:
        md.append(f"Genotype of every run: `{_cell(genotypes[0] or 'n/a')}`\n")
    images = plots.plot_train_comparison(groups, out_dir)
    md.append("## Plots\n\n" + "\n\n".join(f"![{p.stem}]({p.name})" for p in images) + "\n")
    path = write_text(out_dir / COMPARE_FILE, "\n".join(part.strip("\n") + "\n" for part in md))
    return path, images
