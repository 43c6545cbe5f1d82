"""The package as users get it: `python -m build` makes a wheel, which installs into a fresh venv and runs
`gradnas --version`, `gradnas --help` and a one-epoch tiny search from the installed files alone.

How the fresh venv gets its dependencies, fast and offline: it is made without pip (``venv --without-pip``), a
``.pth`` file in its site-packages appends this interpreter's site-packages (torch, numpy, ... already installed),
and this interpreter's pip installs the wheel into it (``pip --python VENV install --no-deps --no-index``). The
venv's own site-packages comes first on sys.path, so `gradnas` is the wheel's, never the source tree or an
editable install (a path added by a .pth file has its own .pth files ignored, so the editable hook of the
appended site-packages does not run). The project is copied first, so building leaves the work tree untouched.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FMNIST = "/usr/share/datasets/fashion-mnist"


def _run(argv, *, cwd, timeout=300):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def test_wheel_builds_installs_and_searches(tmp_path):
    pytest.importorskip("build", reason="the `build` package (in the test extra: pip install -e '.[test]')")
    t0 = time.time()
    src = tmp_path / "project"
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", tmp_path / "dist", src], cwd=src)
    wheels = list((tmp_path / "dist").glob("gradnas-*.whl"))
    assert len(wheels) == 1
    names = zipfile.ZipFile(wheels[0]).namelist()
    for needed in ("gradnas/py.typed", "gradnas/configs/quick.yaml", "gradnas/benchmark/nb201-test-accuracy.csv.gz"):
        assert needed in names, needed
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    metadata = zipfile.ZipFile(wheels[0]).read(meta).decode()
    assert "License-Expression: MIT" in metadata and "Provides-Extra: draw" in metadata
    assert "Requires-Dist: graphviz; extra == \"draw\"" in metadata
    assert not any(line.startswith("Requires-Dist: graphviz") and "extra" not in line for line in metadata.splitlines())
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path).stdout.strip()
    Path(site, "_gradnas_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--quiet",
          wheels[0]], cwd=tmp_path)

    where = _run([python, "-c", "import gradnas; print(gradnas.__file__)"], cwd=tmp_path).stdout.strip()
    assert where.startswith(site), where  # the wheel's copy, not the source tree
    gradnas = venv / "bin" / "gradnas"
    assert _run([gradnas, "--version"], cwd=tmp_path).stdout.strip() == "gradnas 0.1.0"
    assert "search" in _run([gradnas, "--help"], cwd=tmp_path).stdout
    out = tmp_path / "run"
    done = _run([gradnas, "search", "--threads", "1", "--epochs", "1", "--cells", "3", "--channels", "4",
                 "--batch-size", "32", "--set", "data.subset=128", "--data-dir", FMNIST, "--quiet", "--out", out],
                cwd=tmp_path)
    assert (out / "summary.json").is_file() and (out / "best-genotype.json").is_file(), done.stderr
    print(f"wheel test: {time.time() - t0:.1f} s")
