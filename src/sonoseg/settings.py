"""Kedro project settings."""

from kedro.config import OmegaConfigLoader

from sonoseg.hooks import CredentialsHook

# Credentials reach nodes as a dataset, never as parameters (parameters are logged).
HOOKS = (CredentialsHook(),)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # `--params ingestion.path=x` and environment files change one key, not the whole block.
    "merge_strategy": {"parameters": "soft"},
}
