"""Scratch space: the work in progress of the resumable stages (latent and sample shards, training checkpoints).

Each run gets a folder under `runtime.scratch`, named by the hash of what its result depends on, and removed once the
stage's outputs are written. A killed run leaves its folder for the rerun to resume; a run whose params changed
leaves it behind for good. Each folder records the params its key was made from (`params.json`), so that

    python -m unirae_pipeline.runtime.scratch            # list every folder: in use, or referred to by nothing
    python -m unirae_pipeline.runtime.scratch --prune    # remove those neither the workspace nor an experiment uses

keeps what the workspace's `params.yaml` or any DVC experiment (`dvc exp show`) could still resume.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..params import plain, run_key
from .ranks import in_use

log = logging.getLogger(__name__)

PARAMS_FILE = "params.json"
_MISSING = object()  # a key the candidate params do not have


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: the dotted params.yaml keys, as DVC names them."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


@dataclass(frozen=True)
class RunKey:
    """What a resumable run's result depends on: `params` (params.yaml groups or dotted keys) and `inputs` (digests
    or manifests of the artefacts it reads). Its `key` names the run's scratch folder."""

    params: dict[str, Any]
    inputs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:  # typed groups as their params.yaml values: what the records are matched with
        object.__setattr__(self, "params", {k: plain(v) for k, v in self.params.items()})

    @property
    def key(self) -> str:
        return run_key(**self.params, **self.inputs)

    def folder(self, root: Path, prefix: str = "", suffix: str = "") -> Path:
        """root/<prefix><key><suffix>, created, with the params recorded in it."""
        folder = root / f"{prefix}{self.key}{suffix}"
        folder.mkdir(parents=True, exist_ok=True)
        record = folder / PARAMS_FILE
        if not record.is_file():
            record.write_text(json.dumps(flatten(self.params), sort_keys=True, default=str) + "\n", encoding="utf-8")
        return folder


@dataclass(frozen=True)
class Entry:
    path: Path
    params: dict[str, Any] | None  # None: no record (made before records existed): never pruned
    size: int

    def used_by(self, candidates: Iterable[dict[str, Any]]) -> bool:
        return self.params is None or any(
            all(params.get(k, _MISSING) == v for k, v in self.params.items()) for params in candidates)



def entries(root: Path) -> Iterator[Entry]:
    """The run folders under a scratch root (<root>/<kind>/<run>)."""
    for kind in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else ():
        for run in sorted(p for p in kind.iterdir() if p.is_dir()):
            record = run / PARAMS_FILE
            params = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else None
            size = sum(f.stat().st_size for f in run.rglob("*") if f.is_file())
            yield Entry(run, params, size)


def experiment_params(cwd: Path) -> list[dict[str, Any]]:
    """The flattened params.yaml of the workspace and of every DVC experiment and commit `dvc exp show` lists."""
    out = subprocess.run(["dvc", "exp", "show", "--json", "--all-commits"], cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"dvc exp show failed: {out.stderr.strip()[-500:]}")
    found = []
    for commit in json.loads(out.stdout or "[]"):
        revs = [commit, *(rev for exp in commit.get("experiments") or [] for rev in exp.get("revs") or [])]
        for rev in revs:
            params = ((rev.get("data") or {}).get("params") or {}).get("params.yaml") or {}
            if params.get("data"):
                found.append(flatten(params["data"]))
    return found


def candidates(cwd: Path) -> list[dict[str, Any]]:
    workspace = flatten(yaml.safe_load((cwd / "params.yaml").read_text(encoding="utf-8")))
    return [workspace, *experiment_params(cwd)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prune", action="store_true", help="remove the folders nothing refers to (default: list)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cwd = Path.cwd()
    workspace = yaml.safe_load((cwd / "params.yaml").read_text(encoding="utf-8"))
    root = Path(workspace["runtime"]["scratch"])
    if not root.is_absolute():
        root = cwd / root
    users = candidates(cwd)
    unused = 0
    for entry in entries(root):
        running = in_use(entry.path)
        used = running or entry.used_by(users)
        state = "running" if running else "in use" if entry.params is not None and used else \
            "no record, kept" if used else "unused"
        if not used and args.prune:
            shutil.rmtree(entry.path)
            state = "removed"
        unused += not used
        log.info("%8.1f MB  %-15s %s", entry.size / 2**20, state, entry.path.relative_to(root))
    log.info("%d unused folder(s) under %s%s", unused, root, "" if args.prune or not unused else
             " (python -m unirae_pipeline.runtime.scratch --prune removes them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
