"""The README's docker-free PostgreSQL recipe, run as written, as a fixture for tests that need a server.

Usage in a test module::

    from support.postgres import postgres  # noqa: F401  (the fixture)

    def test_x(postgres):
        url = f"postgresql://sonoseg@127.0.0.1:{postgres['PGPORT']}/optuna"  # password from PGPASSWORD

The fixture skips (with the reason) when the PostgreSQL binaries are absent.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.kedro_runs import PROJECT_ROOT

PASSWORD = "postgres-test-secret"


def readme_recipe() -> str:
    """The bash block between the README's ``postgres-recipe`` markers."""
    text = (PROJECT_ROOT / "README.md").read_text()
    match = re.search(r"<!-- postgres-recipe-start[^>]*-->\s*```bash\n(.*?)```\s*<!-- postgres-recipe-end -->", text, re.S)
    assert match, "README.md lost its marked PostgreSQL recipe"
    return match.group(1)


def free_port() -> int:
    """A port nobody listens on at 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The recipe's environment (PGDIR, PGPORT, PGPASSWORD) with the server started; stopped afterwards.
    initdb refuses to run as root, so as root the recipe runs as the ``postgres`` user in a folder it owns."""
    if shutil.which("initdb") is None:
        pytest.skip("PostgreSQL's initdb is not on PATH")
    as_owner: list[str] = []
    folder = tmp_path / "pg"
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run initdb as")
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser")
        as_owner = ["runuser", "-u", "postgres", "--"]
        folder = Path(tempfile.mkdtemp(prefix="sonoseg-pg-"))
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    env = {**os.environ, "PGDIR": str(folder), "PGPORT": str(free_port()), "PGPASSWORD": PASSWORD}
    result = subprocess.run([*as_owner, "bash", "-euo", "pipefail", "-c", readme_recipe()], env=env, cwd=folder,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    try:
        assert result.returncode == 0, f"the README recipe failed:\n{result.stdout}\n{result.stderr}"
        yield env
    finally:
        subprocess.run([*as_owner, "pg_ctl", "-D", f"{folder}/data", "stop", "-m", "fast"], env=env,
                       capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)
