"""Model size-based searching and early stopping (MiLeNAS section 3.3, Algorithm 1 lines 8-11, section 5).

After every search epoch the loop hands the epoch's derived genotype and validation accuracy to a
:class:`SizeTracker`. The *model size* of a genotype is the pair (N, R): the number of convolution ops
(``sep_conv_*``, ``dil_conv_*``; NAS-Bench-201: ``nor_conv_*``) chosen in the normal cell and in the
reduction cell, counted from the op names (:func:`conv_counts`). An NB-201 genotype is one cell with no
searched reduction cell (its reduction blocks are fixed residual blocks), so its size is (N, 0). Beside
the counts, every epoch records the parameters of the evaluation network the genotype would be trained
as (:func:`eval_params_m`), the papers' "Params (M)".

For each size seen, the tracker keeps the best validation accuracy (of the supernet on the architecture
half, the figure the search already reports) and the genotype that reached it; a later epoch replaces
it only with a strictly higher accuracy (ties keep the earlier epoch). The run folder holds them as
``sizes/size-N-R.json`` (genotype JSON, as ``gradnas train --genotype`` reads it) and
``sizes/index.json`` (a list, one entry per size: ``normal_convs``, ``reduce_convs``, ``params_m``,
``best_valid_acc``, ``epoch``, ``genotype_file`` relative to the run folder, ``genotype`` and
``epochs_at_size``, the number of epochs whose genotype had that size), written atomically.

Early stopping (the ``stop`` config section), checked after each epoch; either rule ends the search:

* ``at_size: [N, R]`` (``--stop-at-size N,R``): the first epoch whose genotype has exactly N conv ops in
  the normal cell and R in the reduction cell (the paper stops at 6,0). NB-201: ``N`` alone or ``N,0``.
* ``when_smaller: P`` (``--stop-when-smaller P``): the first epoch whose parameters are below P million
  after an earlier epoch's were at least P (the model size has begun to fall, section 3.3).

A rule set when a search is resumed applies to the epochs that follow.
"""
from __future__ import annotations

from pathlib import Path

from gradnas.config import StopConfig
from gradnas.run import write_json
from gradnas.space.base import space_of
from gradnas.space.genotype import genotype_from_dict, load_genotype, save_genotype

SIZES_DIR = "sizes"
INDEX_FILE = "index.json"


def conv_counts(genotype) -> tuple:
    """(convolutions in the normal cell, in the reduction cell), counted from the chosen ops' names by the
    genotype's space. DARTS: the cells' kept edges (2 per node); NB-201: the cell's 6 edges, and 0 for the
    reduction cell."""
    return tuple(space_of(genotype).conv_counts(genotype))


def eval_params_m(genotype) -> float:
    """Parameters (M) of the evaluation network of ``genotype`` in the CIFAR-10 setting, whatever data the
    search ran on, so the figure is the papers' "Params (M)": DARTS 20 cells, 36 channels, 3 input
    channels, 10 classes, auxiliary head excluded (DARTS_V2: 3.35); NB-201 the benchmark's network, N = 5
    cells per stage, C = 16, 10 classes (1.53 for the all-3x3 cell). Built by the genotype's space on the
    meta device and remembered per genotype."""
    return space_of(genotype).eval_params_m(genotype)


def size_file(normal: int, reduce: int) -> str:
    """The per-size genotype file, relative to the run folder."""
    return f"{SIZES_DIR}/size-{normal}-{reduce}.json"


