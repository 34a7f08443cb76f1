"""Notebooks are stored without outputs and run top to bottom on the committed reports."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from .conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean_and_runs(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code), "store notebooks without outputs"
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    produced = [o for c in code for o in c.outputs]
    assert not [o for o in produced if o.output_type == "error"]
    images = [o for o in produced if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # the sample grid, the reconstructions and the curves
    tables = [o for o in produced if "text/html" in o.get("data", {})]
    assert any("class_accuracy" in o["data"]["text/html"] for o in tables)


def test_there_is_a_notebook():
    assert NOTEBOOKS
