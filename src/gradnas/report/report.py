"""`gradnas plot` and `gradnas report`: the figures of one run (a search or a training run), and report.md beside it.

report.md links its figures relatively (plots/*.png), so the run folder can be moved or zipped whole.
"""
from __future__ import annotations

import statistics
from pathlib import Path

import yaml

from gradnas.errors import GradnasError
from gradnas.report import plots
from gradnas.report.cells import draw_genotype, read_genotype
from gradnas.report.params import LABEL as PARAMS_LABEL
from gradnas.report.params import NOTE as PARAMS_NOTE
from gradnas.report.params import run_params
from gradnas.report.run import TRAINING, Run, load_run, md_table
from gradnas.report.sizes import size_records, sizes_markdown, stop_record
from gradnas.run import write_text

PLOTS_DIR = "plots"
REPORT_FILE = "report.md"


def plot_run(run: Run, out_dir=None) -> tuple[list, list, list]:
    """Draw every figure the run's records allow.

    Returns (paths written, probes not recorded in the run, warnings about figures that could not be drawn)."""
    out_dir = Path(out_dir) if out_dir is not None else run.path / PLOTS_DIR
    paths, missing, warnings = [], [], []
    if run.kind == TRAINING:
        from gradnas.report.train_report import plot_training
        return plot_training(run, out_dir)
    paths += plots.plot_edge_weights(run, out_dir)
    paths.append(plots.plot_curves(run, out_dir))
    for name, fn in (("gap", plots.plot_gap), ("grad_corr", plots.plot_grad_corr), ("dl_dp", plots.plot_dl_dp)):
        path = fn(run, out_dir)
        if path is None:
            missing.append(name)
        else:
            paths.append(path)
    nb201 = plots.plot_nb201(run, out_dir)
    if nb201 is not None:
        paths.append(nb201)
    if run.has("normal_convs"):  # the model sizes the search recorded (MiLeNAS Figure 3b/3c)
        epochs, entries, _ = size_records(run)
        paths += plots.plot_sizes(run, out_dir, epochs=epochs, entries=entries, stop=stop_record(run))
    if run.genotype_string:
        try:
            paths += draw_genotype(read_genotype(run.genotype_string), out_dir)
        except GradnasError as exc:
            warnings.append(f"cell diagrams skipped: {exc}")
    return paths, missing, warnings


def _fmt(v, digits=2, unit="") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}{unit}"
    return f"{v}{unit}"


