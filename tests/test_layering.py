"""Layering of DESIGN.md section 3: pure packages import neither Lightning nor Kedro; nothing imports DVC; the runtime
package, which DVC does not follow, imports no result code but the params builder (every stage's dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "unirae_pipeline"
PURE = ("models", "diffusion", "data", "evaluation")
KEDRO_ALLOWED = ("io", "pipelines")
KEDRO_ALLOWED_FILES = ("settings.py", "pipeline_registry.py", "hooks.py", "__main__.py", "dvc_stages.py")


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


FILES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("file", FILES, ids=lambda f: str(f.relative_to(SRC)))
def test_layering(file):
    rel = file.relative_to(SRC)
    roots = imported_roots(file)
    assert "dvc" not in roots
    package = rel.parts[0] if len(rel.parts) > 1 else None
    if package in PURE:
        assert not roots & {"lightning", "pytorch_lightning", "kedro", "kedro_datasets", "hydra", "omegaconf"}, roots
        # pure packages reach other layers only among themselves (and the plain helpers at the top)
        for r in roots:
            if r.startswith(".."):
                target = r.lstrip(".").split(".")[0]
                assert target in PURE + ("fileio", "params", "runtime"), f"{rel} imports {r}"
    if package == "runtime":
        for r in roots:
            if r.startswith(".."):
                assert r.lstrip(".").split(".")[0] == "params", f"{rel} imports {r}: no result code in runtime/"
    if "kedro" in roots:
        assert package in KEDRO_ALLOWED or str(rel) in KEDRO_ALLOWED_FILES, f"{rel} imports kedro"


def test_every_stage_has_nodes_and_pipeline_modules():
    from unirae_pipeline.pipeline_registry import STAGES

    for stage in STAGES:
        assert (SRC / "pipelines" / stage / "nodes.py").is_file()
        assert (SRC / "pipelines" / stage / "pipeline.py").is_file()
