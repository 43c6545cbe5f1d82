#!/usr/bin/env bash
# Set up a fresh machine for gradnas: a venv in .venv with torch 2.13.0 (the CPU build where a local
# wheel is offered), gradnas itself (editable) with its test extra, and the Fashion-MNIST IDX files
# (Debian package dataset-fashion-mnist) when they are missing and apt can install them.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install -q torch==2.13.0
fi
.venv/bin/pip install -q -e ".[test]"

# Debian packages, installed when missing and apt-get (as root) is available: the Fashion-MNIST IDX files
# (dataset-fashion-mnist) for the default search, Graphviz's `dot` for cell diagrams (draw/plot/report).
FMNIST=/usr/share/datasets/fashion-mnist
missing=()
[ -f "$FMNIST/train-images-idx3-ubyte.gz" ] || missing+=(dataset-fashion-mnist)
command -v dot >/dev/null 2>&1 || missing+=(graphviz)
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; } ||
      echo "note: apt-get could not install ${missing[*]}" >&2
  else
    echo "note: missing ${missing[*]} and apt-get (as root) is not available; install the Debian" \
         "package(s) ${missing[*]} (or pass --data-dir for the data)." >&2
  fi
fi
