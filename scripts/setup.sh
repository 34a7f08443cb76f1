#!/usr/bin/env bash
# All set-up on a fresh clone: a .venv holding the project, its tools (kedro, dvc, hydra, lightning, ...) and the
# pinned torch/torchvision pair (torch 2.13's CPU build cannot be paired with a working torchvision).
# On a GPU box with its own torch, use `pip install --no-deps -e .` in that environment instead.
set -euo pipefail
cd "$(dirname "$0")/.."
python=python3.11
command -v "$python" >/dev/null || python=python3
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 -e ".[dev]"
# Chromium draws the `kedro viz` page in tests/test_viz.py: Debian's package, when missing and this runs as root.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
