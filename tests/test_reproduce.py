"""`gradnas reproduce`: every shipped experiment spec runs end to end at its tiny budget (searches, training
where the spec has it, the report beside the paper's numbers), resumes without redoing finished runs, and bad
specs are refused by name before anything runs."""
import json

import pytest
import yaml

from gradnas.cli import main
from gradnas.errors import GradnasError
from gradnas.reproduce import MEASURES, load_spec, parse_spec, reproduce, shipped_specs
from gradnas.reproduce.runner import broken_pairs
from gradnas.report.run import load_run

FMNIST = "/usr/share/datasets/fashion-mnist"
DATA = {"dataset": "fashion-mnist", "data_dir": FMNIST}
# measures a spec's tiny budget cannot fill: none today (every measure of every shipped spec must be measured)
SHIPPED = shipped_specs()


def test_the_paper_results_the_issue_names_are_shipped():
    assert {"milenas-fig2a", "milenas-fig2b", "milenas-fig3", "milenas-table1", "single-level-table1",
            "single-level-table3", "single-level-figs2-4", "pvll-table3", "pvll-table4",
            "pvll-table5"} <= set(SHIPPED)
    for name in SHIPPED:
        spec = load_spec(name)
        assert set(spec.budgets) == {"tiny", "proxy", "paper"}, name
        assert spec.budgets["proxy"].note and spec.budgets["proxy"].hours, name


@pytest.mark.parametrize("name", SHIPPED)
def test_every_spec_runs_end_to_end_at_the_tiny_budget(name, tmp_path):
    out = tmp_path / name
    result = reproduce(name, out, budget="tiny", in_process=True, progress=False,
                       sets={"threads": 1}, **DATA)
    spec = load_spec(name)
    assert result["failed"] == []
    results = json.loads((out / "results.json").read_text())
    assert set(results["runs"]) == set(spec.runs)
    for run, r in results["runs"].items():
        assert r["finished"] == len(spec.budgets["tiny"].seeds) == len(r["folders"])
        for m in spec.measures:  # every column of the table is measured, none n/a
            assert r["measures"][m]["mean"] is not None, (name, run, m)
        for folder in r["folders"]:  # each run is the search the spec describes, with the tiny budget applied
            saved = yaml.safe_load((out / "search" / folder / "config.yaml").read_text())
            assert saved["data"]["dataset"] == "fashion-mnist" and saved["threads"] == 1
            for key, value in spec.runs[run].items():
                if key == "config":
                    continue
                node = saved
                for part in key.split(".")[:-1]:
                    node = node[part]
                override = spec.budgets["tiny"].runs.get(run, {}).get(key, value)
                assert node[key.split(".")[-1]] == override, (name, run, key)
        if spec.train is not None:
            for folder in r["folders"]:
                summary = json.loads((out / "train" / folder / "summary.json").read_text())
                assert summary["finished"] and 0 <= summary["test_acc"] <= 100
    report = (out / "report.md").read_text()
    assert spec.title in report and "--budget tiny" in report
    for values in spec.paper_values.values():  # the paper's figures stand beside ours
        for text in values.values():
            assert text in report
    assert len(results["expect"]) == len(spec.expect)
    assert all(c["holds"] in (True, False) for c in results["expect"])


def test_the_order_check_needs_strict_differences():
    assert broken_pairs(["a", "b", "c"], [3.0, 2.0, 1.0]) == []
    assert broken_pairs(["a", "b", "c"], [3.0, 3.0, 1.0]) == [("a", "b")]
    assert broken_pairs(["a", "b", "c"], [1.0, 2.0, 3.0], higher_first=False) == []
    assert broken_pairs(["a", "b", "c"], [1.0, 0.5, 3.0], higher_first=False) == [("a", "b")]


def _spec(**changes):
    d = {"title": "t", "paper": "p", "base": "milenas-1st", "runs": {"a": {"lambda": 0.5}, "b": {}},
         "measures": ["best_valid_acc"],
         "budgets": {"tiny": {"set": {"epochs": 1, "batch_size": 16, "data.subset": 64, "data.eval_batches": 1,
                                      "supernet.cells": 3, "supernet.channels": 4, "supernet.nodes": 2}}}}
    d.update(changes)
    return d


