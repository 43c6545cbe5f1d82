"""The shipped NAS-Bench-201 table: provenance, the published figures, lookups of derived cells, errors."""
import hashlib
import json

import pytest

from conftest import tiny_nb201, tiny_supernet
from gradnas.benchmark import benchmark_for, format_benchmark
from gradnas.benchmark.nb201 import SHA256, TABLE, load_table, lookup
from gradnas.cli import main
from gradnas.errors import GradnasError
from gradnas.space.genotype import NB201Genotype, load_genotype, save_genotype

ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"


def test_shipped_table_is_the_documented_file():
    assert hashlib.sha256(TABLE.read_bytes()).hexdigest() == SHA256
    table = load_table()
    assert len(table) == 15_625
    # every key is the canonical string of a cell of the space, so every derived cell has an entry
    assert all(NB201Genotype.from_string(key).to_string() == key for key in table)


def test_published_figures():
    table = load_table()
    best = {name: max(table, key=lambda k: table[k][name]) for name in ("cifar10", "cifar100", "imagenet16-120")}
    assert [round(table[best[name]][name], 2) for name in best] == [94.37, 73.51, 47.31]
    assert round(lookup(best["cifar10"])["cifar10"], 2) == 94.37
    assert best["cifar10"] == ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
                               "nor_conv_1x1~2|")
    assert [round(v, 2) for v in lookup(ALL_SKIP).values()] == [54.30, 15.61, 16.32]
    assert list(lookup(ALL_SKIP)) == ["cifar10", "cifar100", "imagenet16-120"]
    assert format_benchmark(lookup(ALL_SKIP)) == "cifar10 54.30  cifar100 15.61  imagenet16-120 16.32"


def test_derived_cell_round_trips_through_the_lookup(tmp_path):
    geno = tiny_nb201("gumbel", seed=4).genotype()
    text = geno.to_string()
    figures = lookup(geno)
    assert lookup(text) == figures == load_table()[text]
    save_genotype(geno, tmp_path / "genotype.json")
    assert lookup(load_genotype(tmp_path / "genotype.json")) == figures
    key, fn = benchmark_for("nb201")
    assert key == "nb201" and fn(geno) == figures and benchmark_for("darts") is None


@pytest.mark.parametrize("cell,message", [
    ("|nor_conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "op 'nor_conv_5x5' is not in the space"),
    ("|none~0|+|none~0|none~1|", "has 3 nodes"),
    ("cifar10", "neither a file nor a genotype string"),
])
def test_cells_outside_the_space(cell, message):
    with pytest.raises(GradnasError, match=message):
        lookup(load_genotype(cell))


def test_darts_genotype_is_refused():
    with pytest.raises(GradnasError, match="only cells of the nb201 space, not a 'darts' genotype"):
        lookup(tiny_supernet().genotype())


def test_lookup_command(tmp_path, capsys):
    assert main(["lookup", ALL_SKIP]) == 0
    assert capsys.readouterr().out.splitlines() == [ALL_SKIP, "cifar10          54.30  rank 15231 / 15625",
                                                    "cifar100         15.61  rank 15221 / 15625",
                                                    "imagenet16-120   16.32  rank 14318 / 15625"]
    run = tmp_path / "run"
    run.mkdir()
    (run / "genotype.json").write_text(json.dumps(NB201Genotype.from_string(ALL_SKIP).to_dict()))
    assert main(["lookup", str(run)]) == 0  # a run folder: its genotype.json
    assert capsys.readouterr().out.splitlines()[1] == "cifar10          54.30  rank 15231 / 15625"
    assert main(["lookup", ALL_SKIP.replace("skip_connect~2", "conv~2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradnas: error: ") and "op 'conv' is not in the space" in err and len(err.splitlines()) == 1
