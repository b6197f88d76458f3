#!/usr/bin/env bash
# One-time set-up on a fresh Debian machine, safe to run again (fast when nothing changed):
# Debian fonts for the table renderer, a virtualenv in .venv, torch (CPU 2.13.0 where none is
# present), and tabvlm with its dev extras. Sourced by scripts/demo.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

FONT_PKGS="fonts-noto-cjk fonts-wqy-microhei fonts-wqy-zenhei fonts-dejavu-core fonts-liberation2"
EXTRA_PKGS=${TABVLM_EXTRA_APT:-}

apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "setup: apt-get install ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

if command -v apt-get >/dev/null 2>&1; then
  # shellcheck disable=SC2086
  apt_install $FONT_PKGS $EXTRA_PKGS
else
  echo "setup: no apt-get; install CJK + Latin TTF fonts yourself or point TABVLM_FONT_DIR at a folder of them"
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python

# pip's output is kept short; a failure still prints pip's error.
stamp=.venv/.tabvlm-setup
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  $VPY -m pip install -q --upgrade pip 2>&1 | grep -v -i "warning" || true
  # Users bring their own (CUDA) torch; where none is present, take the CPU build 2.13.0.
  $VPY -c "import torch" 2>/dev/null || $VPY -m pip install -q torch==2.13.0 2>&1 | grep -v -i "warning" || true
  $VPY -m pip install -q -e ".[dev]" 2>&1 | grep -v -i "warning" || true
  $VPY -c "import torch, tabvlm" || { echo "setup: install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
