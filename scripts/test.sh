#!/usr/bin/env bash
# Run as: bash scripts/test.sh [pytest args]   -- set-up (see setup.sh), then the whole test suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# chromium: the web UI test drives a real browser (Debian's, never `playwright install`).
TABVLM_EXTRA_APT="chromium ${TABVLM_EXTRA_APT:-}" bash scripts/setup.sh
.venv/bin/ruff check tabvlm tests bench scripts
# -n 2: both cores; pytest exits 5 when it collects no test, which fails this script too.
OMP_NUM_THREADS=1 .venv/bin/python -m pytest -n 2 -p no:cacheprovider "$@"