def write_report(run_dir) -> tuple[Path, list, list]:
    """Draw the run's figures and write RUN_DIR/report.md. Returns (report path, probes not recorded,
    warnings)."""
    run = load_run(run_dir)
    if run.kind == TRAINING:
        from gradnas.report.train_report import write_train_report
        return write_train_report(run)
    out_plots = run.path / PLOTS_DIR
    paths, missing, warnings = plot_run(run, out_plots)
    names = {p.name for p in paths}

    def image(name, alt):
        return f"![{alt}]({PLOTS_DIR}/{name})\n" if name in names else None

    cfg = run.config
    total = cfg.get("epochs")
    status = "finished" if run.finished else f"unfinished: {run.epochs_done} of {total} epochs done"
    stop = stop_record(run)
    if stop and run.finished:
        status = f"stopped after epoch {stop['epoch']} of {total} ({stop['reason']})"
    md = [f"# Search report: {run.name}\n",
          f"{run.describe()} on {cfg.get('data', {}).get('dataset', '?')}, seed {cfg.get('seed')}; {status}. "
          f"Run folder `{run.path}`.\n"]

    gap, gap_source = run.gap()
    gap_note = {"probe": "gap probe: both halves in eval mode", "running": "running train accuracy of the last "
                "epoch - validation accuracy", "n/a": ""}[gap_source]
    params = run_params(run)
    md.append("## Result\n")
    md.append(f"Genotype:\n\n    {run.genotype_string}\n" if run.genotype_string else "Genotype: n/a\n")
    rows = [("final validation accuracy", _fmt(run.final_valid_acc, unit=" %")),
            ("best validation accuracy", _fmt(run.best_valid_acc, unit=" %")),
            ("train - validation gap", f"{_fmt(gap)} pp ({gap_note})" if gap is not None else "n/a"),
            (PARAMS_LABEL, _fmt(params / 1e6, 3) if params is not None else
             "n/a (no checkpoint, or a space without a counter)")]
    collapse = (run.summary or {}).get("collapse")
    if isinstance(collapse, dict) and isinstance(collapse.get("share"), (int, float)):
        from gradnas.search.callbacks import describe_collapse
        rows.append(("parameter-free share", describe_collapse(collapse)))
    nb201 = run.nb201
    if nb201 is not None:
        rows += [(f"NAS-Bench-201 test accuracy, {k}", _fmt(v, unit=" %")) for k, v in nb201.items()]
    md.append(md_table(("figure", "value"), rows))
    if isinstance(collapse, dict) and collapse.get("collapsed"):
        md.append(f"**Warning:** {describe_collapse(collapse)}.\n")
    md.append(f"*{PARAMS_LABEL}*: {PARAMS_NOTE.get(cfg.get('space'), 'no counter for this space')}.\n")

    md.append("\n## Cells\n")
    cell_images = [image(p.name, p.stem.replace("cell-", "") + " cell") for p in paths if p.name.startswith("cell-")]
    if cell_images:
        md += cell_images
    else:
        md.append("No cell diagrams: " + ("; ".join(warnings) or "no genotype recorded") + "\n")

    md.append("\n## Training curves\n")
    md.append(image("curves.png", "training curves"))
    if image("gap.png", "gap"):
        md.append("\nGap probe (both halves evaluated in eval mode on the same number of batches):\n\n")
        md.append(image("gap.png", "train/validation gap"))

    md.append("\n## Relaxed op weights per edge\n")
    md += [image(p.name, "op weights, " + p.stem.replace("edge-weights-", "") + " cells") for p in paths
           if p.name.startswith("edge-weights-")]
    if image("grad-corr.png", "") or image("dl-dp.png", ""):
        md.append("\n## Gradient probes\n")
        if image("grad-corr.png", ""):
            forms = {m.get("grad_corr_form") for m in run.metrics if "grad_corr" in m}
            if forms <= {"proxy", None}:
                md.append("Cosine between the batch-summed loss gradients with respect to each node's output on the "
                          "batch that updates w and on the batch that updates alpha (the cheap proxy of the "
                          "single-level paper's eq. 13, probes.grad_corr_form: proxy; see `gradnas.search.probes`)."
                          "\n\n")
            else:
                md.append("The single-level paper's eq. 13 per node: per-sample gradients of the w and alpha "
                          "updates' losses at the node, times the inputs of its edges, as a cosine "
                          "(probes.grad_corr_form: exact; see `gradnas.search.probes`).\n\n")
            md.append(image("grad-corr.png", "gradient correlation"))
        if image("dl-dp.png", ""):
            md.append("\nGradient of the loss alpha descends with respect to each op's relaxed weight p "
                      "(single-level paper eq. 8, Fig. 3).\n\n")
            md.append(image("dl-dp.png", "dL/dp"))

    if image("nb201.png", ""):
        md.append("\n## NAS-Bench-201 accuracy of the derived cell\n")
        md.append("The benchmark's 200-epoch test accuracy of each epoch's derived cell (looked up, not trained).\n\n")
        md.append(image("nb201.png", "NAS-Bench-201 accuracy per epoch"))

    if run.sizes:
        md.append("\n## Model sizes\n")
        md.append("Best validation accuracy per model size (N,R = conv ops in the normal, reduction cell; params of "
                  "the evaluation network in the CIFAR setting; MiLeNAS section 5.1).\n\n")
        md.append(sizes_markdown(run.sizes))
        md += [image(name, alt) for name, alt in (("sizes-per-epoch.png", "model size per epoch"),
                                                  ("sizes-accuracy.png", "best validation accuracy per size"))
               if image(name, alt)]

    md.append("\n## Per epoch\n")
    has_probe = run.has("probe_time")
    header = ["epoch", "lr", "train loss", "train acc", "valid loss", "valid acc", "gap (pp)", "time (s)"]
    if has_probe:
        header.append("probe time (s)")
    nb201_sets = sorted({k for m in run.metrics if isinstance(m.get("nb201"), dict) for k in m["nb201"]})
    header += [f"NB201 {k}" for k in nb201_sets]
    rows = []
    for m in run.metrics:
        g = m["gap"]["acc_gap"] if isinstance(m.get("gap"), dict) else (
            m["train_acc"] - m["valid_acc"] if m.get("train_acc") is not None and m.get("valid_acc") is not None
            else None)
        row = [m["epoch"], _fmt(m.get("lr"), 5), _fmt(m.get("train_loss"), 4), _fmt(m.get("train_acc")),
               _fmt(m.get("valid_loss"), 4), _fmt(m.get("valid_acc")), _fmt(g), _fmt(m.get("epoch_time"), 1)]
        if has_probe:
            row.append(_fmt(m.get("probe_time"), 1))
        row += [_fmt((m.get("nb201") or {}).get(k)) for k in nb201_sets]
        rows.append(row)
    md.append(md_table(header, rows))
    times = run.epoch_times
    if times:
        md.append(f"\nWall time per epoch: mean {statistics.fmean(times):.1f} s, min {min(times):.1f} s, max "
                  f"{max(times):.1f} s; search total {sum(times) / 60:.1f} min"
                  + (f" (+ {sum(run.series('probe_time')[1]) / 60:.1f} min of probes, not in the epoch times)"
                     if has_probe else "") + ".\n")

    md.append("\n## Configuration\n\n```yaml\n" + yaml.safe_dump(cfg, sort_keys=False) + "```\n")
    text = "\n\n".join(part.strip("\n") for part in md if part) + "\n"
    path = write_text(run.path / REPORT_FILE, text)
    return path, missing, warnings
