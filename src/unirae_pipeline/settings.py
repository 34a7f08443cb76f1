"""Kedro project settings: parameters come from the repo-root params.yaml (composed by Hydra), nowhere else."""

from .hooks import ParamsValidationHook

HOOKS = (ParamsValidationHook(),)

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # fsspec resolves `..` out of conf/<env>: both envs read the same params.yaml, so the merge is a no-op.
    "config_patterns": {"parameters": ["../../params.yaml"]},
}
