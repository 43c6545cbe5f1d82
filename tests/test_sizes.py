"""Model size-based search and early stopping (MiLeNAS 3.3 / 5.1-5.2): conv counting, evaluation-network
parameters against hand counts, the per-size best table, both stop rules and resume on short real searches."""
import json
import shutil

import pytest
import torch
import yaml

from gradnas.checkpoint import load_checkpoint, save_checkpoint
from gradnas.cli import main
from gradnas.config import SearchConfig
from gradnas.errors import GradnasError
from gradnas.search.loop import Search
from gradnas.search.callbacks import ModelSizes
from gradnas.search.sizes import SizeTracker, StopConfig, conv_counts, eval_params_m
from gradnas.space.genotype import Genotype, NB201Genotype, load_genotype
from gradnas.train.genotypes import genotype_from_source
from test_search import tiny_config

DARTS_V2 = load_genotype(
    "normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|sep_conv_3x3~0|sep_conv_3x3~1|+|skip_connect~0|sep_conv_3x3~1|"
    "+|skip_connect~0|dil_conv_3x3~2|;reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~1|skip_connect~2|"
    "+|max_pool_3x3~0|skip_connect~2|+|max_pool_3x3~1|skip_connect~2|")
# convs at the ends of the lists and in the reduction cell, a 5x5 sep and dil conv, skips from the inputs
MIXED = load_genotype(
    "normal=|max_pool_3x3~0|skip_connect~1|+|avg_pool_3x3~1|skip_connect~2|+|skip_connect~0|sep_conv_5x5~3|"
    "+|dil_conv_5x5~2|sep_conv_3x3~4|;reduce=|skip_connect~0|dil_conv_3x3~1|+|sep_conv_5x5~0|skip_connect~1|"
    "+|max_pool_3x3~2|dil_conv_5x5~3|+|avg_pool_3x3~0|skip_connect~4|")
NB_MIXED = NB201Genotype.from_string("|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|"
                                     "nor_conv_3x3~2|")
NB_CONV3 = NB201Genotype.from_string("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|"
                                     "nor_conv_3x3~1|nor_conv_3x3~2|")


# ---- hand counts, written from the networks' definitions (DARTS / NAS-Bench-201 papers), not their code

