"""PNG figures of a run and of several runs, drawn with matplotlib's Agg canvas (no display, no pyplot).

One search: relaxed op weights per edge over epochs (single-level paper Figure 1), training curves, and,
when they were recorded, the gap (MiLeNAS Figure 2a), gradient correlation (single-level paper Figure 2)
and dL/dp (its Figure 3) probes and the NAS-Bench-201 accuracy of the derived cell. Several searches:
validation accuracy, gap, search time and NAS-Bench-201 accuracy overlaid (MiLeNAS Figure 2 a-c), runs that
differ only in seed drawn as their mean with a +-1 std band. Training runs: accuracy, loss and schedules of
one run; test accuracy and loss of several.
"""
from __future__ import annotations

import os
import re
import statistics
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from gradnas.space.ops import PARAMETER_FREE_OPS

DPI = 110


def save(fig: Figure, path: Path) -> Path:
    """Write atomically (a reader never sees half a PNG)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    os.replace(tmp, path)
    return path


def _epoch_axis(ax) -> None:
    """Whole epochs on the x axis (call after plotting); a one-epoch run gets a range around its epoch."""
    lo, hi = ax.get_xlim()
    if hi - lo < 1:  # one epoch: matplotlib would zoom in on a sliver around it
        mid = round((lo + hi) / 2)
        ax.set_xlim(mid - 1, mid + 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _legend_below(fig, handles, labels, n) -> None:
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=min(n, 8), fontsize=8,
               frameon=False)


def _marker(n: int) -> dict:
    # few points: show them, a lone point is otherwise invisible
    return {"marker": "o", "markersize": 3} if n <= 25 else {}


def op_styles(ops) -> dict:
    """op -> line style: one colour per op, dashed for parameter-free ops (the paper's "non-learnable")."""
    colors = ["#7f7f7f", "#1f77b4", "#17becf", "#2ca02c", "#d62728", "#ff7f0e", "#9467bd", "#8c564b",
              "#e377c2", "#bcbd22"]
    return {op: {"color": colors[k % len(colors)], "linestyle": "--" if op in PARAMETER_FREE_OPS else "-"}
            for k, op in enumerate(ops)}


def _edge_grid(names):
    """Edges named 'T<-S' as a grid: one row per target node, one column per source; else one row."""
    parsed = [re.fullmatch(r"(\d+)<-(\d+)", n) for n in names]
    if all(parsed):
        targets = sorted({int(m.group(1)) for m in parsed})
        sources = sorted({int(m.group(2)) for m in parsed})
        return len(targets), len(sources), {n: (targets.index(int(m.group(1))), sources.index(int(m.group(2))))
                                            for n, m in zip(names, parsed)}
    cols = min(5, len(names))
    rows = -(-len(names) // cols)
    return rows, cols, {n: divmod(i, cols) for i, n in enumerate(names)}


def plot_edge_weights(run, out_dir) -> list:
    """edge-weights-<kind>.png per cell kind: p of every op on every edge over epochs (Figure 1 style)."""
    lines = [m for m in run.metrics if isinstance(m.get("edge_weights"), dict)]
    if not lines:
        return []
    relax = run.config.get("relax", "relaxed")
    paths = []
    for kind, edges in lines[-1]["edge_weights"].items():
        names = list(edges)
        ops = list(next(iter(edges.values())))
        styles = op_styles(ops)
        rows, cols, where = _edge_grid(names)
        fig = Figure(figsize=(2.9 * cols + 0.5, 2.1 * rows + 0.9))
        axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
        used = set()
        epochs = [m["epoch"] for m in lines]
        for name in names:
            r, c = where[name]
            used.add((r, c))
            ax = axes[r][c]
            for op in ops:
                ys = [m["edge_weights"][kind].get(name, {}).get(op) for m in lines]
                ax.plot(epochs, ys, label=op, linewidth=1.4, **styles[op], **_marker(len(epochs)))
            ax.set_title(f"edge {name}", fontsize=9)
            _epoch_axis(ax)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=8)
        for r in range(rows):
            for c in range(cols):
                if (r, c) not in used:
                    axes[r][c].set_visible(False)
                elif c == 0 or (r, c - 1) not in used:
                    axes[r][c].set_ylabel(f"{relax}(alpha)", fontsize=8)
        for c in range(cols):
            for r in reversed(range(rows)):
                if (r, c) in used:
                    axes[r][c].set_xlabel("epoch", fontsize=8)
                    axes[r][c].tick_params(labelbottom=True)
                    break
        handles, labels = axes[where[names[0]][0]][where[names[0]][1]].get_legend_handles_labels()
        _legend_below(fig, handles, labels, len(ops))
        where_ = "every cell" if kind == "cell" else f"{kind} cells"  # NAS-Bench-201 has one kind
        fig.suptitle(f"{run.name}: relaxed op weights, {where_} (dashed: parameter-free ops)", fontsize=10)
        paths.append(save(fig, Path(out_dir) / f"edge-weights-{kind}.png"))
    return paths


def _series_panel(ax, run, keys, ylabel: str) -> None:
    """One panel of per-epoch curves: each recorded (metric key, legend name) of ``keys`` against the epoch."""
    for key, name in keys:
        xs, ys = run.series(key)
        if xs:
            ax.plot(xs, ys, label=name, **_marker(len(xs)))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_curves(run, out_dir) -> Path:
    """curves.png: accuracy, loss, learning rate and wall time per epoch."""
    fig = Figure(figsize=(12, 7.5))
    (ax_acc, ax_loss), (ax_lr, ax_time) = fig.subplots(2, 2)
    for ax, metric, label in ((ax_acc, "acc", "accuracy (%)"), (ax_loss, "loss", "cross-entropy loss")):
        _series_panel(ax, run, ((f"train_{metric}", "train (running, weight half)"),
                                (f"arch_batch_{metric}", "architecture batches (running)"),
                                (f"valid_{metric}", "validation (eval mode, architecture half)")), label)
    xs, ys = run.series("lr")
    ax_lr.plot(xs, ys, color="black", **_marker(len(xs)))
    ax_lr.set_xlabel("epoch")
    ax_lr.set_ylabel("weight learning rate")
    ax_lr.grid(alpha=0.3)
    xs, ys = run.series("epoch_time")
    ax_time.bar(xs, ys, color="#1f77b4", label="search")
    pxs, pys = run.series("probe_time")
    if pxs:
        ax_time.bar(pxs, pys, bottom=[ys[xs.index(x)] if x in xs else 0 for x in pxs], color="#ff7f0e",
                    label="probes")
        ax_time.legend(fontsize=8)
    ax_time.set_xlabel("epoch")
    ax_time.set_ylabel("wall time (s)")
    ax_time.grid(alpha=0.3, axis="y")
    for ax in (ax_acc, ax_loss, ax_lr, ax_time):
        _epoch_axis(ax)
    fig.suptitle(f"{run.name}: {run.describe()}", fontsize=11)
    return save(fig, Path(out_dir) / "curves.png")


def plot_gap(run, out_dir) -> Path | None:
    """gap.png from the gap probe: both halves in eval mode, and their difference."""
    lines = [m for m in run.metrics if isinstance(m.get("gap"), dict)]
    if not lines:
        return None
    epochs = [m["epoch"] for m in lines]
    fig = Figure(figsize=(12, 4))
    ax_acc, ax_gap = fig.subplots(1, 2)
    for key, name in (("train_acc", "weight half (train)"), ("valid_acc", "architecture half (validation)")):
        ax_acc.plot(epochs, [m["gap"][key] for m in lines], label=name, **_marker(len(epochs)))
    ax_acc.set_ylabel("accuracy (%), eval mode")
    ax_gap.plot(epochs, [m["gap"]["acc_gap"] for m in lines], color="#d62728", label="accuracy gap (pp)",
                **_marker(len(epochs)))
    ax_gap.axhline(0, color="gray", linewidth=0.8)
    ax_gap.set_ylabel("train - validation accuracy (pp)")
    twin = ax_gap.twinx()
    twin.plot(epochs, [m["gap"]["loss_gap"] for m in lines], color="#9467bd", linestyle="--",
              label="loss gap", **_marker(len(epochs)))
    twin.set_ylabel("validation - train loss")
    for ax in (ax_acc, ax_gap):
        _epoch_axis(ax)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=8)
    h1, l1 = ax_gap.get_legend_handles_labels()
    h2, l2 = twin.get_legend_handles_labels()
    ax_gap.legend(h1 + h2, l1 + l2, fontsize=8)
    fig.suptitle(f"{run.name}: train/validation gap (gap probe)", fontsize=11)
    return save(fig, Path(out_dir) / "gap.png")


