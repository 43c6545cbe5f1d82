"""The best cell of a search (best-genotype.json, every method and both spaces, exact after a resume) and
`gradnas train --genotype RUN --pick best|last`."""
import json

import pytest
import torch

from gradnas.cli import main
from gradnas.config import SearchConfig
from gradnas.errors import GradnasError
from gradnas.search.best import best_from_records, read_best
from gradnas.search.loop import Search
from gradnas.space.genotype import load_genotype, save_genotype
from test_search import FMNIST, tiny_config


@pytest.fixture(autouse=True)
def _one_thread(_threads):
    torch.set_num_threads(1)


def _lines(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _expected_best(lines, key="valid_acc"):
    """The first line with the highest accuracy (ties: the earlier epoch)."""
    measured = [m for m in lines if m.get(key) is not None]
    top = max(m[key] for m in measured)
    return next(m for m in measured if m[key] == top)


def _pvll_config(space):
    return SearchConfig.from_dict({
        "method": "pvll", "order": 2, "space": space, "batch_size": 16, "seed": 3, "device": "cpu", "threads": 1,
        "data": {"dataset": "fashion-mnist", "data_dir": FMNIST, "subset": 96},
        "supernet": {"cells": 3, "channels": 4, "nodes": 2}, "nb201": {"cells_per_stage": 1, "channels": 4},
        "pvll": {"population": 3, "steps": 3, "hidden": 8, "warmup_updates": 5, "estimator_updates": 2,
                 "train_batches": 2, "val_batches": 1}})


CASES = {
    "darts-milenas": lambda: tiny_config(method="milenas", epochs=4),
    "nb201-darts-gumbel": lambda: tiny_config(method="darts", space="nb201", relax="gumbel", epochs=4,
                                               nb201={"cells_per_stage": 1, "channels": 4}),
    "pvll-nb201": lambda: _pvll_config("nb201"),
    "pvll-darts": lambda: _pvll_config("darts"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_best_genotype_is_the_best_unit_and_survives_a_resume(tmp_path, case):
    cfg = CASES[case]()
    Search(cfg, tmp_path / "full", progress=False).run()
    full = tmp_path / "full"
    lines = _lines(full)
    pvll = cfg.method == "pvll"
    best = _expected_best(lines, "measured_acc" if pvll else "valid_acc")
    genotype, selected = read_best(full)
    assert selected["epoch"] == best["epoch"]
    assert selected["by"] == ("measured_acc" if pvll else "valid_acc")
    assert selected["valid_acc"] == (best["measured_acc"] if pvll else best["valid_acc"])
    if pvll and cfg.space == "nb201":  # the sampled cell of that round: its benchmark figures are in the line
        from gradnas.benchmark.nb201 import lookup
        assert lookup(genotype) == best["sampled_nb201"]
    elif not pvll:
        assert genotype.to_string() == best["genotype"]
    # Interrupted after one unit, then resumed: the same best-genotype.json as the uninterrupted run.
    part = tmp_path / "part"
    Search(cfg, part, progress=False).run(stop_after=1)
    assert (part / "best-genotype.json").is_file() or pvll  # pvll's first round measures nothing
    Search(cfg, part, resume=True, progress=False).run()
    assert (part / "best-genotype.json").read_text() == (full / "best-genotype.json").read_text()


def test_best_before_the_file_existed_is_chosen_from_the_metrics(tmp_path):
    lines = [{"epoch": 1, "valid_acc": 40.0, "genotype": "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"},
             {"epoch": 2, "valid_acc": 55.5, "genotype": "|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|"},
             {"epoch": 3, "valid_acc": 55.5, "genotype": "|nor_conv_1x1~0|+|none~0|none~1|+|none~0|none~1|none~2|"},
             {"epoch": 4, "valid_acc": 30.0, "genotype": "|avg_pool_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"}]
    genotype, selected = best_from_records(lines)
    assert selected["epoch"] == 2 and selected["valid_acc"] == 55.5  # the tie goes to the earlier epoch
    assert genotype.to_string() == lines[1]["genotype"]
    assert best_from_records([{"epoch": 1, "measured_acc": 3.0}]) is None


# ---- gradnas train --pick

TRAIN = ["--threads", "1", "--epochs", "1", "--cells", "3", "--channels", "4", "--batch-size", "32", "--set",
         "data.subset=64", "--set", "data.test_subset=256", "--quiet"]  # 256 of the 10k test images


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory):
    """A finished tiny DARTS-space search whose best epoch is made to differ from its last one (the files of the
    best are rewritten to another epoch's genotype, as a search whose validation accuracy peaked early)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("searched") / "run"
    Search(tiny_config(method="milenas", epochs=2), out, progress=False).run()
    best = load_genotype("normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|skip_connect~0|sep_conv_3x3~1|;"
                         "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|skip_connect~2|")
    assert best != load_genotype(out / "genotype.json")
    path = out / "best-genotype.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**best.to_dict(), "selected": {**data["selected"], "epoch": 1, "valid_acc": 77.25}}))
    return out, best


def test_train_picks_the_best_epoch_by_default_and_says_so(tmp_path, finished_search, capsys):
    run, best = finished_search
    assert main(["train", "--genotype", str(run), "--out", str(tmp_path / "t"), *TRAIN]) == 0
    err = capsys.readouterr().err
    assert "best-genotype.json" in err and "epoch 1" in err and "valid acc 77.25" in err
    assert load_genotype(tmp_path / "t" / "genotype.json") == best
    assert main(["train", "--genotype", str(run), "--pick", "last", "--out", str(tmp_path / "l"), *TRAIN]) == 0
    err = capsys.readouterr().err
    last = _lines(run)[-1]
    assert f"epoch {last['epoch']}" in err and f"valid acc {last['valid_acc']:.2f}" in err
    assert load_genotype(tmp_path / "l" / "genotype.json") == load_genotype(run / "genotype.json") != best


def test_pick_best_of_an_older_run_comes_from_its_metrics(tmp_path, finished_search, capsys):
    run, _ = finished_search
    older = tmp_path / "older"
    older.mkdir()
    for name in ("config.yaml", "genotype.json", "summary.json", "checkpoint.pt"):
        (older / name).write_bytes((run / name).read_bytes())
    lines = _lines(run)
    lines[0]["valid_acc"] = 99.0  # epoch 1 is the best now
    (older / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    assert main(["train", "--genotype", str(older), "--out", str(tmp_path / "t"), *TRAIN]) == 0
    err = capsys.readouterr().err
    assert "computed from" in err and "metrics.jsonl (no best-genotype.json)" in err and "epoch 1" in err and "valid acc 99.00" in err
    assert load_genotype(tmp_path / "t" / "genotype.json") == load_genotype(lines[0]["genotype"])
    # no genotype + accuracy in the records: said plainly, with the way out
    (older / "metrics.jsonl").write_text("".join(json.dumps({"epoch": m["epoch"]}) + "\n" for m in lines))
    assert main(["train", "--genotype", str(older), "--out", str(tmp_path / "u"), *TRAIN]) == 2
    err = capsys.readouterr().err
    assert "no best-genotype.json" in err and "--pick last" in err and len(err.strip().splitlines()) == 1


def test_pick_is_refused_without_a_run_folder(tmp_path, finished_search, capsys):
    run, best = finished_search
    save_genotype(best, tmp_path / "g.json")
    for source in (str(tmp_path / "g.json"), best.to_string()):
        assert main(["train", "--genotype", source, "--pick", "best", *TRAIN]) == 2
        err = capsys.readouterr().err
        assert "--pick chooses the epoch of a search run folder" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "--genotype", str(run), "--pick", "best", "--size", "4,2", *TRAIN]) == 2
    assert "--pick and --size" in capsys.readouterr().err


def test_a_training_run_folder_is_no_search_to_pick_from(tmp_path, finished_search, capsys):
    run, _ = finished_search
    out = tmp_path / "t"
    assert main(["train", "--genotype", str(run), "--out", str(out), *TRAIN]) == 0
    capsys.readouterr()
    assert main(["train", "--genotype", str(out), *TRAIN]) == 2
    err = capsys.readouterr().err
    assert "is a training run folder, not a search" in err and len(err.strip().splitlines()) == 1