def darts_params_by_hand(g, *, cells=20, c0=36, classes=10):
    def op(name, c, stride):
        if name.startswith("sep_conv"):  # two (depthwise k x k, pointwise 1x1, BN) blocks
            k = int(name[-1])
            return 2 * (c * k * k + c * c + 2 * c)
        if name.startswith("dil_conv"):
            k = int(name[-1])
            return c * k * k + c * c + 2 * c
        if name == "skip_connect" and stride == 2:  # factorized reduce: two 1x1 convs to c/2 channels, BN
            return c * c + 2 * c
        return 0  # identity, pooling
    total = 3 * 3 * c0 * 9 + 2 * 3 * c0  # stem: 3x3 conv to 3C channels, BN
    c_pp = c_p = 3 * c0
    c = c0
    for k in range(cells):
        reduction = k in (cells // 3, 2 * cells // 3)
        c = 2 * c if reduction else c
        cell = g.reduce if reduction else g.normal
        total += (c_pp * c + 2 * c) + (c_p * c + 2 * c)  # preprocessing: 1x1 conv (or factorized reduce) + BN
        total += sum(op(name, c, 2 if reduction and j < 2 else 1) for name, j in cell)
        c_pp, c_p = c_p, (len(cell) // 2) * c
    return total + c_p * classes + classes


def nb201_params_by_hand(g, *, c0=16, n=5, classes=10):
    kernel = {"nor_conv_1x1": 1, "nor_conv_3x3": 9}
    total = 3 * c0 * 9 + 2 * c0  # stem
    c = c0
    for stage in range(3):
        if stage:  # residual block c -> 2c: two 3x3 ReLU-conv-BN and a 1x1 shortcut conv
            total += c * 2 * c * 9 + 4 * c + 2 * c * 2 * c * 9 + 4 * c + c * 2 * c
            c *= 2
        total += n * sum(c * c * kernel[op] + 2 * c for _, op in g.edges() if op in kernel)
    return total + 2 * c + c * classes + classes  # last BN, classifier


def test_conv_counts_come_from_op_names():
    assert conv_counts(DARTS_V2) == (6, 0)
    assert conv_counts(MIXED) == (3, 3)
    # the same edges listed in another order: the same counts
    swapped = Genotype(tuple(reversed(MIXED.normal)), MIXED.normal_concat, tuple(reversed(MIXED.reduce)),
                       MIXED.reduce_concat)
    assert conv_counts(swapped) == (3, 3)
    assert conv_counts(NB_MIXED) == (3, 0) and conv_counts(NB_CONV3) == (6, 0)
    assert conv_counts(NB201Genotype.from_string("|none~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|none~1|"
                                                 "skip_connect~2|")) == (0, 0)


def test_params_match_hand_counts():
    assert round(eval_params_m(DARTS_V2) * 1e6) == darts_params_by_hand(DARTS_V2) == 3_349_342  # the papers' 3.3M
    assert round(eval_params_m(MIXED) * 1e6) == darts_params_by_hand(MIXED)
    tiny = load_genotype("normal=|sep_conv_3x3~0|dil_conv_3x3~1|+|skip_connect~0|sep_conv_5x5~2|;"
                         "reduce=|skip_connect~0|skip_connect~1|+|dil_conv_5x5~1|max_pool_3x3~2|")
    assert round(eval_params_m(tiny) * 1e6) == darts_params_by_hand(tiny)  # 2 nodes: concat of 2
    assert round(eval_params_m(NB_CONV3) * 1e6) == nb201_params_by_hand(NB_CONV3) == 1_531_546  # NB-201: 1.53 MB
    assert round(eval_params_m(NB_MIXED) * 1e6) == nb201_params_by_hand(NB_MIXED)


def _geno(normal_convs, reduce_convs, variant=0):
    """A 2-node DARTS genotype with the given conv counts; `variant` changes an op, not the counts."""
    fill = ("max_pool_3x3", "avg_pool_3x3")[variant]
    normal = ["sep_conv_3x3"] * normal_convs + [fill] * (4 - normal_convs)
    reduce = ["dil_conv_3x3"] * reduce_convs + ["skip_connect"] * (4 - reduce_convs)
    cell = lambda ops: ((ops[0], 0), (ops[1], 1), (ops[2], 0), (ops[3], 2))
    return Genotype(cell(normal), (2, 3), cell(reduce), (2, 3))


def test_best_genotype_per_size_over_a_synthetic_sequence(tmp_path):
    seq = [(_geno(3, 1), 40.0), (_geno(2, 0), 50.0), (_geno(3, 1, 1), 55.0), (_geno(2, 0, 1), 45.0),
           (_geno(3, 1), 55.0), (_geno(4, 2), 20.0)]
    tracker = SizeTracker()
    records = []
    for epoch, (g, acc) in enumerate(seq, 1):
        line = tracker.update(epoch, g, acc)
        assert line == {"normal_convs": conv_counts(g)[0], "reduce_convs": conv_counts(g)[1],
                        "params_m": round(eval_params_m(g), 6)}
        records.append({"epoch": epoch, "genotype": g.to_string(), "valid_acc": acc})
        tracker.write(tmp_path)
    index = json.loads((tmp_path / "sizes" / "index.json").read_text())
    best = {(e["normal_convs"], e["reduce_convs"]): e for e in index}
    assert [(e["normal_convs"], e["reduce_convs"]) for e in index] == [(4, 2), (3, 1), (2, 0)]
    # 3,1: epoch 3 beat epoch 1, and the tie at epoch 5 keeps epoch 3; 2,0: epoch 4 was worse than epoch 2
    assert (best[3, 1]["epoch"], best[3, 1]["best_valid_acc"], best[3, 1]["epochs_at_size"]) == (3, 55.0, 3)
    assert (best[2, 0]["epoch"], best[2, 0]["best_valid_acc"], best[2, 0]["epochs_at_size"]) == (2, 50.0, 2)
    assert best[3, 1]["params_m"] == round(eval_params_m(_geno(3, 1, 1)), 6)
    for (n, r), g in (((3, 1), _geno(3, 1, 1)), ((2, 0), _geno(2, 0)), ((4, 2), _geno(4, 2))):
        assert best[n, r]["genotype_file"] == f"sizes/size-{n}-{r}.json" and best[n, r]["genotype"] == g.to_string()
        assert load_genotype(tmp_path / best[n, r]["genotype_file"]) == g
        # what `gradnas train --genotype RUN --size N,R` reads
        assert genotype_from_source(str(tmp_path), size=(n, r))[0] == g
    # the state survives a weights-only checkpoint, and replaying the metrics lines rebuilds it
    save_checkpoint({"sizes": tracker.state_dict()}, tmp_path / "c.pt")
    restored = SizeTracker()
    restored.load_state_dict(load_checkpoint(tmp_path / "c.pt")["sizes"])
    replayed = SizeTracker()
    replayed.replay(records)
    assert restored.state_dict() == replayed.state_dict() == tracker.state_dict()
    (tmp_path / "sizes" / "size-9-9.json").write_text("{}")  # a file the state does not hold goes
    restored.write(tmp_path, everything=True)
    assert sorted(p.name for p in (tmp_path / "sizes").iterdir()) == [
        "index.json", "size-2-0.json", "size-3-1.json", "size-4-2.json"]


def test_stop_rules_on_a_synthetic_sequence():
    def first_stop(stop, seq):
        tracker = SizeTracker(stop)
        for epoch, g in enumerate(seq, 1):
            line = tracker.update(epoch, g, 10.0)
            if "stop" in line:
                assert tracker.stopped == line["stop"] and line["stop"]["epoch"] == epoch
                return epoch, line["stop"]
        return None, None

    seq = [_geno(3, 1), _geno(2, 0, 1), _geno(4, 0), _geno(2, 0), _geno(1, 0)]
    epoch, stop = first_stop(StopConfig(at_size=(2, 0)), seq)
    assert epoch == 2 and stop["rule"] == "at_size" and stop["value"] == [2, 0] and "2 conv ops" in stop["reason"]
    assert first_stop(StopConfig(at_size=(0, 0)), seq) == (None, None)
    p = [round(eval_params_m(g), 6) for g in seq]
    assert p[1] == p[3] < p[0] < p[2]
    # below P at epochs 1 and 2, but never at least P before: no stop until epoch 4 (after epoch 3 reached P)
    epoch, stop = first_stop(StopConfig(when_smaller=(p[0] + p[2]) / 2), seq)
    assert epoch == 4 and stop["rule"] == "when_smaller" and "fell to" in stop["reason"]
    assert first_stop(StopConfig(when_smaller=(p[0] + p[1]) / 2), seq)[0] == 2
    assert first_stop(StopConfig(when_smaller=p[0] + 10), seq) == (None, None)  # never above
    nb = [NB_CONV3, NB_MIXED]
    assert first_stop(SearchConfig.from_dict({"space": "nb201", "stop": {"at_size": [3]}}).stop, nb)[0] == 2


def test_stop_config_errors():
    assert SearchConfig.from_dict({"space": "nb201", "stop": {"at_size": [4]}}).stop.at_size == (4, 0)
    assert SearchConfig.from_dict({"stop": {"at_size": [6, 0]}}).to_dict()["stop"] == {"at_size": [6, 0],
                                                                                       "when_smaller": None}
    bad = [({"stop": {"at_size": [6]}}, "give N,R"),
           ({"stop": {"at_size": [6, -1]}}, "two integers >= 0"),
           ({"stop": {"at_size": [1, 2, 3]}}, "two integers >= 0"),
           ({"stop": {"at_size": [9, 0]}}, "at most 8 conv ops"),
           ({"stop": {"at_size": [2, 0]}, "supernet": {"ops": ["max_pool_3x3", "skip_connect"]}}, "at most 0"),
           ({"space": "nb201", "stop": {"at_size": [2, 1]}}, "no searched reduction cell"),
           ({"space": "nb201", "stop": {"at_size": [7]}}, "at most 6"),
           ({"stop": {"when_smaller": 0}}, "when_smaller must be .* > 0"),
           ({"stop": {"at_size": "6,0"}}, "must be a list"),
           ({"stop": {"size": [6, 0]}}, "unknown key 'stop.size'")]
    for d, message in bad:
        with pytest.raises(GradnasError, match=message):
            SearchConfig.from_dict(d)
    for flag in (["--stop-at-size", "6;0"], ["--stop-at-size", "-1,0"]):
        with pytest.raises(SystemExit):
            main(["search", *flag])


# ---- short real searches (Fashion-MNIST slice, tiny supernet); seed 0 derives sizes 3,3 -> 2,3 -> 2,3 with
# evaluation-network params falling 1.58M -> 1.37M -> 1.17M, which the tests read rather than assume

def _lines(run_dir):
    return [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _comparable(lines):
    return [{k: v for k, v in line.items() if k not in ("epoch_time", "stop")} for line in lines]


@pytest.fixture(scope="module")
def free_run(tmp_path_factory):
    """Three epochs without a stop rule: what each stop rule's run is checked against."""
    out = tmp_path_factory.mktemp("sizes") / "free"
    Search(tiny_config(epochs=3, seed=0, threads=1), out, progress=False).run()
    return out


def test_every_epoch_records_its_size_and_the_index_follows(free_run):
    lines = _lines(free_run)
    for line in lines:
        g = load_genotype(line["genotype"])
        assert (line["normal_convs"], line["reduce_convs"]) == conv_counts(g)
        assert line["params_m"] == round(eval_params_m(g), 6)
        assert "stop" not in line
    tracker = SizeTracker()
    tracker.replay(lines)
    assert json.loads((free_run / "sizes" / "index.json").read_text()) == tracker.index()
    assert json.loads((free_run / "summary.json").read_text())["finished"] is True


def test_stop_at_size_on_the_cli_then_resume_past_it(free_run, tmp_path, capsys):
    lines = _lines(free_run)
    n, r = lines[1]["normal_convs"], lines[1]["reduce_convs"]
    assert (lines[0]["normal_convs"], lines[0]["reduce_convs"]) != (n, r)  # so epoch 1 must not stop
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(epochs=3, seed=0, threads=1).to_dict()))
    out = tmp_path / "stopped"
    assert main(["search", "--config", str(config), "--out", str(out), "--quiet", "--stop-at-size", f"{n},{r}"]) == 0
    assert f"stopped after epoch 2 of 3: the derived genotype has {n} conv ops" in capsys.readouterr().out
    stopped = _lines(out)
    assert len(stopped) == 2 and _comparable(stopped) == _comparable(lines[:2])
    assert stopped[1]["stop"]["epoch"] == 2 and stopped[1]["stop"]["rule"] == "at_size"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] is True and summary["epochs_done"] == 2 and summary["stop"] == stopped[1]["stop"]
    # the rule is still set: resuming is refused, saying how to go on
    assert main(["search", "--resume", str(out), "--quiet"]) == 2
    assert "stopped after epoch 2 of 3" in capsys.readouterr().err
    # without it, the search continues past the stop exactly as the free run went on
    assert main(["search", "--resume", str(out), "--quiet", "--set", "stop.at_size=null"]) == 0
    assert _comparable(_lines(out)) == _comparable(lines)
    assert yaml.safe_load((out / "config.yaml").read_text())["stop"]["at_size"] is None
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_done"] == 3 and "stop" not in summary
    assert (out / "sizes" / "index.json").read_text() == (free_run / "sizes" / "index.json").read_text()
    for entry in json.loads((out / "sizes" / "index.json").read_text()):
        assert (out / entry["genotype_file"]).read_text() == (free_run / entry["genotype_file"]).read_text()
    a, b = (load_checkpoint(d / "checkpoint.pt")["sizes"] for d in (out, free_run))
    assert a == b


