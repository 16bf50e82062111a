"""S3 access for ingestion: credentials, ``s3://`` URLs, safe key-to-path mapping and an idempotent mirror.

The public pieces:

* :class:`S3Settings` -- endpoint, region and key pair; its ``repr`` never shows a secret.
* :func:`resolve_s3_settings` -- the ``s3`` entry of Kedro credentials first, else the standard
  ``AWS_*`` environment variables; :class:`~sonoseg.io.samples.SourceError` when neither has a key pair.
* :func:`parse_s3_url` -- ``s3://bucket/prefix/`` to ``(bucket, "prefix/")``.
* :func:`local_path_for_key` -- maps an object key to a file under a folder, refusing any key that
  could land outside it (:class:`UnsafeKeyError`).
* :func:`mirror_prefix` -- downloads every object under a prefix, only new or changed ones on a
  re-run, removes local copies of objects that disappeared, and reports unsafe keys as
  :class:`~sonoseg.io.samples.Rejected` instead of dropping them.

This module does not import Kedro.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from sonoseg.io.samples import Rejected, SampleError, SourceError

logger = logging.getLogger(__name__)

__all__ = [
    "INDEX_NAME",
    "MirrorReport",
    "S3Settings",
    "UnsafeKeyError",
    "local_path_for_key",
    "mirror_prefix",
    "parse_s3_url",
    "resolve_s3_settings",
]

INDEX_NAME = ".s3_mirror.json"
"""The mirror's index file, kept at the top of the destination folder."""

TMP_DIR_NAME = ".s3_mirror.tmp"
"""Folder (under the destination) where downloads are written before ``os.replace``."""

_RESERVED_TOP_LEVEL = frozenset({INDEX_NAME, TMP_DIR_NAME})
_INDEX_VERSION = 1
_CHUNK = 1024 * 1024
_MAX_NAME_BYTES = 255
_DOWNLOAD_ATTEMPTS = 3
_INDEX_SAVE_EVERY = 50

_CREDENTIALS_FILE = "conf/local/credentials.yml"
_CREDENTIAL_KEYS = ("aws_access_key_id", "aws_secret_access_key")
_ENV_KEY_ID = "AWS_ACCESS_KEY_ID"
_ENV_SECRET = "AWS_SECRET_ACCESS_KEY"
_ENV_TOKEN = "AWS_SESSION_TOKEN"
_ENV_ENDPOINTS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")  # service-specific one wins, as in boto3
_ENV_REGIONS = ("AWS_REGION", "AWS_DEFAULT_REGION")

# Modern and legacy (us-east-1) bucket names: 3-63 chars, letters, digits, '.', '-', '_',
# starting and ending with a letter or digit.
_BUCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$")
_URL_FORM = "s3://<bucket>/<prefix>/ (for example s3://my-bucket/psfhs/raw/)"


# --------------------------------------------------------------------------------------------
# Settings and credentials
# --------------------------------------------------------------------------------------------


def _mask(value: str | None) -> str | None:
    if value is None:
        return None
    return "****" + value[-4:] if len(value) > 4 else "****"


@dataclass(frozen=True, kw_only=True)
class S3Settings:
    """Where and as whom to talk to S3.

    ``repr``/``str`` show the access key id masked to its last four characters and never the
    secret key or the session token.
    ``max_attempts`` and ``connect_timeout`` tune botocore's retries for flaky or dead endpoints.
    """

    endpoint_url: str | None = None
    region_name: str | None = None
    aws_access_key_id: str
    aws_secret_access_key: str
    aws_session_token: str | None = None
    max_attempts: int = 5
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    def __repr__(self) -> str:
        return (
            f"S3Settings(endpoint_url={self.endpoint_url!r}, region_name={self.region_name!r}, "
            f"aws_access_key_id={_mask(self.aws_access_key_id)!r}, aws_secret_access_key='****', "
            f"aws_session_token={'****' if self.aws_session_token else None!r})"
        )

    __str__ = __repr__

    def redact(self, text: str) -> str:
        """``text`` with the secret key and session token replaced by ``****`` (defence in depth)."""
        for secret in (self.aws_secret_access_key, self.aws_session_token):
            if secret:
                text = text.replace(secret, "****")
        return text

    def describe_endpoint(self) -> str:
        return self.endpoint_url or "the default AWS endpoint"

    def client(self, *, max_pool_connections: int = 10) -> Any:
        """A boto3 S3 client for these settings (path-style addressing when an endpoint is set)."""
        import boto3
        from botocore.config import Config

        config = Config(
            region_name=self.region_name,
            retries={"mode": "standard", "max_attempts": max(1, int(self.max_attempts))},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_pool_connections=max_pool_connections,
            s3={"addressing_style": "path"} if self.endpoint_url else None,
        )
        session = boto3.session.Session(
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
            region_name=self.region_name,
        )
        return session.client("s3", endpoint_url=self.endpoint_url, config=config)


