"""`kedro viz build` renders all eight stages: checked in headless Chromium against a local server, from the DOM."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

from unirae_pipeline.pipeline_registry import STAGES

from .conftest import CHROMIUM_FLAGS, ROOT, copy_repository

pytestmark = pytest.mark.slow  # kedro viz build and a browser: subprocesses

@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    assert path, "chromium is missing: scripts/setup.sh installs it (Debian's package, as root)"
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """`kedro viz build` of a copy of this project (its `build/` stays out of the checkout), served on a free
    localhost port: (url, the copy's root)."""
    root = copy_repository(tmp_path_factory.mktemp("viz") / "repo")
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    subprocess.run(["kedro", "viz", "build"], cwd=root, env=env, check=True, capture_output=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d",
                               str(root / "build")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/", root
    finally:
        server.terminate()
        server.wait(timeout=10)


def expected_task_nodes() -> set[str]:
    from kedro.framework.project import pipelines
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(ROOT)
    return {node.name for stage in STAGES for node in pipelines[stage].nodes}


def test_static_site_lists_every_stage(site):
    main = json.loads((site[1] / "build" / "api" / "main").read_text())
    assert {p["id"] for p in main["pipelines"]} == {*STAGES, "__default__"}


def test_every_stage_node_is_drawn(site, chromium, tmp_path):
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                          "--virtual-time-budget=15000", "--dump-dom", site[0]], capture_output=True, text=True,
                         timeout=120).stdout
    drawn = set(re.findall(r'data-node-type="task" data-node-fullname="([^"]+)"', dom))
    assert drawn == expected_task_nodes()
    assert len(re.findall(r'data-node-type="data"', dom)) >= 10  # the catalog datasets between the stages
    shot = tmp_path / "kedro-viz.png"
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1600,1000",
                    "--virtual-time-budget=15000", f"--screenshot={shot}", site[0]], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