class SizeTracker:
    """Per-epoch model sizes, the best genotype per size, and the stop rules (module doc).

    ``update`` is deterministic in (genotype, accuracy), so every process of a distributed search computes
    the same figures and the same stop; only the main one calls ``write``."""

    def __init__(self, stop: StopConfig | None = None):
        self.stop = stop or StopConfig()
        self.history = []   # per epoch: {"epoch", "normal_convs", "reduce_convs", "params_m", "valid_acc"}
        self.best = {}      # (N, R) -> index entry (see the module doc) plus "genotype_dict"
        self.stopped = None  # the stop record once a rule fired: {"epoch", "rule", "value", "reason"}
        self._changed = set()

    # -- per epoch
    def update(self, epoch: int, genotype, valid_acc: float) -> dict:
        """Record epoch ``epoch`` (1-based); returns what goes into its metrics line: ``normal_convs``,
        ``reduce_convs``, ``params_m``, and ``stop`` when a rule fires at this epoch."""
        normal, reduce = conv_counts(genotype)
        params = round(eval_params_m(genotype), 6)
        earlier_max = max((h["params_m"] for h in self.history), default=None)
        self.history.append({"epoch": epoch, "normal_convs": normal, "reduce_convs": reduce, "params_m": params,
                             "valid_acc": float(valid_acc)})
        key = (normal, reduce)
        entry = self.best.get(key)
        if entry is None or valid_acc > entry["best_valid_acc"]:
            self.best[key] = {"normal_convs": normal, "reduce_convs": reduce, "params_m": params,
                              "best_valid_acc": float(valid_acc), "epoch": epoch,
                              "genotype_file": size_file(normal, reduce), "genotype": genotype.to_string(),
                              "epochs_at_size": entry["epochs_at_size"] if entry else 0,
                              "genotype_dict": genotype.to_dict()}
            self._changed.add(key)
        self.best[key]["epochs_at_size"] += 1
        record = {"normal_convs": normal, "reduce_convs": reduce, "params_m": params}
        stop = self._check(epoch, normal, reduce, params, earlier_max)
        if stop is not None:
            self.stopped = stop
            record["stop"] = stop
        return record

    def _check(self, epoch, normal, reduce, params, earlier_max) -> dict | None:
        rule = self.stop
        size_text = f"{normal} conv ops in the normal cell and {reduce} in the reduction cell"
        if rule.at_size is not None and (normal, reduce) == tuple(rule.at_size) + (0,) * (2 - len(rule.at_size)):
            return {"epoch": epoch, "rule": "at_size", "value": rule.rule_value("at_size"),
                    "reason": f"the derived genotype has {size_text} (stop.at_size {','.join(map(str, rule.at_size))})"}
        p = rule.when_smaller
        if p is not None and params < p and earlier_max is not None and earlier_max >= p:
            return {"epoch": epoch, "rule": "when_smaller", "value": p,
                    "reason": f"the evaluation network fell to {params:.3f}M parameters ({size_text}), below "
                              f"stop.when_smaller {p:g}M after reaching {earlier_max:.3f}M"}
        return None

    def stop_still_set(self) -> bool:
        """Whether the rule that stopped the search is still configured with the same value."""
        return self.stopped is not None and self.stop.rule_value(self.stopped["rule"]) == self.stopped["value"]

    # -- the run folder
    def index(self) -> list:
        """The entries of ``sizes/index.json``, largest size first (normal convs, then reduction convs)."""
        return [{k: v for k, v in self.best[key].items() if k != "genotype_dict"}
                for key in sorted(self.best, reverse=True)]

    def write(self, run_dir, *, everything: bool = False) -> None:
        """Write the genotype files of the sizes whose best changed since the last write (``everything``:
        all of them, and remove size files the tracker does not hold), then the index; each atomically."""
        folder = Path(run_dir) / SIZES_DIR
        folder.mkdir(parents=True, exist_ok=True)
        keys = set(self.best) if everything else self._changed
        for key in keys:
            entry = self.best[key]
            save_genotype(genotype_from_dict(entry["genotype_dict"]), Path(run_dir) / entry["genotype_file"])
        if everything:
            kept = {Path(e["genotype_file"]).name for e in self.best.values()}
            for path in folder.glob("size-*.json"):
                if path.name not in kept:
                    path.unlink()
        write_json(folder / INDEX_FILE, self.index(), indent=1)
        self._changed.clear()

    # -- checkpoint
    def state_dict(self) -> dict:
        return {"history": [dict(h) for h in self.history],
                "best": [dict(e) for e in self.best.values()],
                "stopped": dict(self.stopped) if self.stopped else None}

    def load_state_dict(self, state: dict) -> None:
        self.history = [dict(h) for h in state["history"]]
        self.best = {(int(e["normal_convs"]), int(e["reduce_convs"])): dict(e) for e in state["best"]}
        self.stopped = dict(state["stopped"]) if state.get("stopped") else None
        self._changed = set()

    def replay(self, records) -> None:
        """Rebuild the state from metrics lines (``epoch``, ``genotype``, ``valid_acc``): for checkpoints
        written before the tracker existed, and for run folders without a model-size index. A ``stop``
        recorded in the last line is taken as the search's stop."""
        self.history, self.best, self.stopped = [], {}, None
        rules, self.stop = self.stop, StopConfig()  # replay records, it does not re-decide stops
        try:
            for m in records:
                self.update(int(m["epoch"]), load_genotype(m["genotype"]), float(m["valid_acc"]))
                # a stop counts only on the last line (a search resumed past its stop has later lines)
                self.stopped = dict(m["stop"]) if isinstance(m.get("stop"), dict) else None
        finally:
            self.stop = rules
