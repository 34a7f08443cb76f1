"""Kedro hooks: the log level from the environment, the GPU matmul policy, and every params group checked before any
node runs."""

import torch
from kedro.framework.hooks import hook_impl

from .config import validate_params
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
