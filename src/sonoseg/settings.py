"""Kedro project settings."""

from kedro.config import OmegaConfigLoader

from sonoseg.hooks import CredentialsHook

# Credentials reach nodes as a dataset, never as parameters (parameters are logged).
HOOKS = (CredentialsHook(),)

# kedro-mlflow is installed for the training pipeline; it must not open runs for the data pipelines
# until that pipeline configures it (conf/base/mlflow.yml).
DISABLE_HOOKS_FOR_PLUGINS = ("kedro_mlflow",)  # its distribution name

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # `--params ingestion.path=x` and environment files change one key, not the whole block.
    "merge_strategy": {"parameters": "soft"},
}
