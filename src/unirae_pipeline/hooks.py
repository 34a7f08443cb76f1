"""Kedro hooks: check every params group before any node runs."""

from kedro.framework.hooks import hook_impl

from .config import validate_params


class ParamsValidationHook:
    @hook_impl
    def after_context_created(self, context) -> None:
        validate_params(context.params)
