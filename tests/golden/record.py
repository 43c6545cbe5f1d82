"""Record tests/golden/golden.json from this checkout (see tests/test_golden.py). Run from the repository root:
.venv/bin/python tests/golden/record.py [CASE ...]  (no names: every case)."""
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_golden import CASES, GOLDEN, run_case  # noqa: E402

names = sys.argv[1:] or sorted(CASES)
golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
with tempfile.TemporaryDirectory() as tmp:
    for name in names:
        torch.set_num_threads(1)
        golden[name] = json.loads(json.dumps(run_case(name, Path(tmp) / name)))
        print(name, golden[name].get("genotype", golden[name]["summary"].get("test_acc")), flush=True)
GOLDEN.write_text(json.dumps(golden, indent=0, sort_keys=True) + "\n")
