#!/usr/bin/env bash
# Set up mmrec in ./.venv: Python venv, PyTorch (pinned: these builds are served from the local disk here;
# an unpinned torch pulls a multi-GB CUDA build), then mmrec itself, editable, with the test extras.
# Safe to run again: an existing .venv is reused and pip skips what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
