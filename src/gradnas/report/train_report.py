"""The report of a training run (`gradnas report|plot TRAIN_RUN`): test top-1 / top-5, parameters and multiply-adds,
which epoch the run reports and why, the accuracy and loss curves and the lr / drop-path schedule (PNG), the cells,
a per-epoch table and the setting. Reads what `gradnas train` writes (gradnas.train.loop)."""
from __future__ import annotations

import statistics

import yaml

from gradnas.errors import GradnasError
from gradnas.report import plots
from gradnas.report.cells import draw_genotype, read_genotype
from gradnas.report.run import Run, md_table
from gradnas.run import write_text

PLOTS_DIR, REPORT_FILE = "plots", "report.md"


def plot_training(run: Run, out_dir) -> tuple[list, list, list]:
    """train-curves.png and the cell diagrams; returns (paths, [], warnings) like plot_run."""
    paths, warnings = [plots.plot_train_curves(run, out_dir)], []
    if run.genotype_string:
        try:
            paths += draw_genotype(read_genotype(run.genotype_string), out_dir)
        except GradnasError as exc:
            warnings.append(f"cell diagrams skipped: {exc}")
    return paths, [], warnings


def _fmt(v, digits=2, unit="") -> str:
    return "n/a" if v is None else f"{v:.{digits}f}{unit}" if isinstance(v, float) else f"{v}{unit}"


def size_figures(run: Run) -> tuple:
    """(params M, multiply-adds M) from summary.json, else network.json."""
    for source in (run.summary or {}, run.network or {}):
        if source.get("params_m") is not None:
            return source.get("params_m"), source.get("macs_m")
    return None, None


def selected_text(run: Run) -> str:
    sel = (run.summary or {}).get("selected")
    if not isinstance(sel, dict):
        return "n/a (unfinished)" if not run.finished else "n/a (a run from before gradnas recorded it)"
    if sel.get("by") == "valid_acc":
        return (f"epoch {sel['epoch']}, best validation accuracy {sel['valid_acc']:.2f} % (weights in "
                f"{sel.get('weights', 'best.pt')}); test accuracy there {_fmt(sel.get('test_acc'), unit=' %')}")
    return f"epoch {sel['epoch']}: {sel.get('by')}"


def write_train_report(run: Run):
    """Draw the figures and write RUN_DIR/report.md of a training run. Returns (path, [], warnings)."""
    out_plots = run.path / PLOTS_DIR
    paths, _, warnings = plot_training(run, out_plots)
    cfg = run.config
    total = cfg.get("epochs")
    last = run.last
    summary = run.summary or {}
    status = "finished" if run.finished else f"unfinished: {run.epochs_done} of {total} epochs done"
    params, macs = size_figures(run)
    md = [f"# Training report: {run.name}\n",
          f"{run.describe()}, seed {cfg.get('seed')}, {total} epochs, batch {cfg.get('batch_size')}; {status}. "
          f"Run folder `{run.path}`.\n",
          "## Result\n",
          f"Genotype:\n\n    {run.genotype_string}\n" if run.genotype_string else "Genotype: n/a\n"]
    rows = [("test top-1 accuracy, last epoch", _fmt(summary.get("test_acc", last.get("test_acc")), unit=" %"))]
    top5 = summary.get("test_top5", last.get("test_top5"))
    rows.append(("test top-5 accuracy, last epoch", _fmt(top5, unit=" %") if top5 is not None else
                 "n/a (reported with more than 10 classes)"))
    rows += [("reported epoch", selected_text(run)),
             ("parameters (M, auxiliary head excluded)", _fmt(params, 3)),
             ("multiply-adds (M, one image)", _fmt(macs, 1))]
    if run.has("valid_acc"):
        rows.append(("best validation accuracy", _fmt(max(run.series("valid_acc")[1]), unit=" %")))
    md.append(md_table(("figure", "value"), rows))
    md.append("The highest test accuracy over the epochs is not reported as a result: choosing an epoch on the test "
              "set overstates it. With `data.valid_fraction` > 0 the epoch is chosen on a held-out validation "
              "split of the training images.\n")
    md.append("\n## Curves and schedules\n")
    md.append("Accuracy and loss per epoch (train: running, augmented; test: the whole test set), the learning rate "
              "and the drop-path probability (ramped linearly to `network.drop_path`), wall time per epoch.\n\n")
    md.append(f"![training curves]({PLOTS_DIR}/train-curves.png)\n")
    cells = [p for p in paths if p.name.startswith("cell-")]
    md.append("\n## Cells\n")
    md += [f"![{p.stem.replace('cell-', '')} cell]({PLOTS_DIR}/{p.name})\n" for p in cells] or [
        "No cell diagrams: " + ("; ".join(warnings) or "no genotype recorded") + "\n"]
    md.append("\n## Per epoch\n")
    keys = [k for k in ("lr", "drop_path", "train_loss", "train_acc", "valid_loss", "valid_acc", "test_loss",
                        "test_acc", "test_top5", "epoch_time") if run.has(k)]
    digits = {"lr": 5, "drop_path": 3, "train_loss": 4, "valid_loss": 4, "test_loss": 4, "epoch_time": 1}
    rows = [[m["epoch"]] + [_fmt(m.get(k), digits.get(k, 2)) for k in keys] for m in run.metrics]
    md.append(md_table(["epoch"] + [k.replace("_", " ") for k in keys], rows))
    times = run.epoch_times
    if times:
        md.append(f"\nWall time per epoch: mean {statistics.fmean(times):.1f} s; training total "
                  f"{sum(times) / 60:.1f} min.\n")
    md.append("\n## Setting\n\n```yaml\n" + yaml.safe_dump(cfg, sort_keys=False) + "```\n")
    text = "\n\n".join(part.strip("\n") for part in md if part) + "\n"
    path = write_text(run.path / REPORT_FILE, text)
    return path, [], warnings
