"""The stage pipelines; each is also a DVC stage of the same name (see dvc_stages.py)."""

import re

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

# DAG order, so that dvc.yaml reads top to bottom.
STAGES = ("prepare_data", "cache_latents", "latent_stats", "fid_reference", "train_rae", "train_dit", "train_guide",
          "sample", "evaluate")


def register_pipelines() -> dict[str, Pipeline]:
    # Kedro 1.7 may import only the pipelines a run asks for, so `found` can be a subset of STAGES.
    try:
        found = find_pipelines(raise_errors=True)
    except ImportError as err:  # an unknown `--pipelines` name: a KeyError, which Kedro reports with the names close
        # to it ("Did you mean ... sample"), instead of an import traceback
        unknown = [m for m in re.findall(r"pipelines\.(\w+)'", str(err)) if m not in STAGES]
        if unknown:
            raise KeyError(f"no pipeline named {', '.join(unknown)}; the pipelines are: {', '.join(STAGES)}") from None
        raise
    found.pop("__default__", None)
    pipelines = {name: found[name] for name in STAGES if name in found}
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
