#!/usr/bin/env bash
# Install what the demo needs (idempotent) and run it: python -m dit_fx demo.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -e ".[demo]"
exec python3 -m dit_fx demo "$@"
