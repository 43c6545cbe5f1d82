"""Where the genotype of a training run comes from: a JSON file, a genotype string (DARTS
``normal=|...|;reduce=|...|`` or NB-201 ``|op~0|+|...|``), or a search run folder.

A run folder gives its final genotype (``genotype.json`` of a finished search), or, with ``size=(N, R)``,
the genotype its model-size index lists for N convolutions in the normal cell and R in the reduction
cell. The index, ``sizes/index.json`` in the run folder, is a list of entries
``{"normal_convs": N, "reduce_convs": R, "params_m": .., "best_valid_acc": .., "epoch": ..,
"genotype_file": "sizes/size-N-R.json"}`` (file paths relative to the run folder).
"""
from __future__ import annotations

import json
from pathlib import Path

from gradnas.errors import GradnasError
from gradnas.run import GENOTYPE_FILE, SUMMARY_FILE
from gradnas.space.genotype import load_genotype

SIZE_INDEX = Path("sizes") / "index.json"


def parse_size(text: str) -> tuple:
    """``"N,R"`` -> (N, R), the conv counts of the normal and the reduction cell."""
    parts = str(text).replace(" ", "").split(",")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise GradnasError(f"--size {text!r}: expected N,R (convolutions in the normal and the reduction cell), "
                           "e.g. --size 5,0")
    return int(parts[0]), int(parts[1])


def genotype_from_source(source: str, *, size: tuple | None = None) -> tuple:
    """(genotype, where it came from) for a genotype file, string or run folder (see the module doc)."""
    text = str(source)
    if text.lstrip().startswith(("normal=", "|")):  # a DARTS or an NB-201 genotype string
        if size is not None:
            raise GradnasError("--size picks a genotype from a search run folder; it does not go with a genotype string")
        return load_genotype(text), "genotype string"
    path = Path(text)
    if size is not None:
        if not path.is_dir():
            raise GradnasError(f"--size picks a genotype from a search run folder's model-size index; {source!r} is "
                               "not a folder")
        return _from_size_index(path, size)
    if path.is_dir():
        return _final_genotype(path), f"{path / GENOTYPE_FILE}"
    return load_genotype(path), str(path)


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
