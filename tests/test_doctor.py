"""`gradnas doctor`: the environment report, and what it says when something is missing."""
import json
import sys

import torch

import gradnas.data.sources as sources
from gradnas.cli import main


def _checks(capsys, *args):
    rc = main(["doctor", "--json", *args])
    out = capsys.readouterr()
    return rc, {c["name"]: c for c in json.loads(out.out)}, out.err


def test_doctor_reports_this_environment(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, checks, err = _checks(capsys)
    assert rc == 0 and err == ""
    assert {"gradnas", "python", "torch", "device", "threads", "numpy", "Pillow", "PyYAML", "matplotlib", "graphviz",
            "dot", "fashion-mnist", "cifar10", "nb201 table", "runs folder", "data cache"} <= set(checks)
    assert checks["torch"]["detail"].startswith(torch.__version__)
    assert f"torch uses {torch.get_num_threads()} of" in checks["threads"]["detail"]
    assert checks["nb201 table"]["detail"].startswith("15625 cells")
    assert checks["runs folder"]["status"] == "ok" and str(tmp_path / "runs") in checks["runs folder"]["detail"]
    assert checks["cifar10"]["status"] == "warn"  # no default copy relative to an empty folder
    assert not list(tmp_path.iterdir())  # the writability probe leaves nothing behind


def test_doctor_names_what_is_missing_and_the_fix(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "FASHION_DEFAULT_DIR", tmp_path / "no-fmnist")
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot
    monkeypatch.setitem(sys.modules, "graphviz", None)  # as if the package were not installed
    monkeypatch.setenv("GRADNAS_CACHE", str(tmp_path / "a-file" / "cache"))
    (tmp_path / "a-file").write_text("")
    rc, checks, err = _checks(capsys)
    assert rc == 1 and "missing: graphviz, fashion-mnist, data cache" in err
    assert checks["fashion-mnist"]["status"] == "missing"
    assert "apt-get install dataset-fashion-mnist" in checks["fashion-mnist"]["detail"]
    assert checks["dot"]["status"] == "warn" and "apt-get install graphviz" in checks["dot"]["detail"]
    assert "pip install graphviz" in checks["graphviz"]["detail"]
    assert "GRADNAS_CACHE" in checks["data cache"]["detail"]


def test_doctor_table(capsys):
    main(["doctor"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["gradnas", "ok"] and any(l.startswith("torch ") for l in lines)
