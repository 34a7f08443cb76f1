"""The layout is the architecture (docs/architecture.md): pure packages import neither Lightning nor Kedro; nothing
imports DVC; the runtime package, which DVC does not follow, imports no result code but the params builder; a stage's
pipeline never imports another stage's; no stage reaches the command-line tools; the package root holds only what Kedro
needs there and the one shared file helper."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "unirae_pipeline"
PURE = ("models", "diffusion", "data", "evaluation", "interop")
FRAMEWORKS = {"lightning", "pytorch_lightning", "kedro", "kedro_datasets", "hydra", "omegaconf"}
KEDRO_ALLOWED = ("io", "pipelines")
KEDRO_ALLOWED_FILES = ("settings.py", "pipeline_registry.py", "__main__.py", "config/hooks.py", "runtime/hooks.py",
                       "tools/dvc_stages.py")
# the package root: Kedro's entry points (settings, pipeline registry, the per-rank launcher) and the atomic writes
# every layer uses; composition lives in config/, plumbing in runtime/, commands in tools/
ROOT_MODULES = {"__init__.py", "__main__.py", "settings.py", "pipeline_registry.py", "fileio.py"}
PACKAGES = {"config", "data", "diffusion", "evaluation", "interop", "io", "models", "pipelines", "runtime", "tools",
            "training"}


def imported_roots(file: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            roots.add("." * node.level + (node.module or ""))
    return roots


def package_modules(file: Path) -> set[str]:
    """The package modules a file imports, as dotted paths inside the package ("data.latents", "config.build")."""
    rel = file.relative_to(SRC).with_suffix("").parts
    found = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = list(rel[:-1])[: len(rel) - node.level]
            found.add(".".join(base + ([node.module] if node.module else [])))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("unirae_pipeline."):
            found.add(node.module.removeprefix("unirae_pipeline."))
    return found


FILES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("file", FILES, ids=lambda f: str(f.relative_to(SRC)))
def test_layering(file):
    rel = file.relative_to(SRC)
    roots, modules = imported_roots(file), package_modules(file)
    assert "dvc" not in roots
    package = rel.parts[0] if len(rel.parts) > 1 else None
    if package in PURE:
        assert not roots & FRAMEWORKS, roots
        # pure packages reach other layers only among themselves, the file helper, the params builder (model files
        # build their configs as params.yaml's groups are built) and the runtime's rank placement
        for module in modules:
            assert module.split(".")[0] in PURE + ("fileio", "runtime") or module == "config.build", \
                f"{rel} imports {module}"
    if package == "runtime":
        for module in modules:
            assert module.split(".")[0] == "runtime" or module == "config.build", \
                f"{rel} imports {module}: no result code in runtime/ (only the params builder)"
    if package == "pipelines":  # a stage's code is its own; what two stages share lives in a layer below
        stage = rel.parts[1]
        for module in modules:
            parts = module.split(".")
            assert parts[0] != "pipelines" or len(parts) == 1 or parts[1] == stage, f"{rel} imports {module}"
    if package != "tools":
        assert not any(m.split(".")[0] == "tools" for m in modules), f"{rel} imports a command-line tool"
    if rel == Path("config/__init__.py"):  # the builder's importers must not pull in (nor DVC follow) every model
        assert not modules and not roots - {"__future__"}, roots
    if "kedro" in roots:
        assert package in KEDRO_ALLOWED or rel.as_posix() in KEDRO_ALLOWED_FILES, f"{rel} imports kedro"


def test_the_root_holds_only_entry_points_and_the_packages():
    assert {p.name for p in SRC.glob("*.py")} == ROOT_MODULES
    assert {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").is_file()} == PACKAGES
    assert all((SRC / p / "__init__.py").is_file() for p in PACKAGES)


def test_every_stage_has_nodes_and_pipeline_modules():
    from unirae_pipeline.pipeline_registry import STAGES

    for stage in STAGES:
        assert (SRC / "pipelines" / stage / "nodes.py").is_file()
        assert (SRC / "pipelines" / stage / "pipeline.py").is_file()
