"""Where the genotype of a training run comes from: a JSON file, a genotype string (DARTS
``normal=|...|;reduce=|...|`` or NB-201 ``|op~0|+|...|``), or a search run folder.

A run folder gives the genotype ``pick`` chooses: ``best`` (the default, the papers' choice: MiLeNAS section 4.1),
the genotype of the epoch with the best validation accuracy (``best-genotype.json``; for a search from before that
file, chosen from its metrics.jsonl), or ``last``, its final genotype (``genotype.json`` of a finished search);
or, with ``size=(N, R)``, the genotype its model-size index lists for N convolutions in the normal cell and R in the reduction
cell. The index, ``sizes/index.json`` in the run folder, is a list of entries
``{"normal_convs": N, "reduce_convs": R, "params_m": .., "best_valid_acc": .., "epoch": ..,
"genotype_file": "sizes/size-N-R.json"}`` (file paths relative to the run folder).
"""
from __future__ import annotations

import json
from pathlib import Path

from gradnas.errors import GradnasError
from gradnas.run import BEST_GENOTYPE_FILE, GENOTYPE_FILE, METRICS_FILE, SUMMARY_FILE
from gradnas.space.genotype import load_genotype, looks_like_genotype

SIZE_INDEX = Path("sizes") / "index.json"
PICKS = ("best", "last")


def parse_size(text: str) -> tuple:
    """``"N,R"`` -> (N, R), the conv counts of the normal and the reduction cell."""
    parts = str(text).replace(" ", "").split(",")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise GradnasError(f"--size {text!r}: expected N,R (convolutions in the normal and the reduction cell), "
                           "e.g. --size 5,0")
    return int(parts[0]), int(parts[1])


def genotype_from_source(source: str, *, size: tuple | None = None, pick: str | None = None) -> tuple:
    """(genotype, where it came from) for a genotype file, string or run folder (see the module doc). ``pick``
    (best | last, default best) applies to a run folder only; the text of where it came from names the epoch and
    its validation accuracy."""
    if pick is not None and pick not in PICKS:
        raise GradnasError(f"--pick {pick!r}: choose best or last")
    if pick is not None and size is not None:
        raise GradnasError("--pick and --size are two ways to choose a run's genotype; give one of them")
    text = str(source)
    if looks_like_genotype(text):  # a genotype string of any form or a published name: never a path
        if size is not None:
            raise GradnasError("--size picks a genotype from a search run folder; it does not go with a genotype string")
        if pick is not None:
            raise GradnasError("--pick chooses the epoch of a search run folder; a genotype string is one genotype, "
                               "drop --pick")
        return load_genotype(text), "genotype string"
    path = Path(text)
    if size is not None:
        if not path.is_dir():
            raise GradnasError(f"--size picks a genotype from a search run folder's model-size index; {source!r} is "
                               "not a folder")
        return _from_size_index(path, size)
    if path.is_dir():
        _refuse_training_folder(path)
        last = _final_genotype(path)
        if (pick or "best") == "last":
            return last, f"last epoch of {path}: {_last_epoch(path)}"
        return _best_genotype(path)
    if pick is not None:
        raise GradnasError(f"--pick chooses the epoch of a search run folder; {source} is a genotype file, drop --pick")
    return load_genotype(path), str(path)


def _refuse_training_folder(run_dir: Path) -> None:
    """A training run folder holds a genotype too, but no search epochs to pick from: say what to give instead."""
    import yaml
    from gradnas.run import CONFIG_FILE
    try:
        config = yaml.safe_load((run_dir / CONFIG_FILE).read_text()) if (run_dir / CONFIG_FILE).is_file() else None
    except (yaml.YAMLError, UnicodeDecodeError):
        return  # not ours to judge here: the genotype files decide
    if isinstance(config, dict) and "method" not in config and "network" in config:
        raise GradnasError(f"{run_dir} is a training run folder, not a search; train its genotype again with "
                           f"--genotype {run_dir / GENOTYPE_FILE}, or continue it with `gradnas train --resume {run_dir}`")


