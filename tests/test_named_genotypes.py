"""Published cells by name, and the DARTS code's Genotype(...) form read and written as data.

DARTS_V2 goes through the three forms (the DARTS code's text, the gradnas string, JSON) and back unchanged and
has the papers' size; every named cell is a cell gradnas builds; a pasted Genotype(...) string is parsed,
never evaluated, and a malformed one is one clear error (never a path, never a disk problem).
"""
import json

import pytest
import torch

import gradnas
from gradnas.cli import DARTS_V2 as CLI_DARTS_V2
from gradnas.cli import main
from gradnas.cli.common import read_genotype
from gradnas.errors import GradnasError
from gradnas.genotypes import FORMS, convert, get, named, to_form
from gradnas.space.darts_network import DartsNetwork, count_params_m
from gradnas.space.genotype import Genotype, NB201Genotype, load_genotype, looks_like_genotype
from gradnas.space.ops import DARTS_OPS
from gradnas.train.genotypes import genotype_from_source

# As DARTS publishes it (quark0/darts cnn/genotypes.py): edges in the search's order, concat as a list.
DARTS_V2_TEXT = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
                 "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
                 "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
                 "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
                 "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")
DARTS_V2_STRING = ("normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|sep_conv_3x3~0|sep_conv_3x3~1|+|skip_connect~0|"
                   "sep_conv_3x3~1|+|skip_connect~0|dil_conv_3x3~2|;reduce=|max_pool_3x3~0|max_pool_3x3~1|+|"
                   "max_pool_3x3~1|skip_connect~2|+|max_pool_3x3~0|skip_connect~2|+|max_pool_3x3~1|skip_connect~2|")
# As P-DARTS publishes it (chenxin061/pdarts genotypes.py), with range() concats.
PDARTS_TEXT = ("Genotype(normal=[('skip_connect', 0), ('dil_conv_3x3', 1), ('skip_connect', 0),('sep_conv_3x3', 1), "
               "('sep_conv_3x3', 1), ('sep_conv_3x3', 3), ('sep_conv_3x3',0), ('dil_conv_5x5', 4)], "
               "normal_concat=range(2, 6), reduce=[('avg_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_3x3', 0), "
               "('dil_conv_5x5', 2), ('max_pool_3x3', 0), ('dil_conv_3x3', 1), ('dil_conv_3x3', 1), "
               "('dil_conv_5x5', 3)], reduce_concat=range(2, 6))")
NB201 = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"


def test_darts_v2_round_trips_through_the_three_forms(tmp_path):
    geno = load_genotype(DARTS_V2_TEXT)
    assert geno == get("DARTS_V2") == load_genotype("DARTS_V2") and geno.to_string() == DARTS_V2_STRING
    assert CLI_DARTS_V2 == DARTS_V2_STRING  # the CLI's constant is the table's
    darts, string, js = (to_form(geno, form) for form in ("darts", "gradnas", "json"))
    # each form reads back to the same genotype, and writing it again gives the same text
    for text in (darts, string, js):
        again = load_genotype(text)
        assert again == geno
        assert (to_form(again, "darts"), to_form(again, "gradnas"), to_form(again, "json")) == (darts, string, js)
    assert Genotype.from_darts(darts) == geno and json.loads(js)["string"] == string
    # no index changes: node i's edges are the published pairs (sorted by input within a node)
    assert darts.startswith("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
                            "('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1), ('skip_connect', 0), "
                            "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5]")
    # and through the CLI: `gradnas genotype X --to FORM`, each output fed back in
    for form in FORMS:
        (tmp_path / form).write_text(convert("DARTS_V2", form))
        assert load_genotype(convert((tmp_path / form).read_text(), "gradnas")) == geno


