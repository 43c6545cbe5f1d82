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

# Graphviz's `dot` draws cell diagrams (gradnas draw/plot/report); everything else works without it.
if ! command -v dot >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get install -y -q graphviz >/dev/null 2>&1 || echo "note: could not install graphviz (dot); cell diagrams will be unavailable" >&2
fi

FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null
  else
    echo "note: Fashion-MNIST is not in $FMNIST and apt-get (as root) is not available;" \
         "install the Debian package dataset-fashion-mnist or pass --data-dir." >&2
  fi
fi
