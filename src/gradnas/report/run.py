"""A finished or unfinished search or training run, read back from its run folder (never from a live run).

Reads what `gradnas search` writes (config.yaml, metrics.jsonl, summary.json, genotype.json) and what
other tools may add: ``nb201`` benchmark accuracies in metrics lines or summary.json, and a model-size
index ``sizes/index.json``; and what `gradnas train` writes (the same files and network.json). ``Run.kind``
tells the two apart by the config (a search's names a method, a training run's a network and an optimizer).
Missing optional pieces are None; a folder that is not a run, or not the kind a command reads, is an error.
"""
from __future__ import annotations

import json
import logging
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from gradnas.config import read_yaml_file
from gradnas.errors import GradnasError
from gradnas.run import CONFIG_FILE, GENOTYPE_FILE, METRICS_FILE, NETWORK_FILE, SUMMARY_FILE, config_kind

logger = logging.getLogger(__name__)

SIZES_INDEX = "sizes/index.json"  # written by the model-size based search, when it ran
SEARCH, TRAINING = "search", "training"
KIND_WORDS = {SEARCH: "a search run folder", TRAINING: "a training run folder"}


def run_kind(config: dict) -> str | None:
    """SEARCH, TRAINING, or None for a config that is neither's (gradnas.run.config_kind decides)."""
    kind = config_kind(config)
    return None if kind is None else {"search": SEARCH, "train": TRAINING}[kind[1]]


@dataclass
class Run:
    path: Path
    config: dict
    metrics: list = field(default_factory=list)
    summary: dict | None = None
    sizes: list | None = None
    network: dict | None = None   # a training run's network.json (params, multiply-adds)
    genotype_file: str | None = None  # the genotype.json string (a training run's genotype)

    @property
    def kind(self) -> str | None:
        return run_kind(self.config)

    @property
    def name(self) -> str:
        return self.path.resolve().name

    @property
    def epochs_done(self) -> int:
        return len(self.metrics)

    @property
    def finished(self) -> bool:
        return bool(self.summary and self.summary.get("finished"))

    @property
    def last(self) -> dict:
        return self.metrics[-1] if self.metrics else {}

    def series(self, key: str) -> tuple[list, list]:
        """(epochs, values) of a top-level numeric metric, skipping epochs that lack it."""
        xs, ys = [], []
        for m in self.metrics:
            v = m.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                xs.append(m["epoch"])
                ys.append(float(v))
        return xs, ys

    def has(self, key: str) -> bool:
        return any(key in m for m in self.metrics)

    # -- the figures a report or comparison quotes
    @property
    def genotype_string(self) -> str | None:
        if self.summary and self.summary.get("genotype"):
            return self.summary["genotype"]
        return self.last.get("genotype") or self.genotype_file

    @property
    def final_valid_acc(self) -> float | None:
        return self.last.get("valid_acc")

    @property
    def best_valid_acc(self) -> float | None:
        values = self.series("valid_acc")[1]
        return max(values) if values else None

    def gap(self) -> tuple[float | None, str]:
        """Final train - validation accuracy gap (percentage points) and where it comes from.

        With the gap probe: both accuracies in eval mode on equal-sized samples of the two halves. Without:
        the running training accuracy of the last epoch (train mode, weights moving) minus the validation
        accuracy, as DARTS / MiLeNAS logs report it."""
        last = self.last
        if isinstance(last.get("gap"), dict):
            return last["gap"]["acc_gap"], "probe"
        if last.get("train_acc") is not None and last.get("valid_acc") is not None:
            return last["train_acc"] - last["valid_acc"], "running"
        return None, "n/a"

    def gap_series(self, *, probe: bool = True) -> tuple[list, list, str]:
        """(epochs, gap in pp, source): from the gap probe when recorded and ``probe``, else running."""
        if probe and self.has("gap"):
            xs = [m["epoch"] for m in self.metrics if isinstance(m.get("gap"), dict)]
            ys = [m["gap"]["acc_gap"] for m in self.metrics if isinstance(m.get("gap"), dict)]
            return xs, ys, "probe"
        both = [m for m in self.metrics if m.get("train_acc") is not None and m.get("valid_acc") is not None]
        xs = [m["epoch"] for m in both]
        ys = [m["train_acc"] - m["valid_acc"] for m in both]
        return xs, ys, "running"

    @property
    def epoch_times(self) -> list:
        return self.series("epoch_time")[1]

    @property
    def seconds_per_epoch(self) -> float | None:
        times = self.epoch_times
        return statistics.fmean(times) if times else None

    @property
    def nb201(self) -> dict | None:
        """Benchmark accuracies of the final genotype ({dataset: %}) when the search recorded them."""
        for source in (self.summary or {}, self.last):
            value = source.get("nb201")
            if isinstance(value, dict) and value:
                return value
        return None

    def nb201_series(self, dataset: str) -> tuple[list, list]:
        """(epochs, benchmark test accuracy %) of each unit's derived cell on ``dataset`` (BenchmarkLookup's)."""
        xs, ys = [], []
        for m in self.metrics:
            value = (m.get("nb201") or {}).get(dataset) if isinstance(m.get("nb201"), dict) else None
            if isinstance(value, (int, float)):
                xs.append(m["epoch"])
                ys.append(float(value))
        return xs, ys

    def describe(self) -> str:
        """method (with lambda for MiLeNAS), order, relaxation: the words a table row needs (a training run:
        its space, dataset and network size)."""
        c = self.config
        if self.kind == TRAINING:
            n = c.get("network", {})
            space = (self.network or {}).get("space") or ("nb201" if (self.genotype_string or "").startswith("|")
                                                         else "darts")
            return (f"train {space} on {c.get('data', {}).get('dataset', '?')}, {n.get('cells')} cells x "
                    f"{n.get('channels')} channels")
        method = c.get("method", "?")
        words = [method]
        if method == "milenas":
            words.append(f"lambda={_num(c.get('lambda'))}")
        if c.get("order", 1) != 1:
            words.append(f"order={c['order']}")
        words.append(c.get("relax", "?"))
        return " ".join(words)