def _describe(selected: dict) -> str:
    unit = selected.get("unit", "epoch")
    by = "valid acc" if selected.get("by", "valid_acc") == "valid_acc" else f"{selected['by']}"
    return f"{unit} {selected['epoch']}, {by} {float(selected['valid_acc']):.2f}%"


def _records(run_dir: Path) -> list:
    from gradnas.checkpoint import metrics_until
    return metrics_until(run_dir / METRICS_FILE, 10 ** 9)


def _last_epoch(run_dir: Path) -> str:
    lines = _records(run_dir)
    if not lines:
        return "no metrics recorded"
    last = lines[-1]
    acc = last.get("valid_acc", last.get("measured_acc"))
    unit = "round" if "phase" in last else "epoch"
    return f"{unit} {last['epoch']}" + (f", valid acc {acc:.2f}%" if isinstance(acc, (int, float)) else "")


def _best_genotype(run_dir: Path) -> tuple:
    from gradnas.search.best import best_from_records, read_best
    found = read_best(run_dir)
    if found is not None:
        genotype, selected = found
        return genotype, f"{run_dir / BEST_GENOTYPE_FILE}: best {_describe(selected)}"
    found = best_from_records(_records(run_dir))
    if found is None:
        raise GradnasError(f"{run_dir} has no {BEST_GENOTYPE_FILE} (a search from before gradnas kept it) and its "
                           f"{METRICS_FILE} has no epochs with a genotype and a validation accuracy to choose from; "
                           f"train its final genotype with --pick last")
    genotype, selected = found
    return genotype, f"best {_describe(selected)}, computed from {run_dir / METRICS_FILE} (no {BEST_GENOTYPE_FILE})"


def _final_genotype(run_dir: Path):
    file = run_dir / GENOTYPE_FILE
    if not file.is_file():
        raise GradnasError(f"{run_dir} holds no {GENOTYPE_FILE}; give a search run folder, a genotype JSON file "
                           "or a genotype string")
    genotype = load_genotype(file)
    summary_file = run_dir / SUMMARY_FILE
    if not summary_file.is_file():
        raise GradnasError(f"the search in {run_dir} has not finished (no {SUMMARY_FILE}), so it has no final "
                           f"genotype yet; finish it with `gradnas search --resume {run_dir}`, or train the latest "
                           f"one with --genotype {file}")
    try:
        final = json.loads(summary_file.read_text()).get("genotype")
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, AttributeError):
        raise GradnasError(f"{summary_file} is not a search summary (invalid JSON); give --genotype {file}") from None
    if final is not None and final != genotype.to_string():
        raise GradnasError(f"{file} and {summary_file} name different genotypes; the folder was changed after the "
                           f"search finished. Give the genotype to train explicitly (a file or a string)")
    return genotype


def _from_size_index(run_dir: Path, size: tuple) -> tuple:
    index_file = run_dir / SIZE_INDEX
    if not index_file.is_file():
        raise GradnasError(f"{run_dir} has no model-size index ({SIZE_INDEX}); --size needs a search run with "
                           "model-size based selection")
    try:
        entries = json.loads(index_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise GradnasError(f"{index_file} is not valid JSON ({exc})") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise GradnasError(f"{index_file} must be a list of entries with normal_convs, reduce_convs, genotype_file")
    try:
        sizes = {(int(e["normal_convs"]), int(e["reduce_convs"])): e for e in entries}
    except (KeyError, TypeError, ValueError):
        raise GradnasError(f"{index_file}: every entry needs integer normal_convs and reduce_convs") from None
    n, r = size
    if (n, r) not in sizes:
        listed = ", ".join(f"{a},{b}" for a, b in sorted(sizes)) or "none"
        raise GradnasError(f"{index_file} lists no genotype with {n} normal and {r} reduction convolutions; "
                           f"sizes there: {listed}")
    entry = sizes[(n, r)]
    rel = entry.get("genotype_file")
    if not isinstance(rel, str):
        raise GradnasError(f"{index_file}: the entry for size {n},{r} has no genotype_file")
    file = run_dir / rel
    if not file.is_file():
        raise GradnasError(f"{index_file} points to {rel} for size {n},{r}, but {file} does not exist")
    return load_genotype(file), f"{file} (size {n},{r} from {index_file})"
