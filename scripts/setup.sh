#!/usr/bin/env bash
# All set-up on a fresh clone: a .venv holding the project, its tools (kedro, dvc, hydra, lightning, ...) and the
# pinned torch/torchvision pair (torch 2.13's CPU build cannot be paired with a working torchvision); the chart
# libraries that let `dvc plots` draw offline; Chromium for the browser tests.
# On a GPU box with its own torch, use `pip install --no-deps -e .` in that environment instead.
set -euo pipefail
cd "$(dirname "$0")/.."
python=python3.11
command -v "$python" >/dev/null || python=python3
step() { echo "[setup $(date +%H:%M:%S)] $*"; }

step "1/3 .venv: this project with torch 2.14.1, torchvision 0.29.1 and the dev tools (about 5 minutes, 6 GB)"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --disable-pip-version-check --progress-bar off torch==2.14.1 torchvision==0.29.1 \
    -e ".[dev]"  # pip names each package as it collects and installs it

# DVC's plot page loads Vega, Vega-Lite and Vega-Embed from a CDN; the versions it names, from the npm registry,
# inlined into .dvc/plots.html (.dvc/config: plots.html_template) so that `dvc plots show` draws offline.
step "2/3 the chart libraries of dvc plots (vega 5.20.2, vega-lite 5.2.0, vega-embed 6.18.2, from npm)"
if [ ! -f .dvc/plots.html ]; then
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2 >/dev/null \
        && for f in *.tgz; do tar -xzf "$f" --strip-components=2 --wildcards 'package/build/*.min.js'; done)
    .venv/bin/python -m unirae_pipeline.tools.plots_template "$tmp"
    rm -rf "$tmp"
fi

# Chromium draws the `kedro viz` and `dvc plots` pages in the browser tests: Debian's package, when missing.
if command -v chromium >/dev/null; then
    step "3/3 chromium: $(command -v chromium) is there"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    step "3/3 chromium: installing Debian's package with apt-get, as root (the browser tests need it)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
    step "3/3 chromium is missing and this is not root: install it (e.g. apt-get install chromium) for the browser tests"
fi
step "done: . .venv/bin/activate"
