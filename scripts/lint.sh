#!/usr/bin/env bash
# Lint, format check and type check (what CI runs before the tests; pre-commit runs the same tools).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check src tests flows scripts benchmarks
.venv/bin/ruff format --check src tests flows scripts benchmarks
.venv/bin/mypy
