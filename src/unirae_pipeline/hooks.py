"""Kedro hooks: the log level from the environment, and every params group checked before any node runs."""

from kedro.framework.hooks import hook_impl

from .config import validate_params
from .progress import apply_log_level


class ParamsValidationHook:
    @hook_impl
    def after_context_created(self, context) -> None:
        apply_log_level()
        validate_params(context.params)