def plot_grad_corr(run, out_dir) -> Path | None:
    """grad-corr.png: one panel per probed cell, one line per intermediate node (Figure 2 style)."""
    lines = [m for m in run.metrics if isinstance(m.get("grad_corr"), dict)]
    if not lines:
        return None
    cells = sorted({c for m in lines for c in m["grad_corr"]}, key=int)
    fig = Figure(figsize=(4.2 * len(cells), 3.6))
    axes = fig.subplots(1, len(cells), squeeze=False, sharey=True)[0]
    for ax, cell in zip(axes, cells):
        nodes = sorted({n for m in lines for n in m["grad_corr"].get(cell, {})}, key=int)
        for node in nodes:
            pts = [(m["epoch"], m["grad_corr"][cell].get(node)) for m in lines if cell in m["grad_corr"]]
            pts = [(x, y) for x, y in pts if y is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=f"node {node}", **_marker(len(pts)))
        ax.set_title(f"cell {cell}", fontsize=10)
        _epoch_axis(ax)
        ax.set_xlabel("epoch")
        ax.axhline(0, color="gray", linewidth=0.8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("cos(dL_w/dx, dL_alpha/dx)")
    fig.suptitle(f"{run.name}: gradient correlation per node (single-level paper eq. 13), {run.describe()}",
                 fontsize=10, y=1.03)
    return save(fig, Path(out_dir) / "grad-corr.png")


def plot_dl_dp(run, out_dir) -> Path | None:
    """dl-dp.png: one panel per probed edge, one line per op (Figure 3 style)."""
    lines = [m for m in run.metrics if isinstance(m.get("dl_dp"), dict)]
    if not lines:
        return None
    edges = list(lines[-1]["dl_dp"])
    ops = list(lines[-1]["dl_dp"][edges[0]])
    styles = op_styles(ops)
    cols = min(4, len(edges))
    rows = -(-len(edges) // cols)
    fig = Figure(figsize=(3.6 * cols, 2.8 * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
    for k, edge in enumerate(edges):
        ax = axes[k // cols][k % cols]
        epochs = [m["epoch"] for m in lines if edge in m["dl_dp"]]
        for op in ops:
            ax.plot(epochs, [m["dl_dp"][edge][op] for m in lines if edge in m["dl_dp"]], label=op,
                    **styles.get(op, {}), **_marker(len(epochs)))
        cell, _, name = edge.partition(":")
        which = f"cell {cell}" if cell.isdigit() else "every cell" if cell == "cell" else f"{cell} cells"
        ax.set_title(f"{which}, edge {name}", fontsize=9)
        ax.axhline(0, color="gray", linewidth=0.8)
        _epoch_axis(ax)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        if k % cols == 0:
            ax.set_ylabel("dL/dp", fontsize=9)
        if k // cols == rows - 1 or k + cols >= len(edges):
            ax.set_xlabel("epoch", fontsize=9)
            ax.tick_params(labelbottom=True)
    for k in range(len(edges), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    _legend_below(fig, handles, labels, len(ops))
    fig.suptitle(f"{run.name}: dL/dp per op (single-level paper Fig. 3), {run.describe()}", fontsize=10,
                 y=1.0 + 0.06 / rows)
    return save(fig, Path(out_dir) / "dl-dp.png")


def plot_nb201(run, out_dir) -> Path | None:
    """nb201.png: the NAS-Bench-201 test accuracy (200 epochs, from the benchmark) of every epoch's derived cell,
    one line per dataset, as BenchmarkLookup recorded them."""
    datasets = sorted({k for m in run.metrics if isinstance(m.get("nb201"), dict) for k in m["nb201"]})
    if not datasets:
        return None
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for dataset, color in zip(datasets, _colors(len(datasets))):
        xs, ys = run.nb201_series(dataset)
        ax.plot(xs, ys, color=color, label=dataset, **_marker(len(xs)))
    _epoch_axis(ax)
    ax.set_xlabel("round" if run.has("phase") else "epoch")
    ax.set_ylabel("NAS-Bench-201 test accuracy (%)")
    ax.set_title(f"{run.name}: benchmark accuracy of the derived cell ({run.describe()})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, Path(out_dir) / "nb201.png")


def plot_train_curves(run, out_dir) -> Path:
    """train-curves.png of a training run: accuracy (train, validation split, test top-1 / top-5), loss, the
    learning-rate and drop-path schedules, and wall time per epoch."""
    fig = Figure(figsize=(12, 7.5))
    (ax_acc, ax_loss), (ax_lr, ax_time) = fig.subplots(2, 2)
    _series_panel(ax_acc, run, (("train_acc", "train (running, augmented)"), ("valid_acc", "validation split"),
                                ("test_acc", "test top-1"), ("test_top5", "test top-5")), "accuracy (%)")
    _series_panel(ax_loss, run, (("train_loss", "train (running)"), ("valid_loss", "validation split"),
                                 ("test_loss", "test")), "cross-entropy loss")
    selected = (run.summary or {}).get("selected") or {}
    if selected.get("by") == "valid_acc":
        ax_acc.axvline(selected["epoch"], color="gray", linestyle="--", linewidth=1,
                       label=f"selected epoch {selected['epoch']} (best validation)")
        ax_acc.legend(fontsize=8)
    xs, ys = run.series("lr")
    ax_lr.plot(xs, ys, color="black", label="learning rate", **_marker(len(xs)))
    ax_lr.set_xlabel("epoch")
    ax_lr.set_ylabel("learning rate")
    ax_lr.grid(alpha=0.3)
    dxs, dys = run.series("drop_path")
    if dxs:  # also when it stays 0 (network.drop_path: 0): the schedule is part of the run
        twin = ax_lr.twinx()
        twin.plot(dxs, dys, color="#d62728", linestyle="--", label="drop-path probability", **_marker(len(dxs)))
        twin.set_ylabel("drop-path probability")
        twin.set_ylim(0, max(max(dys), 0.05) * 1.15)
        h1, l1 = ax_lr.get_legend_handles_labels()
        h2, l2 = twin.get_legend_handles_labels()
        ax_lr.legend(h1 + h2, l1 + l2, fontsize=8)
    xs, ys = run.series("epoch_time")
    ax_time.bar(xs, ys, color="#1f77b4")
    ax_time.set_xlabel("epoch")
    ax_time.set_ylabel("wall time (s)")
    ax_time.grid(alpha=0.3, axis="y")
    for ax in (ax_acc, ax_loss, ax_lr, ax_time):
        _epoch_axis(ax)
    fig.subplots_adjust(wspace=0.4)  # room for the drop-path axis between the two lower panels
    fig.suptitle(f"{run.name}: {run.describe()}", fontsize=11)
    return save(fig, Path(out_dir) / "train-curves.png")


# ---- several runs ------------------------------------------------------------------------------

def _band(ax, curves, color, label):
    """Mean and +-1 std of curves [(xs, ys)] over the epochs they share; single curves drawn as they are."""
    if len(curves) == 1:
        xs, ys = curves[0]
        ax.plot(xs, ys, color=color, label=label, linewidth=1.8, **_marker(len(xs)))
        return
    common = sorted(set.intersection(*(set(xs) for xs, _ in curves)))
    for xs, ys in curves:
        ax.plot(xs, ys, color=color, linewidth=0.7, alpha=0.45)
    if not common:
        return
    values = [[dict(zip(xs, ys))[x] for xs, ys in curves] for x in common]
    mean = [statistics.fmean(v) for v in values]
    std = [statistics.stdev(v) for v in values]
    ax.plot(common, mean, color=color, linewidth=2.2, label=f"{label} (mean of {len(curves)})",
            **_marker(len(common)))
    ax.fill_between(common, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], color=color,
                    alpha=0.18, linewidth=0)


def _colors(n):
    base = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
            "#7f7f7f"]
    return [base[k % len(base)] for k in range(n)]


def plot_comparison(groups, out_dir) -> list:
    """compare-*.png for groups [(label, [Run, ...])]: validation accuracy, gap, and accuracy vs search time."""
    out_dir = Path(out_dir)
    colors = _colors(len(groups))
    paths = []

    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for (label, runs), color in zip(groups, colors):
        _band(ax, [r.series("valid_acc") for r in runs], color, label)
    _epoch_axis(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("validation accuracy of the supernet during search")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    paths.append(save(fig, out_dir / "compare-valid-acc.png"))

    all_probe = all(r.has("gap") for _, runs in groups for r in runs)
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for (label, runs), color in zip(groups, colors):
        # one definition for every curve: the probe's only when every run recorded it
        _band(ax, [r.gap_series(probe=all_probe)[:2] for r in runs], color, label)
    ax.axhline(0, color="gray", linewidth=0.8)
    _epoch_axis(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("train - validation accuracy (pp)")
    ax.set_title("generalization gap" + (" (gap probe, both in eval mode)" if all_probe else
                                         " (running train accuracy - validation accuracy)"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    paths.append(save(fig, out_dir / "compare-gap.png"))

    fig = Figure(figsize=(13, 5))
    ax, ax_bar = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    means, stds = [], []
    for (label, runs), color in zip(groups, colors):
        for k, r in enumerate(runs):
            xs, acc = r.series("valid_acc")
            times = dict(zip(*r.series("epoch_time")))
            elapsed, t = [], 0.0
            for x in xs:
                t += times.get(x, 0.0)
                elapsed.append(t / 60)
            ax.plot(elapsed, acc, color=color, label=label if k == 0 else None, **_marker(len(xs)))
        per_epoch = [r.seconds_per_epoch for r in runs if r.seconds_per_epoch is not None]
        means.append(statistics.fmean(per_epoch) if per_epoch else 0.0)
        stds.append(statistics.stdev(per_epoch) if len(per_epoch) > 1 else 0.0)
    ax.set_xlabel("search wall time (min)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("validation accuracy against search time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax_bar.barh(range(len(groups)), means, xerr=stds, color=colors)
    ax_bar.set_yticks(range(len(groups)), [label for label, _ in groups], fontsize=8)
    ax_bar.invert_yaxis()
    ax_bar.set_xlabel("search time per epoch (s)")
    ax_bar.grid(alpha=0.3, axis="x")
    paths.append(save(fig, out_dir / "compare-search-time.png"))

    datasets = sorted({k for _, runs in groups for r in runs for m in r.metrics if isinstance(m.get("nb201"), dict)
                       for k in m["nb201"]})
    if datasets:  # NAS-Bench-201 searches: the benchmark accuracy of the derived cell per epoch, mean +- std
        fig = Figure(figsize=(5 * len(datasets), 4.5))
        axes = fig.subplots(1, len(datasets), squeeze=False)[0]
        for ax, dataset in zip(axes, datasets):
            for (label, runs), color in zip(groups, colors):
                curves = [c for c in (r.nb201_series(dataset) for r in runs) if c[0]]
                if curves:
                    _band(ax, curves, color, label)
            _epoch_axis(ax)
            ax.set_xlabel("epoch (round for pvll)")
            ax.set_ylabel(f"NAS-Bench-201 test accuracy on {dataset} (%)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle("benchmark accuracy of the derived cell during search", fontsize=11)
        paths.append(save(fig, out_dir / "compare-nb201.png"))
    return paths


def plot_train_comparison(groups, out_dir) -> list:
    """compare-test-acc.png and compare-loss.png for groups [(label, [training Run, ...])]: test top-1 accuracy and
    training / test loss per epoch overlaid, runs that differ only in seed as mean +- std."""
    out_dir = Path(out_dir)
    colors = _colors(len(groups))
    paths = []
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for (label, runs), color in zip(groups, colors):
        _band(ax, [r.series("test_acc") for r in runs], color, label)
        valid = [r.series("valid_acc") for r in runs if r.has("valid_acc")]
        if valid:
            _band(ax, valid, color, f"{label}, validation split")
            ax.lines[-1].set_linestyle("--")
    _epoch_axis(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("test top-1 accuracy (dashed: validation split)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    paths.append(save(fig, out_dir / "compare-test-acc.png"))
    fig = Figure(figsize=(12, 4.5))
    ax_train, ax_test = fig.subplots(1, 2, sharey=True)
    for (label, runs), color in zip(groups, colors):
        _band(ax_train, [r.series("train_loss") for r in runs], color, label)
        _band(ax_test, [r.series("test_loss") for r in runs], color, label)
    for ax, title in ((ax_train, "training loss (running)"), (ax_test, "test loss")):
        _epoch_axis(ax)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_train.set_ylabel("cross-entropy loss")
    paths.append(save(fig, out_dir / "compare-loss.png"))
    return paths


def plot_sizes(run, out_dir, *, epochs: list, entries: list, stop: dict | None = None) -> list:
    """MiLeNAS Figure 3b/3c for one search: sizes-per-epoch.png (conv ops in the normal and the reduction
    cell and evaluation-network parameters of each epoch's genotype) and sizes-accuracy.png (the best
    validation accuracy reached at each model size, against its parameters). ``epochs`` and ``entries``
    come from :func:`gradnas.report.sizes.size_records`; ``stop`` marks the epoch a stop rule ended it."""
    out_dir = Path(out_dir)
    paths = []
    if epochs:
        xs = [e["epoch"] for e in epochs]
        fig = Figure(figsize=(9, 6.5))
        ax_convs, ax_params = fig.subplots(2, 1, sharex=True)
        for key, label, color in (("normal_convs", "normal cell", "#1f77b4"),
                                  ("reduce_convs", "reduction cell", "#d62728")):
            ax_convs.step(xs, [e[key] for e in epochs], where="mid", color=color, label=label)
            ax_convs.plot(xs, [e[key] for e in epochs], linestyle="none", color=color, **_marker(len(xs)))
        ax_convs.set_ylabel("conv ops in the cell")
        ax_convs.set_ylim(-0.3, max(max(e["normal_convs"], e["reduce_convs"]) for e in epochs) + 0.5)
        ax_convs.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax_convs.legend(fontsize=8)
        ax_params.plot(xs, [e["params_m"] for e in epochs], color="black", **_marker(len(xs)))
        ax_params.set_ylabel("params of the evaluation network (M)")
        ax_params.set_xlabel("epoch")
        for ax in (ax_convs, ax_params):
            ax.grid(alpha=0.3)
            if stop:
                ax.axvline(stop["epoch"], color="gray", linestyle="--", linewidth=1)
        _epoch_axis(ax_params)
        title = f"{run.name}: model size per epoch ({run.describe()})"
        if stop:
            title += f"\nstopped after epoch {stop['epoch']} (stop.{stop['rule']} {stop['value']})"
        fig.suptitle(title, fontsize=10)
        paths.append(save(fig, out_dir / "sizes-per-epoch.png"))
    points = [e for e in entries if e.get("params_m") is not None and e.get("best_valid_acc") is not None]
    if points:
        points.sort(key=lambda e: e["params_m"])
        fig = Figure(figsize=(8, 5))
        ax = fig.subplots()
        px, py = [e["params_m"] for e in points], [e["best_valid_acc"] for e in points]
        ax.plot(px, py, color="#1f77b4", marker="o")
        for e, x, y in zip(points, px, py):
            ax.annotate(f"{e['normal_convs']},{e['reduce_convs']} (ep. {e['epoch']})", (x, y),
                        textcoords="offset points", xytext=(4, 6), fontsize=8)
        if len(set(px)) == 1:  # one size: a range around it, not a sliver
            ax.set_xlim(px[0] - 0.5, px[0] + 0.5)
        ax.set_xlabel("params of the evaluation network (M)")
        ax.set_ylabel("best validation accuracy (%)")
        ax.set_title(f"{run.name}: best validation accuracy per model size (N,R conv ops)", fontsize=10)
        ax.grid(alpha=0.3)
        paths.append(save(fig, out_dir / "sizes-accuracy.png"))
    return paths


def plot_edge_heatmap(edge_weights: dict, out_dir, *, title: str = "") -> list:
    """edge-heatmap-<kind>.png per cell kind: the relaxed op weights of every edge (rows) and op (columns) as a
    heat map, e.g. of a search's last epoch (``edge_weights`` as the metrics record holds them)."""
    paths = []
    for kind, edges in edge_weights.items():
        names = list(edges)
        ops = list(next(iter(edges.values()), {}))
        if not names or not ops:
            continue
        values = [[edges[n].get(op, float("nan")) for op in ops] for n in names]
        fig = Figure(figsize=(0.7 * len(ops) + 2.2, 0.32 * len(names) + 1.6))
        ax = fig.subplots()
        image = ax.imshow(values, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(ops)), ops, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), [f"edge {n}" for n in names], fontsize=8)
        fig.colorbar(image, ax=ax, fraction=0.05)
        ax.set_title(f"{title}: op weights, {kind} cells" if title else f"op weights, {kind} cells", fontsize=9)
        paths.append(save(fig, Path(out_dir) / f"edge-heatmap-{kind}.png"))
    return paths
