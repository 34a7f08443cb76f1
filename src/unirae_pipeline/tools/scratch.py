"""List or prune the scratch folders of the resumable stages (see `runtime.scratch`):

    python -m unirae_pipeline.tools.scratch            # list every folder: in use, or referred to by nothing
    python -m unirae_pipeline.tools.scratch --prune    # remove those neither the workspace nor an experiment uses

keeps what the workspace's `params.yaml` or any DVC experiment (`dvc exp show`) could still resume, every folder a
live process holds, and every folder another repository's run made (a scratch space that clones share: this
repository's experiments cannot tell whether the other still needs it) unless `--all-repositories`.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..config.build import read_params
from ..runtime import in_repository, repository_root
from ..runtime.ranks import in_use
from ..runtime.scratch import entries, flatten

log = logging.getLogger(__name__)


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
    return [flatten(read_params(cwd / "params.yaml")), *experiment_params(cwd)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prune", action="store_true", help="remove the folders nothing refers to (default: list)")
    parser.add_argument("--all-repositories", action="store_true",
                        help="also judge (and prune) the folders of other repositories' runs by this one's params")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cwd = Path.cwd()
    root, here = in_repository(read_params(cwd / "params.yaml")["runtime"]["scratch"]), str(repository_root())
    users = candidates(cwd)
    unused = 0
    for entry in entries(root):
        running, foreign = in_use(entry.path), entry.repository != here and not args.all_repositories
        used = running or foreign or entry.used_by(users)
        state = "running" if running else "another repo's" if foreign else \
            "in use" if entry.params is not None and used else "no record, kept" if used else "unused"
        if not used and args.prune:
            shutil.rmtree(entry.path)
            state = "removed"
        unused += not used
        log.info("%8.1f MB  %-15s %s", entry.size / 2**20, state, entry.path.relative_to(root))
    log.info("%d unused folder(s) under %s%s", unused, root, "" if args.prune or not unused else
             " (python -m unirae_pipeline.tools.scratch --prune removes them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
