"""Kedro hooks: the log level from the environment, the GPU matmul policy, every params group checked before any
node runs, and the files of the params the run's nodes read checked before the first of them."""

import torch
from kedro.framework.hooks import hook_impl

from .config import check_environment, validate_params
from .progress import apply_log_level


def use_tf32() -> None:
    """fp32 matmuls and convolutions on tensor cores (TF32), as every script of the reference does: without it an
    fp32 stage on an A100/H100 runs at about 1/8 of the TF32 rate. bf16 autocast is unaffected; CPUs ignore it."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


class ParamsValidationHook:
    @hook_impl
    def after_context_created(self, context) -> None:
        apply_log_level()
        use_tf32()
        validate_params(context.params)
        self.params = context.params

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        keys = [i.removeprefix("params:") for i in pipeline.inputs() if i.startswith("params:")]
        check_environment(self.params, keys)
