"""The Kedro hook of how a run goes, never what it computes: the log level from the environment, a line when each node
starts and ends (with its time), and a run failed when params.yaml changed under it."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from kedro.framework.hooks import hook_impl

from .progress import apply_log_level

log = logging.getLogger(__name__)


class RunHook:
    def __init__(self) -> None:
        self.started: dict[str, float] = {}  # node name -> when it started

    @hook_impl
    def after_context_created(self, context) -> None:
        apply_log_level()
        self.params_file = Path(context.project_path) / "params.yaml"
        self.params_text = self.params_file.read_bytes() if self.params_file.is_file() else None

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
    def before_node_run(self, node, catalog, inputs, is_async, run_id) -> None:
        log.info("%s: started", node.name)  # Kedro's own per-dataset lines are off by default (conf/logging.yml)
        self.started[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node, catalog, inputs, outputs, is_async, run_id) -> None:
        log.info("%s: done in %.1f s", node.name, time.perf_counter() - self.started.pop(node.name))
