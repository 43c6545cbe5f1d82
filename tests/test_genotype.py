"""Genotype derivation (the DARTS rule), canonical string, JSON round trip and validation."""
import json

import pytest

from conftest import tiny_supernet
from gradnas.errors import GradnasError
from gradnas.space.genotype import Genotype, derive_cell, derive_genotype, load_genotype, save_genotype
from gradnas.space.ops import DARTS_OPS

OPS = DARTS_OPS  # none, max, avg, skip, sep3, sep5, dil3, dil5


def _row(**kw):
    r = [0.0] * len(OPS)
    for name, v in kw.items():
        r[OPS.index(name)] = v
    return r


def test_derive_cell_by_hand():
    # node 2 reads 0,1; node 3 reads 0,1,2
    weights = [
        _row(none=0.9, sep_conv_3x3=0.05),          # 2<-0: none is ignored -> strength 0.05
        _row(skip_connect=0.3, max_pool_3x3=0.2),   # 2<-1
        _row(dil_conv_5x5=0.4),                     # 3<-0
        _row(avg_pool_3x3=0.1),                     # 3<-1: weakest, dropped
        _row(sep_conv_5x5=0.35, dil_conv_3x3=0.35),  # 3<-2: tie -> lower op index (sep_conv_5x5)
    ]
    cell = derive_cell(weights, OPS, steps=2)
    assert cell == (("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_5x5", 0), ("sep_conv_5x5", 2))


def test_edge_tie_goes_to_lower_input():
    weights = [_row(sep_conv_3x3=0.5)] * 2 + [_row(sep_conv_3x3=0.5)] * 3
    cell = derive_cell(weights, OPS, steps=2)
    assert [j for _, j in cell] == [0, 1, 0, 1]


def test_string_and_json_round_trip(tmp_path):
    model = tiny_supernet(nodes=4)
    geno = model.genotype()
    assert Genotype.from_string(geno.to_string()) == geno
    path = tmp_path / "g.json"
    save_genotype(geno, path)
    assert load_genotype(path) == geno
    assert load_genotype(geno.to_string()) == geno
    data = json.loads(path.read_text())
    assert data["string"] == geno.to_string() and data["space"] == "darts"
    geno.validate(OPS, 4)


def test_canonical_order_inside_a_node():
    a = Genotype((("skip_connect", 1), ("sep_conv_3x3", 0)), (2,), (("max_pool_3x3", 0), ("max_pool_3x3", 1)), (2,))
    b = Genotype((("sep_conv_3x3", 0), ("skip_connect", 1)), (2,), (("max_pool_3x3", 1), ("max_pool_3x3", 0)), (2,))
    assert a == b and a.to_string() == b.to_string() == \
        "normal=|sep_conv_3x3~0|skip_connect~1|;reduce=|max_pool_3x3~0|max_pool_3x3~1|"
    assert hash(a) == hash(b)


def _geno_dict(**changes):
    g = {"normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["skip_connect", 0], ["sep_conv_5x5", 2]],
         "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2], ["max_pool_3x3", 1]]}
    g.update(changes)
    return g


@pytest.mark.parametrize("changes,message", [
    ({"normal": [["conv_9x9", 0], ["sep_conv_3x3", 1], ["skip_connect", 0], ["sep_conv_5x5", 2]]}, "not in the space"),
    ({"normal": [["none", 0], ["sep_conv_3x3", 1], ["skip_connect", 0], ["sep_conv_5x5", 2]]}, "not in the space"),
    ({"normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["skip_connect", 0], ["sep_conv_5x5", 3]]}, "out of range"),
    ({"normal": [["sep_conv_3x3", 1], ["sep_conv_3x3", 1], ["skip_connect", 0], ["sep_conv_5x5", 2]]}, "distinct"),
    ({"normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1]]}, "node count"),
])
def test_validation_errors(tmp_path, changes, message):
    path = tmp_path / "g.json"
    path.write_text(json.dumps(_geno_dict(**changes)))
    with pytest.raises(GradnasError, match=message):
        load_genotype(path).validate(OPS, 2)


@pytest.mark.parametrize("content,message", [
    ("{not json", "not valid JSON"),
    (json.dumps(_geno_dict(space="nb201")), "space 'nb201'"),
    (json.dumps({"normal": [["sep_conv_3x3", "__import__('os')"]], "reduce": []}), "must be \\[op name"),
    (json.dumps([1, 2]), "expected a JSON object"),
])
def test_bad_files(tmp_path, content, message):
    path = tmp_path / "g.json"
    path.write_text(content)
    with pytest.raises(GradnasError, match=message):
        load_genotype(path)


def test_bad_strings_and_missing_file():
    with pytest.raises(GradnasError, match="neither a file"):
        load_genotype("no/such/genotype.json")
    with pytest.raises(GradnasError, match="exactly two edges"):
        Genotype.from_string("normal=|sep_conv_3x3~0|;reduce=|max_pool_3x3~0|skip_connect~1|")
    with pytest.raises(GradnasError, match="op~input"):
        Genotype.from_string("normal=|sep_conv_3x3~x|a~1|;reduce=|max_pool_3x3~0|skip_connect~1|")


def test_derive_genotype_uses_both_cells():
    n = [_row(sep_conv_3x3=1.0)] * 5
    r = [_row(max_pool_3x3=1.0)] * 5
    g = derive_genotype(n, r, OPS, 2)
    assert {op for op, _ in g.normal} == {"sep_conv_3x3"} and {op for op, _ in g.reduce} == {"max_pool_3x3"}
    assert g.normal_concat == (2, 3)
