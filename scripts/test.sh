#!/usr/bin/env bash
# Install if needed, then run the test suite (real-data tests skip when ../shared is absent).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m pytest -q "$@"
