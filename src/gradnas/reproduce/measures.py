"""The numbers a reproduce report tabulates: one named measure per column, read from a finished search run
(``gradnas.report.run.Run``) and, for the training measures, from the summary of the run that trained its
cell from scratch. A measure that a run does not have (a probe that was off, a PVLL-only key) is None and
shows as "n/a"."""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Measure:
    label: str
    read: Callable            # (search Run, training summary dict or None) -> float | None
    digits: int = 2
    training: bool = False    # read from the training run


def _numbers(value) -> list:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    return []


def _last(run, key):
    for record in reversed(run.metrics):
        if isinstance(record.get(key), (int, float)) and not isinstance(record.get(key), bool):
            return float(record[key])
    return None


def _nb201(dataset: str):
    def read(run, _):
        return (run.nb201 or {}).get(dataset)
    return read


def _search_hours(run, _):
    seconds = [m.get("epoch_time", m.get("round_time")) for m in run.metrics]
    seconds = [s for s in seconds if isinstance(s, (int, float))]
    return sum(seconds) / 3600 if seconds else None


def _gap_mean(run, _):
    values = run.gap_series()[1]
    return statistics.fmean(values) if values else None


def _grad_corr_mean(run, _):
    values = [x for m in run.metrics for x in _numbers(m.get("grad_corr"))]
    return statistics.fmean(values) if values else None


def _best_valid(run, _):
    best = run.best_valid_acc
    return best if best is not None else (run.summary or {}).get("valid_acc")  # pvll: the derived cell's


def _sizes_seen(run, _):
    sizes = {(m.get("normal_convs"), m.get("reduce_convs")) for m in run.metrics if "normal_convs" in m}
    return float(len(sizes)) if sizes else None


def _test_error(_, summary):
    acc = (summary or {}).get("test_acc")
    return None if acc is None else 100.0 - acc


def _from_summary(key: str):
    def read(_, summary):
        v = (summary or {}).get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    return read


MEASURES = {
    "best_valid_acc": Measure("best supernet valid acc (%)", _best_valid),
    "final_valid_acc": Measure("final supernet valid acc (%)", lambda r, _: r.final_valid_acc),
    "gap": Measure("train - valid acc, last epoch (pp)", lambda r, _: r.gap()[0]),
    "gap_mean": Measure("train - valid acc, mean over epochs (pp)", _gap_mean),
    "search_hours": Measure("search hours (this machine)", _search_hours, digits=3),
    "param_free_share": Measure("parameter-free share of the derived cell", lambda r, _: _last(r, "non_learnable_share")),
    "normal_convs": Measure("conv ops, normal cell", lambda r, _: _last(r, "normal_convs"), digits=1),
    "reduce_convs": Measure("conv ops, reduction cell", lambda r, _: _last(r, "reduce_convs"), digits=1),
    "sizes_seen": Measure("model sizes visited", _sizes_seen, digits=1),
    "derived_params_m": Measure("derived network params (M)", lambda r, _: _last(r, "params_m"), digits=3),
    "nb201_cifar10": Measure("NB201 CIFAR-10 test acc (%)", _nb201("cifar10")),
    "nb201_cifar100": Measure("NB201 CIFAR-100 test acc (%)", _nb201("cifar100")),
    "nb201_imagenet16": Measure("NB201 ImageNet16-120 test acc (%)", _nb201("imagenet16-120")),
    "grad_corr_mean": Measure("gradient correlation, mean over nodes and epochs", _grad_corr_mean, digits=3),
    "estimator_loss": Measure("estimator loss on its memory", lambda r, _: _last(r, "estimator_loss"), digits=4),
    "kendall_tau": Measure("estimator Kendall tau on its memory", lambda r, _: _last(r, "kendall_tau"), digits=3),
    "test_loss": Measure("estimator loss on held-out cells", lambda r, _: _last(r, "test_loss"), digits=4),
    "test_kendall_tau": Measure("estimator Kendall tau on held-out cells", lambda r, _: _last(r, "test_kendall_tau"),
                                digits=3),
    "test_error": Measure("test error, trained from scratch (%)", _test_error, training=True),
    "train_params_m": Measure("params of the trained network (M)", _from_summary("params_m"), digits=3,
                              training=True),
}
