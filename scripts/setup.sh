#!/usr/bin/env bash
# Set up mmrec in ./.venv: Python venv, PyTorch (pinned: these builds are served from the local disk here;
# an unpinned torch pulls a multi-GB CUDA build), then mmrec itself, editable, with the test extras.
# Safe to run again: an existing .venv is reused and pip skips what is installed.
# Chromium (mmrec.datasets.browser_pages, the second screen renderer) comes from apt when missing and we are
# root with apt-get; otherwise a one-line note, and its tests skip.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-liberation fonts-dejavu-core) \
      >/dev/null 2>&1 || echo "setup: apt-get install chromium failed; browser_pages recordings and their tests are off"
  else
    echo "setup: no /usr/bin/chromium (needs root: apt-get install chromium); browser_pages recordings and their tests are off"
  fi
fi
