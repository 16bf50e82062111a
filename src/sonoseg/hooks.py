"""Project hooks."""

from __future__ import annotations

import os
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.io import MemoryDataset

from sonoseg.io.s3 import resolve_s3_settings


class CredentialsHook:
    """Offers the S3 settings (from conf/local/credentials.yml or the environment) as the
    ``s3_settings`` dataset. Resolution is lazy: a missing credential is an error only for a
    node that asks for it, and the secret never passes through parameters or logs."""

    @hook_impl
    def after_catalog_created(self, catalog: Any, conf_creds: dict[str, Any]) -> None:
        catalog["s3_settings"] = MemoryDataset(_LazyS3Settings(dict(conf_creds or {}), dict(os.environ)), copy_mode="assign")


class _LazyS3Settings:
    """Resolves the S3 settings on first use, so runs without S3 never need credentials."""

    def __init__(self, credentials: dict[str, Any], environ: dict[str, str]) -> None:
        self._credentials = credentials
        self._environ = environ

    def resolve(self):
        return resolve_s3_settings(self._credentials, self._environ)

    def __repr__(self) -> str:
        return "<S3 settings, resolved on use>"
