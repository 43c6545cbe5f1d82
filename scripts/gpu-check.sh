#!/usr/bin/env bash
# The one prepared GPU check of gradnas (issue 20): the device-aware tests on CUDA, then gradnas bench on both
# spaces at batch 64 and 256 beside the two reference implementations on the same GPU, then the compiled and
# bf16 search steps. Budget: under 8 minutes on one H200-class GPU (2 + 2.8 + 3 minutes at most: each part has
# its own time limit, and a part that fails or times out does not stop the next). Not yet run on a GPU.
#
# Prepare on the CPU machine, in the repo root (the folder .refs/ is git-ignored through .git/info/exclude):
#     bash scripts/gpu-check.sh --prepare
# which copies the MiLeNAS checkout ($MILENAS_REPO, default /work/refs/milenas), the xautodl package (from
# $XAUTODL_PYTHON's site-packages, default /work/refs/xautodl-venv/bin/python) and ../shared/bench-refs into
# .refs/. Then on the GPU machine (device tool: carry .refs):
#     bash scripts/gpu-check.sh [OUTDIR]          # OUTDIR defaults to $OUT, else gpu-check/
# It needs a python3 with a CUDA build of torch, numpy, PyYAML, Pillow, tqdm and pytest-xdist (the device
# image has them); gradnas runs from src/ (PYTHONPATH), so nothing is installed.
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--prepare" ]]; then
    set -e
    repo=${MILENAS_REPO:-/work/refs/milenas}
    py=${XAUTODL_PYTHON:-/work/refs/xautodl-venv/bin/python}
    mkdir -p .git/info && { grep -qx '/.refs/' .git/info/exclude 2>/dev/null || echo '/.refs/' >> .git/info/exclude; }
    rm -rf .refs && mkdir -p .refs/site
    cp -r "$repo" .refs/milenas
    cp -r "$("$py" -c 'import os, xautodl; print(os.path.dirname(xautodl.__file__))')" .refs/site/xautodl
    cp -r ../shared/bench-refs .refs/bench-refs
    du -sh .refs
    exit 0
fi

dest=${1:-${OUT:-gpu-check}}
out=$(mktemp -d /tmp/gpu-check.XXXX)  # everything goes here, then into one archive in $dest (the device tool
mkdir -p "$dest"                      # brings back at most 8 files)
finish() { tar -C "$out" -czf "$dest/gpu-check.tgz" . && cp "$out/summary.txt" "$dest/" 2>/dev/null; }
trap finish EXIT
export PYTHONPATH="$PWD/src:$PWD/.refs/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
log() { echo "== $(date +%T) $*" | tee -a "$out/summary.txt"; }

"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))" \
    | tee "$out/device.txt" || { echo "gpu-check: no CUDA device visible to $PY"; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$out/device.txt" 2>/dev/null || true

# 1. The device-aware tests (those taking the `device` fixture, tests/conftest.py) on CUDA: the methods'
#    gradients against autograd / finite differences, no host sync inside a step, the prefetcher, bf16, and
#    the compiled step bit for bit against eager (aot_eager); then the inductor comparison (GRADNAS_TEST_COMPILE).
log "tests on cuda"
GRADNAS_TEST_DEVICE=cuda timeout 60 "$PY" -m pytest -q -n 4 -p no:cacheprovider tests/test_methods.py \
    tests/test_step_perf.py > "$out/tests.log" 2>&1
log "tests rc=$? ($(tail -1 "$out/tests.log"))"
GRADNAS_TEST_DEVICE=cuda GRADNAS_TEST_COMPILE=full timeout 60 "$PY" -m pytest -q -p no:cacheprovider \
    tests/test_step_perf.py -k "compiled or inductor" > "$out/tests-compile.log" 2>&1
log "compile tests rc=$? ($(tail -1 "$out/tests-compile.log"))"

# 2. gradnas beside the references, batch 64 and 256, one process at a time (scripts/bench-refs.py).
log "bench beside the references"
timeout 170 "$PY" scripts/bench-refs.py --device cuda --batch 64 --batch 256 --rounds 1 --steps 5 --warmup 3 \
    --milenas-repo .refs/milenas --xautodl-python "$PY" --refs .refs/bench-refs --python "$PY" \
    --out "$out/bench-refs.json" --md "$out/bench-refs.md" > "$out/bench-refs.log" 2>&1
log "bench-refs rc=$?"

# 3. The compiled (CUDA graphs) and bf16 search steps, DARTS-space MiLeNAS-1st / DARTS-2nd and NB-201 GDAS.
for space in "darts --relax softmax --methods milenas,darts:2" "nb201 --relax gumbel --methods darts"; do
    for variant in "--compile reduce-overhead" "--precision bf16"; do
        name=$(echo "${space%% *}_${variant#--}" | tr ' ' '_')
        log "bench --space $space $variant"
        timeout 45 "$PY" -m gradnas bench --device cuda --space $space $variant --sweep batch=64,256 \
            --steps 5 --warmup 3 --out "$out/bench_${name}.json" > "$out/bench_${name}.log" 2>&1
        log "rc=$?"
    done
done
log "done"
