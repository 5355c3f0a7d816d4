#!/usr/bin/env bash
# Install what the tests need (idempotent; torch pinned to the CPU build) and run them.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -e ".[test]"
# -n auto: one worker per core (pass -n 0 to run serially).
exec python3 -m pytest -q -p no:cacheprovider -n auto "$@"
