"""Loading local pretrained weights. Nothing is ever downloaded."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["load_pretrained", "read_state_dict"]

logger = logging.getLogger(__name__)

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a local ``.pt``/``.pth`` file holding a state_dict, ``{"state_dict": ...}`` (also
    ``model_state_dict``/``model``), or a sonoseg trainer checkpoint (``{"networks": {"student": ...}}``).
    A DDP ``module.`` prefix is stripped. Loaded with ``weights_only=True`` (no arbitrary pickles)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights file not found: {path} — sonoseg never downloads weights; put a local "
            ".pt/.pth state_dict there, or leave `pretrained` unset to train from scratch"
        )
    obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping) and isinstance(obj.get("networks"), Mapping):
        networks = obj["networks"]
        role = "student" if "student" in networks else next(iter(networks))
        logger.info("%s is a trainer checkpoint: using its %r network", path, role)
        obj = networks[role]
    for key in _WRAPPER_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{path} holds no state_dict (got {type(obj).__name__})")
    tensors = {str(k).removeprefix("module."): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        raise ValueError(f"{path} holds no tensors under a state_dict")
    return tensors


def _adapt_input_channels(source: Tensor, target: Tensor) -> Tensor | None:
    """An RGB stem (O, 3, k, k) for a 1-channel network: sum over the input channels, which gives the same
    response to a grey image as the RGB weights give to that image repeated in three channels."""
    if source.ndim == 4 and target.ndim == 4 and target.shape[1] == 1 and source.shape[1] > 1:
        if source.shape[0] == target.shape[0] and source.shape[2:] == target.shape[2:]:
            return source.sum(dim=1, keepdim=True)
    return None


def load_pretrained(net: nn.Module, path: str | Path, strict: bool = False, prefix: str | None = None,
                    adapt_input_channels: bool = True) -> list[str]:
    """Load a local state_dict file into ``net``, in place.

    Each key of the file is matched to the network's key of the same name or, failing that, to
    ``prefix + key`` (``"encoder." + key`` when no prefix is given), so a bare encoder checkpoint (e.g. an
    ImageNet ResNet saved as a state_dict) fills ``encoder.``. With ``prefix``, only the network's keys
    that start with it are loaded; the file's other keys are ignored.

    Args:
        net: the network (any ``nn.Module``).
        path: a ``.pt``/``.pth`` file (see :func:`read_state_dict`). Never downloaded.
        strict: raise ``RuntimeError`` on any shape mismatch, file key that matches nothing, or network key
            (under ``prefix``) left unloaded, instead of skipping and logging them.
        prefix: only load into the network's keys starting with this (e.g. ``"encoder."``).
        adapt_input_channels: sum a multi-channel stem's weights for a 1-channel network (logged) instead of
            treating it as a shape mismatch.

    Returns:
        The network keys that were loaded.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it; nothing is downloaded).
        ValueError: the file holds no state_dict, or none of its keys matches the network.
        RuntimeError: ``strict`` and something did not match.
    """
    source = read_state_dict(path)
    own = net.state_dict()
    fallback = prefix if prefix is not None else "encoder."
    loaded: dict[str, Tensor] = {}
    mismatched: list[str] = []
    unexpected: list[str] = []
    ignored = 0
    for key, value in source.items():
        target = key if key in own else (fallback + key if fallback + key in own else None)
        if target is None:
            unexpected.append(key)
            continue
        if prefix is not None and not target.startswith(prefix):
            ignored += 1
            continue
        if value.shape != own[target].shape:
            adapted = _adapt_input_channels(value, own[target]) if adapt_input_channels else None
            if adapted is None:
                mismatched.append(f"{target}: file {tuple(value.shape)} vs network {tuple(own[target].shape)}")
                continue
            logger.info("%s: summed %d input channels of %s into 1", path, value.shape[1], target)
            value = adapted
        loaded[target] = value.to(dtype=own[target].dtype)
    missing = [k for k in own if (prefix is None or k.startswith(prefix)) and k not in loaded]

    if strict and (mismatched or unexpected or missing):
        raise RuntimeError(
            f"strict loading of {path} failed: {len(mismatched)} shape mismatch(es) {mismatched[:5]}, "
            f"{len(unexpected)} unexpected key(s) {unexpected[:5]}, {len(missing)} missing key(s) {missing[:5]}"
        )
    if not loaded:
        raise ValueError(
            f"no parameter of {path} matches the network"
            + (f" under prefix {prefix!r}" if prefix else "")
            + f" (file keys such as {list(source)[:3]}, network keys such as {list(own)[:3]})"
        )
    for item in mismatched:
        logger.warning("pretrained %s: skipped (shape mismatch) %s", path, item)
    if unexpected:
        logger.warning("pretrained %s: %d key(s) match nothing in the network, e.g. %s", path, len(unexpected),
                       unexpected[:5])
    net.load_state_dict(loaded, strict=False)
    logger.info(
        "pretrained %s: loaded %d of %d network key(s)%s; %d skipped for shape, %d left at their initialisation, "
        "%d outside the prefix", path, len(loaded), len(own), f" under {prefix!r}" if prefix else "",
        len(mismatched), len(missing), ignored,
    )
    return list(loaded)