def _clean(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _first(environ: Mapping[str, str], names: Iterable[str]) -> str | None:
    for name in names:
        value = _clean(environ.get(name))
        if value:
            return value
    return None


def resolve_s3_settings(credentials: Mapping[str, Any] | None, environ: Mapping[str, str]) -> S3Settings:
    """Build :class:`S3Settings` from Kedro credentials, else from the environment.

    The ``s3`` entry of ``credentials`` (``aws_access_key_id``, ``aws_secret_access_key``,
    optional ``aws_session_token``, ``endpoint_url``, ``region_name``) wins when it holds a key
    pair. Otherwise ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (and ``AWS_SESSION_TOKEN``)
    from ``environ`` are used. The endpoint and region come from the same place as the key pair,
    falling back to ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` and ``AWS_REGION``/
    ``AWS_DEFAULT_REGION``. A session token is never mixed across sources.

    Raises:
        SourceError: neither source has a full key pair, or the ``s3`` entry is not a mapping.
    """
    env_endpoint = _first(environ, _ENV_ENDPOINTS)
    env_region = _first(environ, _ENV_REGIONS)
    notes: list[str] = []

    entry = credentials.get("s3") if credentials else None
    if entry is not None and not isinstance(entry, Mapping):
        raise SourceError(
            f"The 's3' entry of {_CREDENTIALS_FILE} must be a mapping with the keys "
            f"{', '.join(_CREDENTIAL_KEYS)} (optionally aws_session_token, endpoint_url, region_name), "
            f"not a {type(entry).__name__}."
        )
    if entry:
        key_id = _clean(entry.get("aws_access_key_id"))
        secret = _clean(entry.get("aws_secret_access_key"))
        if key_id and secret:
            return S3Settings(
                endpoint_url=_clean(entry.get("endpoint_url")) or env_endpoint,
                region_name=_clean(entry.get("region_name")) or env_region,
                aws_access_key_id=key_id,
                aws_secret_access_key=secret,
                aws_session_token=_clean(entry.get("aws_session_token")),
            )
        missing = [name for name, value in zip(_CREDENTIAL_KEYS, (key_id, secret)) if not value]
        notes.append(f"the 's3' credentials entry lacks {' and '.join(missing)}")
        logger.warning("Ignoring the incomplete 's3' credentials entry (it lacks %s).", " and ".join(missing))

    key_id = _clean(environ.get(_ENV_KEY_ID))
    secret = _clean(environ.get(_ENV_SECRET))
    if key_id and secret:
        return S3Settings(
            endpoint_url=env_endpoint,
            region_name=env_region,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            aws_session_token=_clean(environ.get(_ENV_TOKEN)),
        )
    if key_id or secret:
        notes.append(f"only {_ENV_KEY_ID if key_id else _ENV_SECRET} is set in the environment")

    detail = f" (Found: {'; '.join(notes)}.)" if notes else ""
    raise SourceError(
        "No S3 credentials were found. Add an 's3:' entry to "
        f"{_CREDENTIALS_FILE} with aws_access_key_id and aws_secret_access_key (optionally "
        "aws_session_token, endpoint_url and region_name), or set the environment variables "
        f"{_ENV_KEY_ID} and {_ENV_SECRET} (optionally {_ENV_TOKEN}, AWS_ENDPOINT_URL or "
        f"AWS_ENDPOINT_URL_S3, and AWS_DEFAULT_REGION or AWS_REGION).{detail}"
    )


# --------------------------------------------------------------------------------------------
# URLs and keys
# --------------------------------------------------------------------------------------------


def parse_s3_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket/prefix/`` into ``(bucket, prefix)``.

    The prefix is ``""`` for the whole bucket, otherwise it always ends with ``/`` so that
    ``s3://b/raw`` does not also match ``raw2/...``.

    Raises:
        SourceError: anything that is not ``s3://<bucket>[/<prefix>]`` with a valid bucket name
            and a prefix free of empty, ``.`` or ``..`` parts, backslashes and control characters.
    """

    def bad(why: str) -> SourceError:
        return SourceError(f"Invalid S3 URL {url!r}: {why}. Expected the form {_URL_FORM}.")

    if not isinstance(url, str):
        raise bad(f"expected a string, got {type(url).__name__}")
    if not url.startswith("s3://"):
        raise bad("it must start with 's3://'")
    if any(ch in url for ch in "?#"):
        raise bad("query strings and fragments are not allowed")
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in url) or "\\" in url:
        raise bad("it contains control characters or backslashes")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise bad("the bucket name is missing")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise bad(f"{bucket!r} is not a valid bucket name")
    if prefix:
        parts = prefix[:-1].split("/") if prefix.endswith("/") else prefix.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise bad("the prefix has an empty, '.' or '..' part")
        prefix = "/".join(parts) + "/"
    return bucket, prefix


class UnsafeKeyError(SampleError):
    """An object key that cannot be mapped to a file inside the destination folder."""


def local_path_for_key(key: str, prefix: str, dest_dir: str | os.PathLike[str]) -> Path:
    """The file under ``dest_dir`` for object ``key``, keeping its layout relative to ``prefix``.

    Refuses (raises :class:`UnsafeKeyError`) keys not under ``prefix``, and keys whose relative
    part is empty, starts with ``/``, ends with ``/`` (a folder), has an empty, ``.`` or ``..``
    part, a backslash, a NUL or other control character, a part over 255 bytes, or names the
    mirror's own bookkeeping files. The final path is resolved (symlinks followed) and must lie
    strictly inside the resolved ``dest_dir``.
    """

    def refuse(reason: str) -> UnsafeKeyError:
        return UnsafeKeyError(key, reason)

    if not isinstance(key, str):
        raise refuse("the key is not a string")
    if not key.startswith(prefix):
        raise refuse(f"the key is not under the prefix {prefix!r}")
    rel = key[len(prefix) :]
    if "\x00" in rel:
        raise refuse("the key contains a NUL character")
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in rel):
        raise refuse("the key contains control characters")
    if "\\" in rel:
        raise refuse("the key contains a backslash, which could be read as a path separator")
    if not rel:
        raise refuse("the key has no file name after the prefix")
    if rel.startswith("/"):
        raise refuse("the key is an absolute path after the prefix (it starts with '/')")
    if rel.endswith("/"):
        raise refuse("the key ends with '/' (a folder name, not a file)")
    parts = rel.split("/")
    for part in parts:
        if part == "":
            raise refuse("the key has an empty path component ('//')")
        if part in (".", ".."):
            raise refuse(f"the key has a {part!r} path component")
        if len(part.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES:
            raise refuse(f"a path component is longer than {_MAX_NAME_BYTES} bytes")
    if parts[0] in _RESERVED_TOP_LEVEL:
        raise refuse(f"the name {parts[0]!r} is reserved for the mirror's own files")

    root = Path(dest_dir).resolve()
    target = root.joinpath(*parts).resolve()
    if target == root or not target.is_relative_to(root):
        raise refuse(f"the key resolves to {target}, outside the destination folder {root}")
    return target


# --------------------------------------------------------------------------------------------
# Mirror
# --------------------------------------------------------------------------------------------


@dataclass
class MirrorReport:
    """What one :func:`mirror_prefix` run did. Keys are full object keys."""

    downloaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    bytes_downloaded: int = 0
    url: str = ""
    dest_dir: Path | None = None

    def summary(self) -> str:
        return (
            f"S3 mirror {self.url} -> {self.dest_dir}: {len(self.downloaded)} downloaded "
            f"({self.bytes_downloaded} bytes), {len(self.unchanged)} unchanged, "
            f"{len(self.removed)} removed, {len(self.rejected)} rejected"
        )


@dataclass(frozen=True)
class _Object:
    key: str
    etag: str
    size: int
    last_modified: float | None = None


class _ObjectGone(Exception):
    """The object disappeared between listing and download."""


class _ShortRead(Exception):
    """The body ended before Content-Length bytes arrived."""


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", "") or "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code or (str(status) if status else "")


def _source_error(exc: Exception, url: str, settings: S3Settings, action: str) -> SourceError:
    """A SourceError naming the URL and endpoint for a botocore failure; never contains a secret."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    where = f"{url} (endpoint: {settings.describe_endpoint()})"
    if isinstance(exc, ClientError):
        code = _error_code(exc)
        if code in ("NoSuchBucket", "404"):
            msg = f"Cannot {action} {where}: the bucket does not exist."
        elif code in ("AccessDenied", "403", "AllAccessDisabled"):
            msg = f"Cannot {action} {where}: access denied for access key {_mask(settings.aws_access_key_id)}."
        elif code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"):
            msg = (
                f"Cannot {action} {where}: the credentials were rejected ({code}) for access key "
                f"{_mask(settings.aws_access_key_id)}; check {_CREDENTIALS_FILE} or the AWS_* variables."
            )
        else:
            message = str(exc.response.get("Error", {}).get("Message", "") or "")
            msg = f"Cannot {action} {where}: S3 error {code or 'unknown'}: {message}".rstrip(": ")
    elif isinstance(exc, (EndpointConnectionError, ConnectTimeoutError)):
        msg = f"Cannot {action} {where}: the endpoint could not be reached ({type(exc).__name__})."
    elif isinstance(exc, ReadTimeoutError):
        msg = f"Cannot {action} {where}: the endpoint stopped answering (read timeout)."
    elif isinstance(exc, NoCredentialsError):
        msg = f"Cannot {action} {where}: no credentials were sent."
    else:
        msg = f"Cannot {action} {where}: {type(exc).__name__}: {exc}"
    return SourceError(settings.redact(msg))


def _list_objects(client: Any, bucket: str, prefix: str) -> Iterator[_Object]:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", ()) or ():
            modified = item.get("LastModified")
            yield _Object(
                key=item["Key"],
                etag=str(item.get("ETag", "")),
                size=int(item.get("Size", 0)),
                last_modified=modified.timestamp() if modified is not None else None,
            )


def _load_index(path: Path, canonical_url: str) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        objects = data["objects"]
        url = data["url"]
        if not isinstance(objects, dict):
            raise TypeError("'objects' is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("Ignoring unreadable S3 mirror index %s (%s); every object is checked again.", path, exc)
        return {}
    if url != canonical_url:
        raise SourceError(
            f"{path.parent} already holds a mirror of {url}, not {canonical_url}. "
            "Use a different destination folder (or delete that one) to mirror another prefix."
        )
    return {
        str(k): {"etag": str(v.get("etag", "")), "size": int(v.get("size", -1))}
        for k, v in objects.items()
        if isinstance(v, dict)
    }


def _save_index(path: Path, canonical_url: str, index: Mapping[str, Mapping[str, Any]]) -> None:
    payload = {"version": _INDEX_VERSION, "url": canonical_url, "objects": dict(sorted(index.items()))}
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(json.dumps(payload, indent=1, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _copy_stream(body: Any, out: BinaryIO, on_bytes: Any) -> int:
    written = 0
    for chunk in body.iter_chunks(_CHUNK):
        out.write(chunk)
        written += len(chunk)
        on_bytes(len(chunk))
    return written


def _prune_empty_dirs(start: Path, root: Path) -> None:
    current = start
    while current != root and current.is_relative_to(root):
        try:
            current.rmdir()
        except OSError:
            return
        current = current.parent


def _find_conflicts(paths: Mapping[str, Path]) -> set[str]:
    """Keys whose file path is also needed as a folder by another key (``a/b`` vs ``a/b/c``)."""
    folders: set[Path] = set()
    for path in paths.values():
        folders.update(path.parents)
    return {key for key, path in paths.items() if path in folders}


def mirror_prefix(
    url: str,
    dest_dir: str | os.PathLike[str],
    settings: S3Settings,
    progress: bool = True,
    *,
    max_workers: int = 8,
) -> MirrorReport:
    """Mirror every object under ``url`` into ``dest_dir``, keeping the layout below the prefix.

    Idempotent: ``dest_dir/.s3_mirror.json`` records key -> (ETag, size); a re-run downloads only
    objects that are new, whose ETag or size changed, or whose local file is missing or has a
    different size, and deletes local files of objects (listed in that index) that are gone.
    Files not written by the mirror are never deleted. Each download is written under
    ``dest_dir/.s3_mirror.tmp/`` and moved into place with ``os.replace``.

    Unsafe keys (see :func:`local_path_for_key`) and keys whose file name is also used as a folder
    by another key are not downloaded; they are listed in ``report.rejected`` as
    ``Rejected(file="s3://bucket/key", reason=...)``. Zero-byte folder markers (keys ending in
    ``/``) carry no data and are skipped.

    Raises:
        SourceError: bad URL, missing bucket, access denied, rejected credentials, unreachable
            endpoint, no objects under the prefix, ``dest_dir`` already mirroring another URL,
            or a local write failure. Messages name the URL and endpoint, never a secret.
    """
    from botocore.exceptions import BotoCoreError, ClientError
    from tqdm.auto import tqdm

    bucket, prefix = parse_s3_url(url)
    canonical_url = f"s3://{bucket}/{prefix}"
    client = settings.client(max_pool_connections=max(10, max_workers + 2))

    try:
        listed = list(_list_objects(client, bucket, prefix))
    except (ClientError, BotoCoreError) as exc:
        raise _source_error(exc, canonical_url, settings, "list") from exc

    markers = [o for o in listed if o.key.endswith("/") and o.size == 0]
    objects = [o for o in listed if not (o.key.endswith("/") and o.size == 0)]
    if not objects:
        raise SourceError(
            f"No objects found under {canonical_url} (endpoint: {settings.describe_endpoint()}); "
            "check the bucket and prefix. Local files were left untouched."
        )
    if markers:
        logger.debug("Skipping %d zero-byte folder marker(s) under %s.", len(markers), canonical_url)

    root = Path(dest_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SourceError(f"Cannot create the mirror folder {root} for {canonical_url}: {exc}") from exc
    root = root.resolve()
    report = MirrorReport(url=canonical_url, dest_dir=root)
    index_path = root / INDEX_NAME
    index = _load_index(index_path, canonical_url)

    # Map keys to paths, rejecting unsafe keys and file/folder clashes.
    paths: dict[str, Path] = {}
    for obj in objects:
        try:
            paths[obj.key] = local_path_for_key(obj.key, prefix, root)
        except UnsafeKeyError as exc:
            report.rejected.append(Rejected(file=f"s3://{bucket}/{obj.key}", reason=exc.reason))
    for key in sorted(_find_conflicts(paths)):
        del paths[key]
        report.rejected.append(
            Rejected(
                file=f"s3://{bucket}/{key}",
                reason="its file name is also used as a folder by other keys under the prefix",
            )
        )
    for rejected in report.rejected:
        logger.warning("Not mirroring %s: %s", rejected.file, rejected.reason)

    # Remove local copies of objects that are gone (or are now rejected) -- only files we wrote.
    by_key = {o.key: o for o in objects if o.key in paths}
    for key in sorted(set(index) - set(by_key)):
        _remove_local(key, prefix, root)
        del index[key]
        report.removed.append(key)

    # Decide what to download.
    todo: list[_Object] = []
    for key in sorted(by_key):
        obj = by_key[key]
        entry = index.get(key)
        path = paths[key]
        if (
            entry is not None
            and entry["etag"] == obj.etag
            and entry["size"] == obj.size
            and path.is_file()
            and path.stat().st_size == obj.size
        ):
            report.unchanged.append(key)
        else:
            todo.append(obj)

    tmp_dir = root / TMP_DIR_NAME
    shutil.rmtree(tmp_dir, ignore_errors=True)  # leftovers of an interrupted run
    lock = threading.Lock()
    bar = tqdm(
        total=sum(o.size for o in todo),
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"s3://{bucket}/{prefix}",
        disable=not progress or not todo,
    )

    def on_bytes(n: int) -> None:
        with lock:
            bar.update(n)

    def download(obj: _Object) -> tuple[_Object, int]:
        return _download_one(client, bucket, obj, paths[obj.key], tmp_dir, on_bytes, settings, canonical_url)

    done_since_save = 0
    try:
        if todo:
            tmp_dir.mkdir(exist_ok=True)
            with ThreadPoolExecutor(max_workers=max(1, max_workers), thread_name_prefix="s3-mirror") as pool:
                futures = [pool.submit(download, o) for o in todo]
                try:
                    for future in as_completed(futures):
                        try:
                            got, nbytes = future.result()
                        except _ObjectGone as gone:
                            key = str(gone)
                            logger.warning("s3://%s/%s disappeared during the mirror; removing it.", bucket, key)
                            if key in index:
                                _remove_local(key, prefix, root)
                                del index[key]
                                report.removed.append(key)
                            continue
                        index[got.key] = {"etag": got.etag, "size": got.size}
                        report.downloaded.append(got.key)
                        report.bytes_downloaded += nbytes
                        done_since_save += 1
                        if done_since_save >= _INDEX_SAVE_EVERY:
                            _save_index(index_path, canonical_url, index)
                            done_since_save = 0
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
    finally:
        bar.close()
        _save_index(index_path, canonical_url, index)
        shutil.rmtree(tmp_dir, ignore_errors=True)

    report.downloaded.sort()
    report.removed.sort()
    logger.info("%s", report.summary())
    return report


def _remove_local(key: str, prefix: str, root: Path) -> None:
    try:
        path = local_path_for_key(key, prefix, root)
    except UnsafeKeyError:
        return  # never written by us in the first place
    try:
        path.unlink(missing_ok=True)
    except IsADirectoryError:
        return
    except OSError as exc:
        raise SourceError(f"Cannot remove {path} (its object {key!r} is gone): {exc}") from exc
    _prune_empty_dirs(path.parent, root)


def _download_one(
    client: Any,
    bucket: str,
    obj: _Object,
    target: Path,
    tmp_dir: Path,
    on_bytes: Any,
    settings: S3Settings,
    canonical_url: str,
) -> tuple[_Object, int]:
    """Download one object to a temporary file, then ``os.replace`` it onto ``target``.

    Returns the object as actually fetched (ETag and size from the GET response) and the byte
    count. Transient network failures and short reads are retried a few times; local write
    failures are not.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    source = f"s3://{bucket}/{obj.key}"
    for attempt in range(1, _DOWNLOAD_ATTEMPTS + 1):
        tmp = tmp_dir / f"{uuid.uuid4().hex}.part"
        counted = 0

        def count(n: int) -> None:
            nonlocal counted
            counted += n
            on_bytes(n)

        try:
            try:
                response = client.get_object(Bucket=bucket, Key=obj.key)
            except ClientError as exc:
                if _error_code(exc) in ("NoSuchKey", "404"):
                    raise _ObjectGone(obj.key) from exc
                raise _source_error(exc, source, settings, "download") from exc
            expected = int(response.get("ContentLength", -1))
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                with os.fdopen(fd, "wb") as out:
                    written = _copy_stream(response["Body"], out, count)
                    out.flush()
                    os.fsync(out.fileno())
                if expected >= 0 and written != expected:
                    raise _ShortRead(f"got {written} of {expected} bytes")
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, target)
            except OSError as exc:
                raise SourceError(
                    f"Cannot write {target} for {source} (mirror of {canonical_url}): {exc}"
                ) from exc
            if obj.last_modified is not None:
                try:
                    os.utime(target, (obj.last_modified, obj.last_modified))
                except OSError:
                    pass
            return _Object(obj.key, str(response.get("ETag") or obj.etag), written, obj.last_modified), written
        except (BotoCoreError, _ShortRead) as exc:
            on_bytes(-counted)
            if attempt == _DOWNLOAD_ATTEMPTS:
                if isinstance(exc, BotoCoreError):
                    raise _source_error(exc, source, settings, "download") from exc
                raise SourceError(f"Cannot download {source}: short read ({exc}).") from exc
            logger.warning("Download of %s failed (attempt %d/%d): %s", source, attempt, _DOWNLOAD_ATTEMPTS, exc)
        finally:
            tmp.unlink(missing_ok=True)
    raise AssertionError("unreachable")  # pragma: no cover
