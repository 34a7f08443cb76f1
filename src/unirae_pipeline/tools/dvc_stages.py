"""Generate dvc.yaml from the Kedro pipelines and the catalog, so paths and params are written once.

`python -m unirae_pipeline.tools.dvc_stages` writes dvc.yaml; `--check` exits 1 when the committed file is stale.
Each stage runs `kedro run --pipelines <name>`; its deps are the catalog files it reads plus the source files its
nodes and its catalog entries' dataset classes import (followed transitively inside this package, but not into
`runtime/`, whose code cannot change an output byte) and the hook that
turns params.yaml into the nodes' typed params (`EVERY_STAGE`), and for the stage that reads the `data` group, the
data itself (`LINEAGE`); its params are the
exact `params:` keys it reads, less the `runtime` group (settings that cannot change a result: `runtime/`), and the
catalog entries it reads or writes, less their `metadata` (plot titles and DVC routing change no result). A first
stage, `check_params`, builds and checks every params group before any stage runs (`config.params.main`); its
fixed-text marker is a dependency of every other stage, which DVC therefore runs after it, and never reruns for it.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import yaml

PACKAGE = "unirae_pipeline"
SRC = Path(__file__).resolve().parents[1]  # the package
CATALOG = Path("conf/base/catalog.yml")
RUNTIME = "runtime"  # the params group DVC never tracks, and the package whose code it never follows
RUNTIME_CODE = SRC / RUNTIME
# the data's content for DVC: the ImageFolder tree (hashed like any dependency: files added, removed or overwritten
# in place rerun the stage that reads it) or the built-in set's generator; resolved from params.yaml by DVC
LINEAGE = "data.lineage"
# run before every node, their imports not followed (the params tree imports every stage's configs): the hook that
# builds the typed params and sets the matmul policy, and the builder itself
EVERY_STAGE = ("config/hooks.py", "config/build.py")
# the first stage: params.yaml built and checked (config.params), its fixed-text marker a dependency of every other
# stage
CHECK = "check_params"
MARKER = "data/02_intermediate/params_checked.txt"


def _module_file(module: str) -> Path | None:
    rel = Path(*module.split(".")[1:])
    for candidate in (SRC / rel.with_suffix(".py"), SRC / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(file: Path) -> set[str]:
    """Absolute names of the package modules a file imports (relative imports resolved)."""
    parts = file.relative_to(SRC).with_suffix("").parts
    package = ".".join((PACKAGE, *parts[:-1]))  # the package a relative import starts from
    found = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] == PACKAGE:
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
    return found


def _dataset_module(entry: dict) -> Path | None:
    """This package's module that defines a catalog entry's dataset class (None for other packages' datasets)."""
    module = entry["type"].rpartition(".")[0]
    return _module_file(module) if module.split(".")[0] == PACKAGE else None


def _followed(file: Path) -> bool:
    """Result code: everything but the `runtime` package, which cannot change an output byte (see its docstring)."""
    return RUNTIME_CODE not in file.parents and file != RUNTIME_CODE / "__init__.py"


def code_deps(stage: str, entries: list[dict] = (), start: Path | None = None) -> list[str]:
    """Every package file that the stage's pipeline (or the `start` file) and its catalog `entries`' dataset classes
    import, directly or not, with the parent __init__ files; the `runtime` package is not followed."""
    todo = [start or SRC / "pipelines" / stage / "pipeline.py", *filter(None, map(_dataset_module, entries))]
    seen: set[Path] = set()
    while todo:
        file = todo.pop()
        if file in seen:
            continue
        seen.add(file)
        for module in _imports(file):
            parts = module.split(".")
            for i in range(2, len(parts) + 1):  # parents run their __init__ first
                target = _module_file(".".join(parts[:i]))
                if target is not None and target not in seen and _followed(target):
                    todo.append(target)
    root = SRC.parents[1]
    return sorted(str(f.relative_to(root)) for f in seen | {SRC / f for f in EVERY_STAGE})


def check_stage(groups: list[str]) -> dict:
    """The first stage: every params group but `runtime` (which cannot change a result) built and checked by the
    code that builds them for the nodes; it writes the fixed-text marker that every other stage depends on."""
    return {"cmd": f"python -m {PACKAGE}.config {MARKER}",
            "deps": code_deps(CHECK, start=SRC / "config" / "__main__.py"),
            "params": [g for g in groups if g != RUNTIME], "outs": [{MARKER: {"cache": False}}]}


def build_stages(pipelines: dict, catalog: dict, groups: list[str]) -> dict:
    stages, views = {CHECK: check_stage(groups)}, []
    for name in sorted(pipelines, key=list(pipelines).index):
        if name == "__default__":
            continue
        pipe = pipelines[name]
        keys = {i.removeprefix("params:") for i in pipe.inputs() if i.startswith("params:")}
        params = sorted(key for key in keys if key.split(".")[0] != RUNTIME  # a key inside a group read whole: once
                        and not any(key.startswith(f"{other}.") for other in keys))
        if "parameters" in pipe.inputs():
            raise ValueError(f"stage {name}: a node takes all 'parameters'; name the params keys it reads")
        data_inputs = sorted(i for i in pipe.inputs() if not i.startswith("params:"))
        missing = [i for i in data_inputs if i not in catalog]
        if missing:
            raise ValueError(f"stage {name}: inputs {missing} are not in {CATALOG}; cross-stage data must be files")
        entries = sorted(i for i in {*data_inputs, *pipe.all_outputs()} if i in catalog)
        tracked = [f"{entry}.{key}" for entry in entries for key in catalog[entry] if key != "metadata"]
        lineage = [f"${{{LINEAGE}}}"] if {"data", LINEAGE} & set(params) else []
        stage = {"cmd": f"kedro run --pipelines {name}",
                 "deps": [MARKER, *code_deps(name, [catalog[e] for e in entries]),
                          *(_path(catalog[i]) for i in data_inputs), *lineage],
                 "params": [*params, {str(CATALOG): tracked}]}
        outs, metrics, plots = [], [], []
        for out in sorted(pipe.all_outputs()):
            if out not in catalog:
                continue  # in-memory hand-over between nodes of the same stage
            entry, kind = catalog[out], (catalog[out].get("metadata") or {}).get("dvc")
            if kind == "metrics":
                metrics.append({_path(entry): {"cache": False}})
            elif kind == "plots" and "views" in entry["metadata"]:  # named plots of chosen columns, top level
                outs.append({_path(entry): {"cache": False}})
                for view, spec in entry["metadata"]["views"].items():
                    views.append({view: {**{k: v for k, v in spec.items() if k != "y"},
                                         "y": {_path(entry): spec["y"]}}})
            elif kind == "plots":
                extra = {k: entry["metadata"][k] for k in ("x", "y") if k in entry["metadata"]}
                plots.append({_path(entry): {"cache": False, **extra}})
            else:
                outs.append(_path(entry))
        stage.update({k: v for k, v in (("outs", outs), ("metrics", metrics), ("plots", plots)) if v})
        stages[name] = stage
    return {"stages": stages, **({"plots": views} if views else {})}


def _path(entry: dict) -> str:
    return entry.get("filepath") or entry["path"]


def render(root: Path) -> str:
    from kedro.framework.project import pipelines
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(root)
    catalog = yaml.safe_load((root / CATALOG).read_text(encoding="utf-8"))
    groups = list(yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8")))
    header = ("# Generated from the Kedro pipelines and catalog (python -m unirae_pipeline.tools.dvc_stages). "
              "Do not edit.\n")
    return header + yaml.safe_dump(build_stages(dict(pipelines), catalog, groups), sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if dvc.yaml differs from the generated text")
    args = parser.parse_args(argv)
    root = Path.cwd()
    text, target = render(root), root / "dvc.yaml"
    if args.check:
        stale = not target.is_file() or target.read_text(encoding="utf-8") != text
        if stale:
            sys.stderr.write("dvc.yaml is stale: run `python -m unirae_pipeline.tools.dvc_stages`\n")
        return int(stale)
    target.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