def test_cli_converts(capsys):
    assert main(["genotype", "DARTS_V2", "--to", "darts"]) == 0
    darts = capsys.readouterr().out.strip()
    assert load_genotype(darts) == get("DARTS_V2")
    assert main(["genotype", darts, "--to", "json"]) == 0
    assert load_genotype(capsys.readouterr().out) == get("DARTS_V2")
    assert main(["genotype", darts]) == 0  # today's behaviour: the canonical string
    assert capsys.readouterr().out.strip() == DARTS_V2_STRING
    assert main(["genotype", NB201, "--to", "darts"]) == 2
    assert "DARTS-space cell pairs" in capsys.readouterr().err
    assert main(["genotype", "--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == len(named()) and listed[1].startswith("DARTS_V2\t" + DARTS_V2_STRING + "\tDARTS (Liu")


def test_darts_v2_has_the_papers_size():
    # CIFAR-10 setting: 20 cells, 36 channels, auxiliary head, 10 classes; params_m as gradnas train reports it
    # (count_params_m: the auxiliary head excluded, as the DARTS paper's 3.3M).
    with torch.device("meta"):
        net = DartsNetwork(get("DARTS_V2"), cells=20, channels=36, num_classes=10, auxiliary=True)
    assert net.auxiliary_head is not None
    assert round(count_params_m(net) * 1e6) == 3_349_342
    assert round(count_params_m(net), 2) == 3.35
    # the auxiliary head on the 576-channel map: 1x1 conv 576*128, BN 2*128, 2x2 conv 128*768*4, BN 2*768, 768*10 + 10
    aux = 576 * 128 + 2 * 128 + 128 * 768 * 4 + 2 * 768 + 768 * 10 + 10
    assert aux == 476_426 == sum(p.numel() for p in net.auxiliary_head.parameters())
    assert sum(p.numel() for p in net.parameters()) == 3_349_342 + aux


def test_every_named_cell_is_a_cell_gradnas_builds():
    table = named()
    assert list(table)[:3] == ["DARTS_V1", "DARTS_V2", "PDARTS"]
    milenas = [n for n in table if n.startswith("MILENAS_")]
    assert len(milenas) == len(table) - 3 >= 40
    for name, entry in table.items():
        assert isinstance(entry.genotype, Genotype) and entry.genotype.validate(DARTS_OPS, 4)
        assert "github.com/" in entry.source and name.removeprefix("MILENAS_") in entry.source
        assert load_genotype(name) == entry.genotype == read_genotype(name) == genotype_from_source(name)[0]
    assert "chaoyanghe/MiLeNAS" in table["MILENAS_V2_r2_e50"].source
    assert table["PDARTS"].genotype == load_genotype(PDARTS_TEXT)
    assert table["DARTS_V1"].genotype != table["DARTS_V2"].genotype


def test_an_unknown_name_gets_close_names():
    with pytest.raises(GradnasError, match="did you mean DARTS_V2"):
        load_genotype("DARTS_v2")
    with pytest.raises(GradnasError, match="no published cell is called 'DARTS_V3'; did you mean"):
        get("DARTS_V3")


def test_pasted_forms_are_read_as_data():
    # a pasted assignment line, range() concats, positional fields, JSON text
    assert load_genotype("DARTS_V2 = " + DARTS_V2_TEXT) == get("DARTS_V2")
    assert load_genotype(DARTS_V2_TEXT.replace("[2, 3, 4, 5]", "range(2, 6)")) == get("DARTS_V2")
    positional = DARTS_V2_TEXT.replace("normal=", "").replace("normal_concat=", "").replace("reduce=", "")
    assert load_genotype(positional.replace("reduce_concat=", "")) == get("DARTS_V2")
    assert load_genotype(json.dumps(get("PDARTS").to_dict())) == get("PDARTS")
    assert looks_like_genotype(DARTS_V2_TEXT) and looks_like_genotype("DARTS_V2") and not looks_like_genotype("runs/x")


@pytest.mark.parametrize("text, message", [
    (DARTS_V2_TEXT.replace("dil_conv_3x3", "sep_conv_7x7"), "op 'sep_conv_7x7' is not in the space"),
    (DARTS_V2_TEXT[:-1], "not well formed"),
    (DARTS_V2_TEXT.replace("('max_pool_3x3', 0),", "('max_pool_3x3' 0),", 1), "not well formed"),
    (DARTS_V2_TEXT + " + 1", "one Genotype"),
    (DARTS_V2_TEXT.replace("reduce_concat", "reduce_cat"), "unknown field 'reduce_cat'"),
    (DARTS_V2_TEXT.replace("normal=", "reduce="), "given twice"),
    ("Genotype(normal=[('sep_conv_3x3', 0)])", "field(s) reduce missing"),
    (DARTS_V2_TEXT.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', '2')"), "list of ('op', input) pairs"),
    (DARTS_V2_TEXT.replace("[2, 3, 4, 5]", "range(2, x)", 1), "must be written as literals"),
    (DARTS_V2_TEXT.replace("[2, 3, 4, 5]", "[2, 3, 4]", 1), "must list the intermediate nodes"),
    (DARTS_V2_TEXT.replace("('max_pool_3x3', 1)]", "('max_pool_3x3', 1), ('skip_connect', 4), ('skip_connect', 5)]"),
     "the reduction cell 5"),
])
def test_a_malformed_pasted_genotype_is_one_clear_error(text, message):
    with pytest.raises(GradnasError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_genotype(text)


def test_code_in_a_pasted_genotype_is_never_run(tmp_path, capsys):
    marker = tmp_path / "ran"
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    for text in (f"Genotype(normal={payload}, reduce=[])",
                 DARTS_V2_TEXT.replace("range", "").replace("[2, 3, 4, 5]", f"[{payload}]", 1),
                 f"Genotype(normal=[(str({payload}), 0)], reduce=[])",
                 payload):
        with pytest.raises(GradnasError):
            load_genotype(text)
        assert main(["genotype", text]) == 2
        err = capsys.readouterr().err
        assert err.count("gradnas: error:") == 1 and ("literals" in err or "neither a file" in err)
    assert not marker.exists()


def test_a_long_pasted_string_is_never_a_path_or_a_disk_problem(capsys):
    long_text = DARTS_V2_TEXT.replace("[2, 3, 4, 5]", "[" + ", ".join(["2"] * 200) + "]", 1)
    assert len(long_text) > 1000
    for args in (["genotype", long_text], ["draw", long_text], ["train", "--genotype", long_text, "--epochs", "1"],
                 ["genotype", "x" * 5000]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("gradnas: error:") == 1 and "disk" not in err and "too long" not in err
    with pytest.raises(GradnasError, match="must list the intermediate nodes"):
        genotype_from_source(long_text)


def test_nb201_cells_convert_too():
    cell = load_genotype(NB201)
    assert isinstance(cell, NB201Genotype) and load_genotype(to_form(cell, "json")) == cell
    assert convert(NB201, "gradnas") == NB201
    with pytest.raises(GradnasError, match="unknown genotype form"):
        to_form(cell, "yaml")


def test_public_names():
    assert gradnas.genotypes.named is named and gradnas.load_genotype("PDARTS") == get("PDARTS")
