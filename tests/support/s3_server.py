"""A real moto S3 server in a subprocess, bound to 127.0.0.1, for tests that must speak HTTP.

Usage::

    with moto_s3_server() as server:
        client = server.client()
        client.create_bucket(Bucket="data")
        ... S3Settings(endpoint_url=server.endpoint_url, **server.credentials) ...

No in-process mocking (``mock_aws``) is involved: requests go over a socket to the server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
FAKE_ACCESS_KEY_ID = "AKIAMOTOTESTKEY12345"
FAKE_SECRET_ACCESS_KEY = "moto-fake-secret-Zx9Qv7Lw3Kp1"  # distinctive, so tests can grep for leaks
FAKE_REGION = "us-east-1"


class MotoServerError(RuntimeError):
    """The moto server could not be started."""


@dataclass(frozen=True)
class MotoS3Server:
    """A running moto server: where it listens and the fake credentials to use with it."""

    endpoint_url: str
    process: subprocess.Popen[bytes] = field(repr=False)
    log_path: Path = field(repr=False)
    aws_access_key_id: str = FAKE_ACCESS_KEY_ID
    aws_secret_access_key: str = field(default=FAKE_SECRET_ACCESS_KEY, repr=False)
    region_name: str = FAKE_REGION

    @property
    def credentials(self) -> dict[str, str]:
        """The key pair and region, in the shape of a Kedro ``s3`` credentials entry."""
        return {
            "aws_access_key_id": self.aws_access_key_id,
            "aws_secret_access_key": self.aws_secret_access_key,
            "region_name": self.region_name,
        }

    def client(self) -> Any:
        """A plain boto3 S3 client for arranging test data on the server."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            region_name=self.region_name,
            config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 2}),
        )

    def reset(self) -> None:
        """Forget every bucket and object (moto's reset API)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST", data=b"")
        with _opener().open(request, timeout=10):
            pass


def _opener() -> urllib.request.OpenerDirector:
    # Never route 127.0.0.1 through an HTTP(S)_PROXY from the environment.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _command(port: int) -> list[str]:
    return [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]


def _log_tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-limit:]
    except OSError:
        return "(no log)"


def _wait_until_up(process: subprocess.Popen[bytes], endpoint_url: str, deadline: float) -> bool:
    """True once the server answers HTTP; False if the process died or the deadline passed."""
    opener = _opener()
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with opener.open(f"{endpoint_url}/moto-api/", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # any HTTP answer means the server is up
        except OSError:
            time.sleep(0.1)
    return False


def _stop(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        logger.warning("moto server pid %d ignored SIGTERM; killing it", process.pid)
        process.kill()
        process.wait(timeout=timeout)


@contextlib.contextmanager
def moto_s3_server(start_timeout: float = 30.0, attempts: int = 3) -> Iterator[MotoS3Server]:
    """Start ``python -m moto.server`` on a free 127.0.0.1 port; stop it on exit.

    Retries on another port if the first one was taken in the meantime. Raises
    :class:`MotoServerError` (with the server's log tail) if it does not answer within
    ``start_timeout`` seconds.
    """
    env = dict(os.environ)
    # Keep the server from picking up real AWS settings and from proxying loopback traffic.
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        env.pop(name, None)
    env["NO_PROXY"] = env["no_proxy"] = ",".join(filter(None, [HOST, "localhost", env.get("NO_PROXY")]))
    env.setdefault("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY_ID)
    env.setdefault("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_ACCESS_KEY)

    with tempfile.TemporaryDirectory(prefix="moto-s3-") as tmp:
        log_path = Path(tmp) / "moto_server.log"
        failures: list[str] = []
        for _ in range(max(1, attempts)):
            port = _free_port()
            endpoint_url = f"http://{HOST}:{port}"
            with open(log_path, "ab") as log:
                process = subprocess.Popen(
                    _command(port),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=tmp,
                )
            try:
                if _wait_until_up(process, endpoint_url, time.monotonic() + start_timeout):
                    logger.info("moto S3 server pid %d listening on %s", process.pid, endpoint_url)
                    break
                failures.append(f"port {port}: exit code {process.poll()}")
                _stop(process)
            except BaseException:
                _stop(process)
                raise
        else:
            raise MotoServerError(
                f"moto server did not start within {start_timeout:.0f}s after {attempts} attempt(s) "
                f"({'; '.join(failures)}). Command: {' '.join(_command(0))}. "
                f"Log tail:\n{_log_tail(log_path)}"
            )
        try:
            yield MotoS3Server(endpoint_url=endpoint_url, process=process, log_path=log_path)
        finally:
            _stop(process)
            logger.info("moto S3 server pid %d stopped", process.pid)
