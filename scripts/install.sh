#!/usr/bin/env bash
# Create .venv (Python 3.11) and install howlow with its pinned dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  echo "[install] creating .venv with $python"
  "$python" -m venv .venv
fi
if ! .venv/bin/python -c "import howlow, torch, mlflow, prefect, great_expectations, dvc, pytest" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.howlow-installed ]; then
  echo "[install] installing howlow and its dependencies (torch==2.14.1 is large; minutes the first time)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"  # dev: pytest, ruff, mypy, pre-commit
  touch .venv/.howlow-installed
fi
