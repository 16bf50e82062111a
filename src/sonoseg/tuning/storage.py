"""Where a study lives: ``tuning.storage`` as a sqlite URL, a journal file or a PostgreSQL URL.

* ``sqlite:///data/06_models/tuning/optuna.db``: one process (sqlite serialises writers);
* ``data/06_models/tuning/optuna.journal`` (or ``.log``): several processes on one machine, or on
  several machines sharing the folder over a file system with working ``open``/``symlink`` semantics;
* ``postgresql://user:password@host:5432/db``: several processes on several machines.
"""

from __future__ import annotations

from pathlib import Path

import optuna

__all__ = ["JOURNAL_SUFFIXES", "display_storage", "make_storage"]

JOURNAL_SUFFIXES = (".log", ".journal")


def make_storage(spec: str) -> optuna.storages.BaseStorage:
    """The Optuna storage that ``spec`` names (see the module docstring); folders are created."""
    spec = str(spec).strip()
    if "://" in spec:
        scheme = spec.split("://", 1)[0]
        if scheme.startswith("sqlite"):
            database = spec.split(":///", 1)[1] if ":///" in spec else ""
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            # a second process that opens the file waits for the lock instead of failing at once
            return optuna.storages.RDBStorage(spec, engine_kwargs={"connect_args": {"timeout": 60}})
        if scheme.startswith(("postgresql", "mysql")):
            if scheme == "postgresql":  # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; we ship psycopg2
                spec = "postgresql+psycopg2://" + spec.split("://", 1)[1]
            return optuna.storages.RDBStorage(spec, engine_kwargs={"pool_pre_ping": True})
        raise ValueError(
            f"tuning.storage '{display_storage(spec)}' is not supported: use sqlite:///path.db, "
            "postgresql://user:password@host:port/database, or a journal file path ending in .log or .journal"
        )
    if spec.endswith(JOURNAL_SUFFIXES):
        path = Path(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(str(path))
        return optuna.storages.JournalStorage(backend)
    raise ValueError(
        f"tuning.storage '{spec}' is neither a database URL nor a journal file: use sqlite:///path.db, "
        "postgresql://user:password@host:port/database, or a path ending in .log or .journal"
    )


def display_storage(spec: str) -> str:
    """``spec`` with any password masked, for logs, reports and the tuned-params file."""
    if "://" not in spec:
        return spec
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(spec).render_as_string(hide_password=True)
    except ArgumentError:
        return spec.split("://", 1)[0] + "://***"
