"""The DVC hashes of the data a stage reads, taken from ``dvc.yaml`` and ``dvc.lock``.

Under ``dvc repro`` a stage's data dependencies are the outputs of the stages before it, and DVC writes
each finished stage's output hashes to ``dvc.lock`` before the next stage starts. Those hashes name
the exact data version a training run saw, the same ones ``dvc pull`` or ``dvc checkout`` restore.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DATA_ROOT = "data/"


def _path(entry: Any) -> str:
    return str(entry if isinstance(entry, str) else next(iter(entry))).rstrip("/")


def stage_data_hashes(dvc_yaml: Mapping[str, Any], dvc_lock: Mapping[str, Any], stage: str) -> dict[str, str]:
    """``{path: md5}`` for each ``data/`` dependency of ``stage`` that another stage outputs.

    ``dvc_yaml`` and ``dvc_lock`` are the parsed files (``{}`` when the project is not run by DVC, which
    gives ``{}``). Hashes come from the producing stages' ``outs`` in the lock, never from ``stage``'s own
    lock entry, which still describes its previous run while it runs. A dependency that no locked stage
    has produced yet is left out.
    """
    spec = (dvc_yaml.get("stages") or {}).get(stage) or {}
    wanted = [_path(dep) for dep in spec.get("deps") or [] if _path(dep).startswith(DATA_ROOT)]
    produced: dict[str, str] = {}
    for name, locked in (dvc_lock.get("stages") or {}).items():
        if name == stage:
            continue
        for out in locked.get("outs") or []:
            if out.get("md5"):
                produced[_path(out["path"])] = str(out["md5"])
    return {path: produced[path] for path in wanted if path in produced}
