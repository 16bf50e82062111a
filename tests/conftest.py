"""Suite-wide settings: no telemetry from any tool, and a real local S3 server on demand."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

for _name, _value in {
    "KEDRO_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
}.items():
    os.environ.setdefault(_name, _value)


@pytest.fixture(scope="session")
def moto_s3() -> Iterator:
    """A real moto S3 server on 127.0.0.1 for the whole session (tests use their own buckets)."""
    from support.s3_server import moto_s3_server

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NO_PROXY", "127.0.0.1,localhost")
        with moto_s3_server() as server:
            yield server
