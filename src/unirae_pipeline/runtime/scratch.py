"""Scratch space: the work in progress of the resumable stages (latent and sample shards, training checkpoints).

Each run gets a folder under `runtime.scratch`, named by the hash of what its result depends on, and removed once the
stage's outputs are written. A killed run leaves its folder for the rerun to resume; a run whose params changed
leaves it behind for good. Each folder records the params its key was made from (`params.json`), so that
`python -m unirae_pipeline.tools.scratch` can tell the folders a params set could still resume from the others.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.build import plain, run_key
from . import repository_root

PARAMS_FILE = "params.json"
REPOSITORY_FILE = "repository.txt"
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
        if not (folder / REPOSITORY_FILE).is_file():  # whose it is, on a scratch space that clones share
            (folder / REPOSITORY_FILE).write_text(f"{repository_root()}\n", encoding="utf-8")
        return folder


@dataclass(frozen=True)
class Entry:
    path: Path
    params: dict[str, Any] | None  # None: no record (made before records existed): never pruned
    size: int
    repository: str | None  # the repository whose run made it (None: made before this was recorded)

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
            owner = run / REPOSITORY_FILE
            yield Entry(run, params, size, owner.read_text(encoding="utf-8").strip() if owner.is_file() else None)
