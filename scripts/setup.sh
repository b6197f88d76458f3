#!/usr/bin/env bash
# One-time set-up on a fresh Debian machine, safe to run again (fast when nothing changed):
# Debian fonts for the table renderer, a virtualenv in .venv, torch (CPU 2.13.0 where none is
# present), and tabvlm with its dev extras. Sourced by scripts/demo.sh and scripts/test.sh.
# Run as: bash scripts/setup.sh   -- prints one line a step; apt's and pip's output goes to
# .venv/setup.log, whose tail is printed when a step fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

FONT_PKGS="fonts-noto-cjk fonts-wqy-microhei fonts-wqy-zenhei fonts-dejavu-core fonts-liberation2"
EXTRA_PKGS=${TABVLM_EXTRA_APT:-}
LOG=.venv/setup.log
mkdir -p .venv
did=0  # steps run; the log is started afresh by the first, so an up-to-date run keeps the last one

step() {  # step "what is being done": one line on stdout, a header in the log
  [ "$did" -eq 0 ] && : >"$LOG"
  did=$((did + 1))
  echo "setup: $1"
  printf '\n== %s\n' "$1" >>"$LOG"
}

fail() {
  echo "setup: failed: $1. The last lines of $LOG:" >&2
  tail -n 25 "$LOG" | sed 's/^/  | /' >&2
  echo "setup: the whole log: $LOG" >&2
  exit 1
}

quiet() { "$@" >>"$LOG" 2>&1; }  # a command whose output belongs in the log only

apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  step "apt-get install ${missing[*]}"
  quiet $sudo apt-get update || fail "apt-get update"
  quiet $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" \
    || fail "apt-get install ${missing[*]}"
}

if command -v apt-get >/dev/null 2>&1; then
  # shellcheck disable=SC2086
  apt_install $FONT_PKGS $EXTRA_PKGS
else
  echo "setup: no apt-get; install CJK + Latin TTF fonts yourself or point TABVLM_FONT_DIR at a folder of them"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  step "creating the virtualenv .venv ($PY)"
  quiet "$PY" -m venv .venv || fail "$PY -m venv .venv"
fi
VPY=.venv/bin/python

# The stamp: pip runs again only when pyproject.toml changed (or a previous install failed).
stamp=.venv/.tabvlm-setup
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  step "upgrading pip"
  quiet $VPY -m pip install --upgrade pip || fail "pip install --upgrade pip"
  # Users bring their own (CUDA) torch; where none is present, take the CPU build 2.13.0.
  if ! $VPY -c "import torch" >/dev/null 2>&1; then
    step "installing torch 2.13.0 (a few minutes the first time)"
    quiet $VPY -m pip install torch==2.13.0 || fail "pip install torch==2.13.0"
  fi
  step "installing tabvlm and its dev extras (pip install -e .[dev])"
  quiet $VPY -m pip install -e ".[dev]" || fail "pip install -e .[dev]"
  quiet $VPY -c "import torch, tabvlm" || fail "import torch, tabvlm"
  echo "$want" >"$stamp"
fi

if [ "$did" -eq 0 ]; then
  echo "setup: up to date (.venv)"
else
  echo "setup: done ($did steps; the full log: $LOG)"
fi
