#!/usr/bin/env bash
# Label Studio (the server) in its own venv, .venv-ls: it pins its own Django stack, which must not
# meet howlow's (.venv). Only the tests and the README's annotation commands use it. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
version=1.23.2
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv-ls/bin/python ]; then
  echo "[install-ls] creating .venv-ls with $python"
  "$python" -m venv .venv-ls
fi
if ! .venv-ls/bin/python -c "import label_studio, sys; sys.exit(label_studio.__version__ != '$version')" 2>/dev/null; then
  echo "[install-ls] installing label-studio==$version into .venv-ls (a few minutes the first time)"
  .venv-ls/bin/python -m pip install -q --upgrade pip
  .venv-ls/bin/python -m pip install -q "label-studio==$version"
fi