def _num(v) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def load_run(path, *, need_epochs: bool = True, kinds=(SEARCH, TRAINING), command: str | None = None) -> Run:
    """Read a run folder. ``need_epochs``: refuse a run with no finished epoch (nothing to show). ``kinds``: the
    kinds of run the caller reads; another kind is refused in one line naming ``command`` (what it reads)."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        if path.is_dir() and any((p / CONFIG_FILE).is_file() for p in path.iterdir() if p.is_dir()):
            raise GradnasError(f"{path} holds run folders but is not one itself; give the run folders "
                               f"(e.g. {path}/*)")
        raise GradnasError(f"{path} is not a gradnas run folder (no {CONFIG_FILE}); give a folder written by "
                           "`gradnas search` or `gradnas train`")
    config = read_yaml_file(path / CONFIG_FILE, kind="run config")
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise GradnasError(f"{path / CONFIG_FILE} must hold a mapping of settings; the file was edited or damaged")
    kind = run_kind(config)
    if kind is None:
        raise GradnasError(f"{path} is not a gradnas run folder (its {CONFIG_FILE} is neither a search's nor a "
                           "training run's)")
    if kind not in kinds:
        wanted = " or ".join(KIND_WORDS[k] for k in kinds)
        raise GradnasError(f"{path} is {KIND_WORDS[kind]}; {command or 'this command'} reads {wanted}")
    metrics = read_metrics(path / METRICS_FILE)
    if need_epochs and not metrics:
        raise GradnasError(f"{path} has no finished epoch yet ({METRICS_FILE} is empty); plot or report it after "
                           "the first epoch")
    summary = _read_json(path / SUMMARY_FILE)
    sizes = _read_json(path / SIZES_INDEX) if kind == SEARCH else None
    network = _read_json(path / NETWORK_FILE) if kind == TRAINING else None
    genotype = _read_json(path / GENOTYPE_FILE) if kind == TRAINING else None
    return Run(path=path, config=config, metrics=metrics, summary=summary if isinstance(summary, dict) else None,
               sizes=sizes if isinstance(sizes, list) else None, network=network if isinstance(network, dict) else None,
               genotype_file=genotype.get("string") if isinstance(genotype, dict) else None)


# The types a metrics line's keys must have for the readers (tables, plots, sizes) to use them; a line that
# breaks them is skipped with a warning. Keys not listed are passed through as they are.
_NUMBER_KEYS = ("lr", "train_loss", "train_acc", "valid_loss", "valid_acc", "arch_batch_loss", "arch_batch_acc",
                "epoch_time", "probe_time", "round_time", "non_learnable_share", "params_m", "normal_convs",
                "reduce_convs", "lr_scale", "test_loss", "test_acc", "test_top5", "drop_path")
_STRING_KEYS = ("genotype", "method")
_TABLE_KEYS = ("edge_weights", "gap", "grad_corr", "dl_dp", "nb201")  # mappings (nested) of numbers
_MAPPING_KEYS = ("stop", "lr_decay")
_GAP_KEYS = ("train_loss", "train_acc", "valid_loss", "valid_acc", "loss_gap", "acc_gap")  # the gap probe's


def read_metrics(metrics_path: Path) -> list:
    """The epoch records of a metrics.jsonl (none if the file is missing). A last line cut short by a crash is
    dropped; invalid JSON before it is an error (the file was edited or damaged). A line of valid JSON that
    is no epoch record, or whose figures have the wrong types, is skipped, with one warning naming the file
    and its lines."""
    metrics, skipped = [], []
    if not metrics_path.is_file():
        return metrics
    lines = metrics_path.read_bytes().decode("utf-8", errors="replace").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            # A last line cut short by a crash mid-write: everything before it is good.
            if n == len(lines):
                break
            raise GradnasError(f"{metrics_path} line {n} is not valid JSON; the file was edited or "
                               "damaged") from None
        problem = _record_problem(record)
        if problem:
            skipped.append((n, problem))
        else:
            metrics.append(_finite(record))
    if skipped:
        where = ", ".join(str(n) for n, _ in skipped)
        logger.warning(f"{metrics_path} line{'s' if len(skipped) > 1 else ''} {where} skipped: "
                       f"{skipped[0][1]}{' (and more)' if len(skipped) > 1 else ''}")
    return metrics


def _record_problem(record) -> str | None:
    """Why a parsed metrics line is no epoch record the readers can use, or None."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an epoch record"
    epoch = record.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        return f"'epoch' must be a whole number >= 1, got {json.dumps(epoch)}"
    for key in _NUMBER_KEYS:
        if key in record and record[key] is not None and not _is_number(record[key]):
            return f"'{key}' must be a number, got {json.dumps(record[key])[:40]}"
    for key in _STRING_KEYS:
        if key in record and not isinstance(record[key], str):
            return f"'{key}' must be a string, got {json.dumps(record[key])[:40]}"
    for key in _TABLE_KEYS:
        if key in record and record[key] is not None and not _number_table(record[key]):
            return f"'{key}' must be a mapping of numbers, got {json.dumps(record[key])[:40]}"
    if isinstance(record.get("gap"), dict) and not all(_is_number(record["gap"].get(k)) for k in _GAP_KEYS):
        return f"'gap' must hold the numbers {', '.join(_GAP_KEYS)}"
    if isinstance(record.get("grad_corr"), dict) and not all(
            _whole(c) and isinstance(nodes, dict) and all(_whole(n) for n in nodes)
            for c, nodes in record["grad_corr"].items()):
        return "'grad_corr' must map cell indices to node indices"
    for key in _MAPPING_KEYS:
        if key in record and not isinstance(record[key], dict):
            return f"'{key}' must be a mapping, got {json.dumps(record[key])[:40]}"
    return None


def _whole(text) -> bool:
    return isinstance(text, str) and text.lstrip("-").isdigit()


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _number_table(v, depth: int = 0) -> bool:
    return isinstance(v, dict) and depth < 4 and all(
        x is None or _is_number(x) or _number_table(x, depth + 1) for x in v.values())


def _read_json(path: Path):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise GradnasError(f"{path} is not valid JSON") from None


def _finite(record: dict) -> dict:
    # json writes NaN as NaN; keep such values out of plots and tables (None = missing).
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


def md_table(header, rows) -> str:
    """A Markdown (GFM) table; cells are written as given (escape '|' inside them)."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