def test_stop_when_smaller_on_a_real_search(free_run, tmp_path):
    params = [line["params_m"] for line in _lines(free_run)]
    # the first epoch whose params fall below an earlier epoch's; P = that earlier maximum
    k = next(i for i in range(1, len(params)) if params[i] < max(params[:i]))
    p = max(params[:k])
    summary = Search(tiny_config(epochs=3, seed=0, threads=1, stop={"when_smaller": p}), tmp_path,
                     progress=False).run()
    assert summary["epochs_done"] == k + 1 and summary["finished"] and summary["stop"]["rule"] == "when_smaller"
    assert _lines(tmp_path)[-1]["stop"] == summary["stop"] and summary["stop"]["epoch"] == k + 1


def test_resume_from_a_checkpoint_without_the_tracker(free_run, tmp_path):
    """A checkpoint written before the tracker existed: its state is rebuilt from metrics.jsonl."""
    run = tmp_path / "old"
    shutil.copytree(free_run, run)
    state = load_checkpoint(run / "checkpoint.pt")
    expected = state.pop("sizes")
    del state["config"]["stop"]
    save_checkpoint(state, run / "checkpoint.pt")
    shutil.rmtree(run / "sizes")
    search = Search(tiny_config(epochs=3, seed=0, threads=1), run, resume=True, progress=False)
    assert search.callback(ModelSizes).tracker.state_dict() == expected
    assert (run / "sizes" / "index.json").read_text() == (free_run / "sizes" / "index.json").read_text()


