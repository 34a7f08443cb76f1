"""Kedro hooks: the log level from the environment, the GPU matmul policy, params.yaml built once into its typed tree
before any node runs (and handed to the nodes in place of the raw mappings), and the files of the params the run's
nodes read checked before the first of them."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from kedro.framework.hooks import hook_impl

from .config import Params, check_environment, load_params
from .runtime.progress import apply_log_level

PREFIX = "params:"
log = logging.getLogger(__name__)


def use_tf32() -> None:
    """fp32 matmuls and convolutions on tensor cores (TF32) by default, as the reference's stage-2 trainer, samplers
    and statistics script run them: without it an fp32 stage on an A100/H100 runs at about 1/8 of the TF32 rate.
    train_rae follows `train_rae.tf32` instead (the reference's stage-1 trainer leaves TF32 off). bf16 autocast is
    unaffected; CPUs ignore it."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


class ParamsHook:
    params: Params

    def __init__(self) -> None:
        self.started: dict[str, float] = {}  # node name -> when it started

    @hook_impl
    def after_context_created(self, context) -> None:
        apply_log_level()
        use_tf32()
        # the raw mappings (runtime --params merged): Kedro's own `context.params` would first build the groups that
        # node signatures annotate, shallowly and with less precise errors
        self.params = load_params(context.config_loader["parameters"])
        self.params_file = Path(context.project_path) / "params.yaml"
        self.params_text = self.params_file.read_bytes() if self.params_file.is_file() else None

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        keys = [i.removeprefix(PREFIX) for i in pipeline.inputs() if i.startswith(PREFIX)]
        check_environment(self.params, keys)

    @hook_impl
    def after_pipeline_run(self, run_params, run_result, pipeline, catalog) -> None:
        """Fail the run when params.yaml changed under it (`dvc exp run -S` in the same workspace rewrites it): DVC
        would record the new values next to outputs made with the old ones."""
        now = self.params_file.read_bytes() if self.params_file.is_file() else None
        if now != self.params_text:
            raise RuntimeError(f"{self.params_file} changed while this run used it: its outputs were made with the "
                               "values it read at the start, so DVC must not record it. Run experiments side by side "
                               "with `dvc exp run --queue` or `--temp`, then rerun this stage")

    @hook_impl
    def before_node_run(self, node, catalog, inputs: dict[str, Any], is_async, run_id) -> dict[str, Any]:
        """Every `params:` input as the typed tree holds it: nodes never see (or rebuild) a raw mapping."""
        log.info("%s: started", node.name)  # Kedro's own per-dataset lines are off by default (conf/logging.yml)
        self.started[node.name] = time.perf_counter()
        return {name: self.params.get(name.removeprefix(PREFIX)) for name in inputs if name.startswith(PREFIX)}

    @hook_impl
    def after_node_run(self, node, catalog, inputs, outputs, is_async, run_id) -> None:
        log.info("%s: done in %.1f s", node.name, time.perf_counter() - self.started.pop(node.name))
