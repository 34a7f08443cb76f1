"""The Kedro hook that decides what the nodes compute from params.yaml: the GPU matmul policy, params.yaml built once
into its typed tree before any node runs (and handed to the nodes in place of the raw mappings), and the files of the
params the run's nodes read checked before the first of them. (How a run goes, its logs and timing: `runtime.hooks`.)"""

from __future__ import annotations

from typing import Any

import torch
from kedro.framework.hooks import hook_impl

from .params import Params, check_environment, load_params

PREFIX = "params:"


def use_tf32() -> None:
    """fp32 matmuls and convolutions on tensor cores (TF32) by default, as the reference's stage-2 trainer, samplers
    and statistics script run them: without it an fp32 stage on an A100/H100 runs at about 1/8 of the TF32 rate.
    train_rae follows `train_rae.tf32` instead (the reference's stage-1 trainer leaves TF32 off). bf16 autocast is
    unaffected; CPUs ignore it."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


class ParamsHook:
    params: Params

    @hook_impl
    def after_context_created(self, context) -> None:
        use_tf32()
        # the raw mappings (runtime --params merged): Kedro's own `context.params` would first build the groups that
        # node signatures annotate, shallowly and with less precise errors
        self.params = load_params(context.config_loader["parameters"])

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        keys = [i.removeprefix(PREFIX) for i in pipeline.inputs() if i.startswith(PREFIX)]
        check_environment(self.params, keys)

    @hook_impl
    def before_node_run(self, node, catalog, inputs: dict[str, Any], is_async, run_id) -> dict[str, Any]:
        """Every `params:` input as the typed tree holds it: nodes never see (or rebuild) a raw mapping."""
        return {name: self.params.get(name.removeprefix(PREFIX)) for name in inputs if name.startswith(PREFIX)}