def test_sizes_command_prints_the_table_and_draws(free_run, tmp_path, capsys):
    assert main(["sizes", str(free_run), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for entry in json.loads((free_run / "sizes" / "index.json").read_text()):
        row = f"{entry['normal_convs']},{entry['reduce_convs']}"
        assert any(line.split()[:2] == [row, f"{entry['params_m']:.3f}"] and entry["genotype_file"] in line
                   for line in out.splitlines())
    for name in ("sizes-per-epoch.png", "sizes-accuracy.png"):
        assert (tmp_path / name).stat().st_size > 1000 and str(tmp_path / name) in out


def test_nb201_search_counts_its_cell_and_stops_at_n(tmp_path):
    cfg = dict(space="nb201", method="darts", nb201={"cells_per_stage": 1, "channels": 4}, threads=1)
    Search(tiny_config(epochs=1, **cfg), tmp_path / "free", progress=False).run()
    (line,) = _lines(tmp_path / "free")
    g = load_genotype(line["genotype"])
    assert (line["normal_convs"], line["reduce_convs"]) == (conv_counts(g)[0], 0)
    assert line["params_m"] == round(nb201_params_by_hand(g) / 1e6, 6)
    summary = Search(tiny_config(epochs=2, stop={"at_size": [line["normal_convs"]]}, **cfg), tmp_path / "stop",
                     progress=False).run()
    assert summary["epochs_done"] == 1 and summary["stop"]["value"] == [line["normal_convs"], 0]
    assert genotype_from_source(str(tmp_path / "stop"), size=(line["normal_convs"], 0))[0] == g
