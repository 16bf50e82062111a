"""Choosing and opening a source from settings: a local layout, the synthetic generator, or any
layout under an ``s3://`` prefix (mirrored locally first, so re-runs download only what changed)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sonoseg.io.readers import FILE_READERS, FolderReader, IugcReader, Reader, SyntheticReader
from sonoseg.io.samples import Rejected, SourceError

SOURCES = ("synthetic", *FILE_READERS, "s3")


def default_path(source: str) -> str:
    """Where a source's files live when ``ingestion.path`` is not set."""
    return f"data/01_raw/{source}"


def _layout_reader(layout: str, root: Path, options: Mapping[str, Any]) -> Reader:
    if layout not in FILE_READERS:
        raise SourceError(f"Unknown layout '{layout}': expected one of {', '.join(FILE_READERS)}.")
    if layout == "folder":
        names = options.get("folder", {}).get("classes") or ["background", "foreground"]
        return FolderReader(root, classes=dict(enumerate(names)))
    if layout == "iugc":
        return IugcReader(root, **dict(options.get("iugc", {})))
    return FILE_READERS[layout](root)


def open_source(options: Mapping[str, Any], s3_settings: Callable[[], Any]) -> tuple[Reader, list[Rejected]]:
    """The reader for ``options["source"]``, plus files rejected before reading (unsafe S3 keys).

    Args:
        options: the ``ingestion`` parameters (source, path, and per-source blocks).
        s3_settings: returns the resolved S3 settings; called only for the ``s3`` source, so other
            sources never need credentials.
    """
    source = options.get("source")
    if source not in SOURCES:
        raise SourceError(f"ingestion.source is '{source}': expected one of {', '.join(SOURCES)}.")
    if source == "synthetic":
        synthetic = options.get("synthetic", {})
        return SyntheticReader(int(synthetic.get("n_images", 0)), synthetic.get("generator", {})), []
    path = options.get("path") or default_path(source)
    if source != "s3":
        if str(path).startswith("s3://"):
            raise SourceError(f"ingestion.path '{path}' is an S3 URL: set ingestion.source=s3 and ingestion.s3.layout.")
        return _layout_reader(source, Path(path), options), []
    from sonoseg.io.s3 import mirror_prefix, parse_s3_url

    s3_options = options.get("s3", {})
    bucket, prefix = parse_s3_url(path)
    local = Path(s3_options.get("cache_dir", "data/01_raw/s3")) / bucket / prefix
    report = mirror_prefix(path, local, s3_settings(), progress=bool(options.get("progress", True)))
    return _layout_reader(s3_options.get("layout", "folder"), local, options), list(report.rejected)
