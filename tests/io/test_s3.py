"""S3 access: credentials, URLs, safe key mapping and the idempotent mirror, against a real moto server."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    from support.s3_server import FAKE_SECRET_ACCESS_KEY, MotoS3Server, moto_s3_server
except ImportError:  # run without ``pythonpath = ["tests"]``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from support.s3_server import FAKE_SECRET_ACCESS_KEY, MotoS3Server, moto_s3_server

from sonoseg.io import s3 as s3mod
from sonoseg.io.s3 import (
    INDEX_NAME,
    MirrorReport,
    S3Settings,
    UnsafeKeyError,
    local_path_for_key,
    mirror_prefix,
    parse_s3_url,
    resolve_s3_settings,
)
from sonoseg.io.samples import Rejected, SampleError, SourceError

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
TOKEN = "FwoGZXIvYXdzEXAMPLE-session-token-value"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server() -> Iterator[MotoS3Server]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        mp.setenv("no_proxy", "127.0.0.1,localhost")
        with moto_s3_server() as running:
            yield running


@pytest.fixture(scope="module")
def settings(server: MotoS3Server) -> S3Settings:
    return S3Settings(
        endpoint_url=server.endpoint_url,
        region_name=server.region_name,
        aws_access_key_id=server.aws_access_key_id,
        aws_secret_access_key=server.aws_secret_access_key,
    )


@pytest.fixture
def bucket(server: MotoS3Server) -> str:
    name = f"sonoseg-{uuid.uuid4().hex[:12]}"
    server.client().create_bucket(Bucket=name)
    return name


def put(server: MotoS3Server, bucket: str, objects: dict[str, bytes]) -> None:
    client = server.client()
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)


def files_under(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every regular file under ``root`` (bookkeeping files excluded)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != INDEX_NAME
    }


LAYOUT = {
    "raw/image_mha/00001.mha": b"IMG-1" * 100,
    "raw/image_mha/00002.mha": b"IMG-2" * 120,
    "raw/label_mha/00001.mha": b"LBL-1" * 100,
    "raw/label_mha/00002.mha": b"LBL-2" * 120,
    "raw/meta/deep/er/notes.txt": b"nested",
}


# --------------------------------------------------------------------------- mirror


def test_mirror_nested_layout_bytes(server: MotoS3Server, settings: S3Settings, bucket: str, tmp_path: Path) -> None:
    put(server, bucket, {**LAYOUT, "other/not-mirrored.txt": b"outside the prefix", "raw2/x": b"sibling"})
    dest = tmp_path / "mirror"

    report = mirror_prefix(f"s3://{bucket}/raw/", dest, settings, progress=True)

    assert isinstance(report, MirrorReport)
    expected = {k.removeprefix("raw/"): v for k, v in LAYOUT.items()}
    assert files_under(dest) == expected
    assert report.downloaded == sorted(LAYOUT)
    assert report.unchanged == [] and report.removed == [] and report.rejected == []
    assert report.bytes_downloaded == sum(len(v) for v in LAYOUT.values())
    index = json.loads((dest / INDEX_NAME).read_text())
    assert index["url"] == f"s3://{bucket}/raw/"
    assert set(index["objects"]) == set(LAYOUT)
    assert not (dest / s3mod.TMP_DIR_NAME).exists()


def test_rerun_change_add_delete(server: MotoS3Server, settings: S3Settings, bucket: str, tmp_path: Path) -> None:
    put(server, bucket, LAYOUT)
    dest = tmp_path / "mirror"
    url = f"s3://{bucket}/raw"  # no trailing slash: same prefix
    mirror_prefix(url, dest, settings, progress=False)

    again = mirror_prefix(url, dest, settings, progress=False)
    assert again.downloaded == [] and again.bytes_downloaded == 0
    assert sorted(again.unchanged) == sorted(LAYOUT)

    # Same size, different bytes: only the ETag tells; plus one new object.
    changed = {"raw/image_mha/00001.mha": b"NEW-1" * 100, "raw/image_mha/00003.mha": b"IMG-3"}
    put(server, bucket, changed)
    third = mirror_prefix(url, dest, settings, progress=False)
    assert third.downloaded == sorted(changed)
    assert third.bytes_downloaded == sum(len(v) for v in changed.values())
    assert (dest / "image_mha/00001.mha").read_bytes() == b"NEW-1" * 100
    assert (dest / "image_mha/00003.mha").read_bytes() == b"IMG-3"

    server.client().delete_object(Bucket=bucket, Key="raw/meta/deep/er/notes.txt")
    fourth = mirror_prefix(url, dest, settings, progress=False)
    assert fourth.removed == ["raw/meta/deep/er/notes.txt"]
    assert fourth.downloaded == []
    assert not (dest / "meta").exists()  # emptied folders are pruned
    assert "raw/meta/deep/er/notes.txt" not in json.loads((dest / INDEX_NAME).read_text())["objects"]


def test_missing_or_truncated_local_file_is_fetched_again(
    server: MotoS3Server, settings: S3Settings, bucket: str, tmp_path: Path
) -> None:
    put(server, bucket, LAYOUT)
    dest = tmp_path / "mirror"
    url = f"s3://{bucket}/raw/"
    mirror_prefix(url, dest, settings, progress=False)
    (dest / "image_mha/00001.mha").unlink()
    (dest / "label_mha/00002.mha").write_bytes(b"trunc")
    (dest / "my-own-notes.txt").write_text("not from S3")

    report = mirror_prefix(url, dest, settings, progress=False)

    assert report.downloaded == ["raw/image_mha/00001.mha", "raw/label_mha/00002.mha"]
    assert files_under(dest) == {**{k.removeprefix("raw/"): v for k, v in LAYOUT.items()}, "my-own-notes.txt": b"not from S3"}


def test_unsafe_keys_are_rejected_and_nothing_escapes(
    server: MotoS3Server, settings: S3Settings, bucket: str, tmp_path: Path
) -> None:
    bad = {
        "data/../escape.txt": b"escape",
        "data//abs": b"absolute",
        "data/a\\..\\..\\win.txt": b"backslash",
        "data/./dot.txt": b"dot",
        f"data/{INDEX_NAME}": b"{}",
        "data/clash": b"file that is also a folder",
    }
    good = {"data/ok/1.mha": b"fine", "data/clash/inner.txt": b"inner"}
    put(server, bucket, {**bad, **good})
    listed = {o["Key"] for o in server.client().list_objects_v2(Bucket=bucket)["Contents"]}
    assert set(bad) <= listed  # moto stores such keys verbatim

    work = tmp_path / "work"
    dest = work / "dest"
    report = mirror_prefix(f"s3://{bucket}/data/", dest, settings, progress=False)

    assert {r.file for r in report.rejected} == {f"s3://{bucket}/{k}" for k in bad}
    assert all(isinstance(r, Rejected) and r.reason for r in report.rejected)
    assert report.downloaded == sorted(good)
    assert files_under(dest) == {"ok/1.mha": b"fine", "clash/inner.txt": b"inner"}
    everything = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert all(p == "work" or p.startswith("work/dest") for p in everything), everything
    assert not Path("/abs").exists() or Path("/abs").read_bytes() != b"absolute"


def test_interrupted_download_leaves_no_half_file(
    server: MotoS3Server, settings: S3Settings, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(server, bucket, {"raw/big.mha": b"B" * 4096})
    dest = tmp_path / "mirror"
    url = f"s3://{bucket}/raw/"

    def crash(body, out, on_bytes):  # writes half, then the "process dies"
        out.write(body.read(2048))
        raise KeyboardInterrupt

    monkeypatch.setattr(s3mod, "_copy_stream", crash)
    with pytest.raises(KeyboardInterrupt):
        mirror_prefix(url, dest, settings, progress=False)
    assert not (dest / "big.mha").exists()
    assert files_under(dest) == {}
    monkeypatch.undo()

    report = mirror_prefix(url, dest, settings, progress=False)
    assert report.downloaded == ["raw/big.mha"]
    assert (dest / "big.mha").read_bytes() == b"B" * 4096


def test_empty_prefix_and_foreign_index_raise(
    server: MotoS3Server, settings: S3Settings, bucket: str, tmp_path: Path
) -> None:
    put(server, bucket, {"a/1.txt": b"1", "b/2.txt": b"2"})
    dest = tmp_path / "mirror"
    mirror_prefix(f"s3://{bucket}/a/", dest, settings, progress=False)

    with pytest.raises(SourceError, match="No objects found"):
        mirror_prefix(f"s3://{bucket}/typo/", dest, settings, progress=False)
    with pytest.raises(SourceError, match="already holds a mirror"):
        mirror_prefix(f"s3://{bucket}/b/", dest, settings, progress=False)
    assert files_under(dest) == {"1.txt": b"1"}


# --------------------------------------------------------------------------- source errors


def test_nonexistent_bucket_raises_without_secret(settings: S3Settings, tmp_path: Path) -> None:
    url = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/x/"
    with pytest.raises(SourceError) as info:
        mirror_prefix(url, tmp_path / "d", settings, progress=False)
    message = str(info.value)
    assert url in message and settings.endpoint_url in message
    assert "does not exist" in message
    assert FAKE_SECRET_ACCESS_KEY not in message
    assert not (tmp_path / "d").exists()


def test_unreachable_endpoint_raises(settings: S3Settings, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    unreachable = dataclasses.replace(settings, endpoint_url=dead, max_attempts=1, connect_timeout=2)
    with pytest.raises(SourceError, match="could not be reached") as info:
        mirror_prefix("s3://bucket/p/", tmp_path / "d", unreachable, progress=False)
    assert dead in str(info.value) and FAKE_SECRET_ACCESS_KEY not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "bucket/prefix/",
        "http://bucket/prefix/",
        "s3:/bucket/prefix",
        "s3://",
        "s3:///prefix/",
        "s3://ab/x",  # bucket too short
        "s3://bad_bucket!/x",
        "s3://bucket/a//b/",
        "s3://bucket/../etc/",
        "s3://bucket/x?versionId=1",
        "s3://bucket/x\\y",
        None,
    ],
)
def test_bad_urls_raise(url: object) -> None:
    with pytest.raises(SourceError) as info:
        parse_s3_url(url)  # type: ignore[arg-type]
    assert "s3://<bucket>/<prefix>/" in str(info.value)
    assert repr(url) in str(info.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/", ("bucket", "")),
        ("s3://bucket/raw", ("bucket", "raw/")),
        ("s3://my.bucket-1/psfhs/raw/", ("my.bucket-1", "psfhs/raw/")),
    ],
)
def test_parse_s3_url(url: str, expected: tuple[str, str]) -> None:
    assert parse_s3_url(url) == expected


# --------------------------------------------------------------------------- key -> path


@pytest.mark.parametrize(
    "key",
    [
        "p/../escape.txt",
        "p/a/../../escape.txt",
        "p//abs",
        "p//etc/passwd",
        "p/./x",
        "p/a\\b",
        "p/",
        "p/dir/",
        "p/a\x00b",
        "p/a\nb",
        "q/other",
        "p/" + "n" * 256,
        f"p/{INDEX_NAME}",
        f"p/{s3mod.TMP_DIR_NAME}/x",
    ],
)
def test_local_path_for_key_refuses(key: str, tmp_path: Path) -> None:
    with pytest.raises(UnsafeKeyError) as info:
        local_path_for_key(key, "p/", tmp_path)
    assert isinstance(info.value, SampleError)
    assert info.value.file == key and info.value.reason


def test_local_path_for_key_maps_inside(tmp_path: Path) -> None:
    assert local_path_for_key("p/image_mha/00001.mha", "p/", tmp_path) == tmp_path.resolve() / "image_mha/00001.mha"
    assert local_path_for_key("top.txt", "", tmp_path) == tmp_path.resolve() / "top.txt"
    assert local_path_for_key("p/..hidden/x..y", "p/", tmp_path) == tmp_path.resolve() / "..hidden/x..y"


def test_local_path_for_key_follows_symlinks_out(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    outside = tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    os.symlink(outside, dest / "link")
    with pytest.raises(UnsafeKeyError, match="outside the destination"):
        local_path_for_key("p/link/x.mha", "p/", dest)


# --------------------------------------------------------------------------- credentials


def test_credentials_beat_environment() -> None:
    credentials = {
        "s3": {
            "aws_access_key_id": "AKIACREDFILE0001",
            "aws_secret_access_key": SECRET,
            "aws_session_token": TOKEN,
            "endpoint_url": "http://127.0.0.1:9000",
            "region_name": "eu-west-1",
        }
    }
    environ = {
        "AWS_ACCESS_KEY_ID": "AKIAENVIRON00002",
        "AWS_SECRET_ACCESS_KEY": "env-secret",
        "AWS_SESSION_TOKEN": "env-token",
        "AWS_ENDPOINT_URL": "http://env:1",
        "AWS_DEFAULT_REGION": "us-west-2",
    }
    s = resolve_s3_settings(credentials, environ)
    assert (s.aws_access_key_id, s.aws_secret_access_key, s.aws_session_token) == ("AKIACREDFILE0001", SECRET, TOKEN)
    assert (s.endpoint_url, s.region_name) == ("http://127.0.0.1:9000", "eu-west-1")


def test_credentials_without_endpoint_fall_back_to_env_endpoint_but_not_token() -> None:
    credentials = {"s3": {"aws_access_key_id": "AKIACREDFILE0001", "aws_secret_access_key": SECRET}}
    environ = {"AWS_SESSION_TOKEN": "env-token", "AWS_ENDPOINT_URL": "http://env:1", "AWS_REGION": "ap-south-1"}
    s = resolve_s3_settings(credentials, environ)
    assert s.aws_session_token is None
    assert (s.endpoint_url, s.region_name) == ("http://env:1", "ap-south-1")


def test_environment_alone() -> None:
    environ = {
        "AWS_ACCESS_KEY_ID": "AKIAENVIRON00002",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": TOKEN,
        "AWS_ENDPOINT_URL": "http://generic:1",
        "AWS_ENDPOINT_URL_S3": "http://s3-specific:2",
        "AWS_DEFAULT_REGION": "us-west-2",
    }
    for credentials in (None, {}, {"other": {}}, {"s3": {"aws_access_key_id": "AKIAHALF"}}):
        s = resolve_s3_settings(credentials, environ)
        assert (s.aws_access_key_id, s.aws_secret_access_key, s.aws_session_token) == ("AKIAENVIRON00002", SECRET, TOKEN)
        assert (s.endpoint_url, s.region_name) == ("http://s3-specific:2", "us-west-2")


def test_no_credentials_raises_helpful_error() -> None:
    with pytest.raises(SourceError) as info:
        resolve_s3_settings(None, {"HOME": "/root"})
    message = str(info.value)
    assert "No S3 credentials were found" in message
    assert "conf/local/credentials.yml" in message
    for name in ("aws_access_key_id", "aws_secret_access_key", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert name in message
    assert "\n" not in message


def test_partial_credentials_error_never_shows_secret() -> None:
    with pytest.raises(SourceError) as info:
        resolve_s3_settings({"s3": {"aws_secret_access_key": SECRET}}, {"AWS_SECRET_ACCESS_KEY": TOKEN})
    message = str(info.value)
    assert SECRET not in message and TOKEN not in message
    assert "lacks aws_access_key_id" in message


def test_repr_masks_secrets() -> None:
    s = S3Settings(
        endpoint_url="http://127.0.0.1:9000",
        aws_access_key_id="AKIAABCDEFGH1234",
        aws_secret_access_key=SECRET,
        aws_session_token=TOKEN,
    )
    for text in (repr(s), str(s), f"{s}", repr([s])):
        assert SECRET not in text and TOKEN not in text
        assert "AKIAABCDEFGH1234" not in text and "1234" in text
    assert "http://127.0.0.1:9000" in repr(s)


def test_bad_bucket_error_never_contains_secret(server: MotoS3Server, tmp_path: Path) -> None:
    s = resolve_s3_settings(
        {"s3": {**server.credentials, "aws_secret_access_key": SECRET, "aws_session_token": TOKEN}},
        {"AWS_ENDPOINT_URL": server.endpoint_url},
    )
    with pytest.raises(SourceError) as info:
        mirror_prefix("s3://missing-bucket-zz/p/", tmp_path / "d", s, progress=False)
    message = str(info.value)
    assert SECRET not in message and TOKEN not in message
    assert "s3://missing-bucket-zz/p/" in message and server.endpoint_url in message