def test_a_user_spec_runs_resumes_and_keeps_its_folder(tmp_path):
    spec_file = tmp_path / "mine.yaml"
    spec_file.write_text(yaml.safe_dump(_spec(expect=[{"measure": "best_valid_acc", "order": ["a", "b"]}])))
    out = tmp_path / "out"
    argv = ["reproduce", str(spec_file), "--budget", "tiny", "--out", str(out), "--in-process", "--quiet",
            "--dataset", "fashion-mnist", "--data-dir", FMNIST, "--set", "threads=1"]
    assert main(argv) == 0
    run_a = load_run(out / "search" / "a-s0")
    assert run_a.config["lambda"] == 0.5 and run_a.finished
    metrics = (out / "search" / "a-s0" / "metrics.jsonl").read_bytes()
    first = json.loads((out / "results.json").read_text())
    assert main(argv) == 0  # again: nothing is rerun, the same results
    assert (out / "search" / "a-s0" / "metrics.jsonl").read_bytes() == metrics
    assert json.loads((out / "results.json").read_text()) == first
    best = {r: first["runs"][r]["measures"]["best_valid_acc"]["mean"] for r in ("a", "b")}
    assert best == {"a": run_a.best_valid_acc, "b": load_run(out / "search" / "b-s0").best_valid_acc}
    assert first["expect"][0]["holds"] == (best["a"] > best["b"])
    # another budget or spec into the same folder is refused
    other = tmp_path / "other.yaml"
    other.write_text(spec_file.read_text())
    with pytest.raises(GradnasError, match="holds spec mine at budget tiny"):
        reproduce(str(other), out, budget="tiny", in_process=True, progress=False, **DATA)


@pytest.mark.parametrize("change, needle", [
    ({"colour": 1}, "unknown key(s) colour"),
    ({"measures": ["accuracy"]}, "unknown measure 'accuracy'"),
    ({"measures": ["test_error"]}, "come from training runs; add train"),
    ({"runs": {"a/b": {}}}, "must be a plain word"),
    ({"budgets": {"huge": {}}}, "budget 'huge' is not one of tiny, proxy, paper"),
    ({"budgets": {"tiny": {"runs": {"c": {}}}}}, "names 'c', which is not a run"),
    ({"budgets": {"tiny": {"seeds": [0, 0]}}}, "distinct integers"),
    ({"paper_values": {"a": {"gap": 1}}}, "'gap' is not among the spec's measures"),
    ({"expect": [{"measure": "best_valid_acc", "order": ["a", "z"]}]}, "two or more of the spec's runs"),
])
def test_bad_specs_are_refused_by_name(change, needle):
    with pytest.raises(GradnasError) as e:
        parse_spec(_spec(**change), name="bad")
    assert needle in str(e.value)


def test_a_run_setting_no_component_reads_is_refused_before_anything_runs(tmp_path):
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(yaml.safe_dump(_spec(runs={"a": {"pvll.steps": 3}}), sort_keys=False))
    with pytest.raises(GradnasError, match=r"run a \(budget tiny\).*pvll"):
        reproduce(str(spec_file), tmp_path / "out", budget="tiny", in_process=True, progress=False, **DATA)
    assert not (tmp_path / "out").exists()
    with pytest.raises(GradnasError, match=r"--set seed=\.\.\.: the seeds are the budget's"):
        reproduce(str(spec_file), tmp_path / "out", budget="tiny", in_process=True, sets={"seed": 3}, **DATA)


def test_cli_lists_the_specs_and_refuses_a_bad_budget(capsys, tmp_path):
    from conftest import cli_fails
    assert main(["reproduce", "--list"]) == 0
    listing = capsys.readouterr().out
    for name in SHIPPED:
        assert f"{name}: {load_spec(name).title}" in listing
    assert "--budget proxy" in listing and "--budget paper" in listing
    cli_fails(capsys, ["reproduce", "milenas-fig2a", "--budget", "huge", "--out", tmp_path / "x"],
              "--budget 'huge'", "tiny, proxy, paper")
    cli_fails(capsys, ["reproduce", "no-such-spec", "--out", tmp_path / "x"], "no experiment spec 'no-such-spec'")
    assert not (tmp_path / "x").exists()
    assert set(MEASURES) >= {"gap_mean", "nb201_cifar10", "test_error", "test_kendall_tau"}
