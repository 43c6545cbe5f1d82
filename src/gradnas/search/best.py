"""The best cell of a search: the genotype of the unit (epoch, or PVLL round) with the best validation accuracy,
ties going to the earlier unit (MiLeNAS section 4.1 takes the best epoch's cell, not the last one).

A search writes it as ``best-genotype.json`` beside ``genotype.json`` (``gradnas.search.callbacks.GenotypeWriter``):
the genotype's JSON with one more key, ``selected``: ``{"epoch": 7, "unit": "epoch", "by": "valid_acc",
"valid_acc": 61.2}``. ``by`` names what was compared: ``valid_acc`` (the supernet's validation accuracy at the end
of the epoch, for the epoch's derived cell) or, for PVLL-NAS, ``measured_acc`` (the accuracy its round measured
for the cell it sampled). Every genotype reader accepts the file (the extra key is ignored).

For a search from before the file existed, :func:`best_from_records` chooses the same way from metrics.jsonl.
"""
from __future__ import annotations

import json
from pathlib import Path

from gradnas.errors import GradnasError
from gradnas.run import BEST_GENOTYPE_FILE
from gradnas.space.genotype import genotype_from_dict, load_genotype


class BestTracker:
    """The best (genotype string, unit, accuracy, by) seen so far; strictly better replaces (ties: earlier)."""

    def __init__(self):
        self.best: dict | None = None  # {"genotype": str, "space": str, "epoch": int, "valid_acc": float, "by": str}

    def offer(self, genotype, *, epoch: int, acc: float, by: str) -> bool:
        """Consider unit ``epoch`` (1-based); True when it became the best."""
        if self.best is not None and not acc > self.best["valid_acc"]:
            return False
        self.best = {"genotype": genotype.to_string(), "epoch": int(epoch), "valid_acc": float(acc), "by": by}
        return True

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state: dict | None) -> None:
        self.best = dict(state["best"]) if state and state.get("best") else None

    def replay(self, records) -> None:
        """Choose from metrics records (``genotype`` and ``valid_acc``): a checkpoint from before the tracker."""
        self.best = None
        for m in records:
            if m.get("genotype") and isinstance(m.get("valid_acc"), (int, float)):
                self.offer(load_genotype(m["genotype"]), epoch=m["epoch"], acc=m["valid_acc"], by="valid_acc")

    def content(self, unit: str) -> dict | None:
        """What best-genotype.json holds (None before any unit was measured)."""
        if self.best is None:
            return None
        b = self.best
        return {**load_genotype(b["genotype"]).to_dict(),
                "selected": {"epoch": b["epoch"], "unit": unit, "by": b["by"], "valid_acc": b["valid_acc"]}}


def best_from_records(records) -> tuple | None:
    """(genotype, selected) chosen from metrics records as a search chooses, or None when no record has both a
    genotype and a validation accuracy."""
    tracker = BestTracker()
    tracker.replay(records)
    content = tracker.content("epoch")
    return None if content is None else (load_genotype(tracker.best["genotype"]), content["selected"])


def read_best(run_dir) -> tuple | None:
    """(genotype, selected) from a run folder's best-genotype.json, or None when it has none."""
    path = Path(run_dir) / BEST_GENOTYPE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise GradnasError(f"{path} is not valid JSON ({exc})") from None
    selected = data.get("selected") if isinstance(data, dict) else None
    if not isinstance(selected, dict) or "epoch" not in selected or "valid_acc" not in selected:
        raise GradnasError(f"{path} has no 'selected' entry (epoch, valid_acc); it was not written by gradnas search")
    return genotype_from_dict(data, source=str(path)), selected
