"""Shared fixtures: the committed params (tiny default) and small on-disk image sets."""

from __future__ import annotations

import copy
import shutil
import subprocess
import typing
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PLOTS_TEMPLATE = ".dvc/plots.html"  # scripts/setup.sh writes it (tools.plots_template): dvc plots draw offline
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def documentation() -> str:
    """The README and every page of docs/, one text: what a user reads, and what the README tests check."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return "\n".join(page.read_text(encoding="utf-8") for page in pages)


def copy_repository(dest: Path) -> Path:
    """The tracked (and untracked, not ignored) files as they are in the working tree, as a clone would hold them
    after `scripts/setup.sh` (which writes the offline page template of `dvc plots`)."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in [*filter(None, files), PLOTS_TEMPLATE]:  # and what the set-up makes (ignored: not committed)
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    return dest


@pytest.fixture(scope="session", autouse=True)
def session_cwd(tmp_path_factory):
    """The session's fixtures run in a temporary folder too (see `outside_the_repository`)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("cwd"))
        yield


@pytest.fixture(autouse=True)
def outside_the_repository(tmp_path, monkeypatch):
    """Every test runs in its own temporary folder: what a test writes relative to the working directory (Lightning's
    logs, resume checkpoints) never lands in the checkout; tests reach the repository through ROOT."""
    monkeypatch.chdir(tmp_path)


def typed(name: str, value: dict):
    """The params group `name` as the nodes take it: `value` built into its node of the typed tree."""
    from unirae_pipeline.config.build import build
    from unirae_pipeline.config.params import Params

    return build(typing.get_type_hints(Params)[name], value, name)


def runtime(**over):
    """The committed `runtime` group as its config (scratch and logs relative to the test's own folder), with `over`
    replaced."""
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())["runtime"]
    return typed("runtime", {**committed, "scratch": ".cache", "logs": "logs", **over})


def scratch(folder: Path, **over):
    """The committed `runtime` group with scratch space and logs in `folder`, and `over` replaced."""
    return runtime(scratch=str(folder), logs=str(folder / "logs"), **over)


@pytest.fixture(scope="session")
def params() -> dict:
    """params.yaml as committed (a deep copy per use keeps tests independent)."""
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.fixture
def p(params) -> dict:
    return copy.deepcopy(params)


def write_folder(root: Path, classes: dict[str, int], size: int = 16, seed: int = 0) -> Path:
    """An ImageFolder tree with `classes[name]` random PNGs per class in both train/ and val/."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for name, count in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root
