"""The object store of the stack is a real S3 endpoint (S3Proxy, or the store
BOXBUS_OBJECT_STORE_URL names): documents go in and come back byte for byte, presigned URLs
work without keys, and every refusal says what was wrong."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bus.devstack import Component, LocalStack, StackInfo, with_object_store
from bus.devstack import procs as dev_procs
from bus.devstack.state import StackState
from bus.objectstore import (
    ObjectMissing,
    ObjectStore,
    ObjectStoreDenied,
    ObjectStoreError,
    ObjectStoreUnavailable,
    ObjectTooLarge,
    fetch_url,
)
from bus.settings import Settings
from tests.conftest import boxbus_cli

pytestmark = pytest.mark.stack

MiB = 1024 * 1024


def new_key(name: str = "doc.bin") -> str:
    return f"it/{uuid.uuid4().hex}/{name}"


@pytest.fixture
async def store(store_settings: Settings) -> AsyncIterator[ObjectStore]:
    async with ObjectStore.from_settings(store_settings) as opened:
        yield opened


async def test_a_2_mib_document_comes_back_byte_for_byte(store: ObjectStore) -> None:
    key = new_key("order.pdf")
    data = os.urandom(2 * MiB)
    await store.put(key, data, "application/pdf")
    assert await store.get(key) == data
    # Stored again under the same key: replaced.
    await store.put(key, b"second version")
    assert await store.get(key) == b"second version"


async def test_exists_and_delete(store: ObjectStore) -> None:
    key = new_key()
    assert not await store.exists(key)
    await store.put(key, b"x" * 10)
    assert await store.exists(key)
    await store.delete(key)
    assert not await store.exists(key)
    await store.delete(key)  # deleting what is gone is no error, as on S3


async def test_a_missing_key_is_ObjectMissing(store: ObjectStore) -> None:
    key = new_key()
    with pytest.raises(ObjectMissing) as missing:
        await store.get(key)
    assert key in str(missing.value) and store.bucket in str(missing.value)
    assert missing.value.code == "NoSuchKey" and not missing.value.retriable


async def test_a_presigned_url_is_fetched_without_keys(store: ObjectStore) -> None:
    key = new_key("delivery note.pdf")  # a space: the URL must quote it
    data = os.urandom(MiB + 17)
    await store.put(key, data, "application/pdf")
    url = await store.presign_get(key, expires_s=300)
    assert "X-Amz-Signature=" in url and store.bucket in url
    assert await fetch_url(url, max_bytes=len(data)) == data


async def test_a_presigned_url_with_its_key_altered_is_refused(store: ObjectStore) -> None:
    key, other = new_key("a.pdf"), new_key("b.pdf")
    await store.put(key, b"for the partner")
    await store.put(other, b"not for the partner")
    url = await store.presign_get(key, expires_s=300)
    altered = url.replace(key.split("/")[1], other.split("/")[1]).replace("a.pdf", "b.pdf")
    assert altered != url
    with pytest.raises(ObjectStoreDenied) as refused:
        await fetch_url(altered, max_bytes=MiB)
    error = refused.value
    assert error.status == 403 and error.code == "SignatureDoesNotMatch"
    assert "403 SignatureDoesNotMatch" in str(error)
    assert "changed after it was signed" in str(error)
    assert "X-Amz-Signature" not in str(error)  # the link's credential is never repeated


async def test_an_expired_presigned_url_is_refused(store: ObjectStore) -> None:
    key = new_key()
    await store.put(key, b"short-lived")
    url = await store.presign_get(key, expires_s=1)
    await asyncio.sleep(2)
    with pytest.raises(ObjectStoreDenied) as refused:
        await fetch_url(url, max_bytes=MiB)
    assert refused.value.status == 403 and refused.value.code == "AccessDenied"
    assert "expired" in str(refused.value)


async def test_a_presigned_url_of_a_missing_object_is_ObjectMissing(store: ObjectStore) -> None:
    url = await store.presign_get(new_key(), expires_s=60)
    with pytest.raises(ObjectMissing) as missing:
        await fetch_url(url, max_bytes=MiB)
    assert "404 NoSuchKey" in str(missing.value)


async def test_fetch_url_stops_at_max_bytes(store: ObjectStore) -> None:
    key = new_key()
    await store.put(key, os.urandom(2 * MiB))
    url = await store.presign_get(key, expires_s=60)
    with pytest.raises(ObjectTooLarge) as too_large:
        await fetch_url(url, max_bytes=MiB)
    assert f"larger than the {MiB} bytes" in str(too_large.value)
    assert "max_bytes" in str(too_large.value)
    assert len(await fetch_url(url, max_bytes=2 * MiB)) == 2 * MiB


async def test_fetch_url_of_an_address_nobody_serves_is_unavailable() -> None:
    (port,) = dev_procs.free_ports(1)
    with pytest.raises(ObjectStoreUnavailable) as unreachable:
        await fetch_url(f"http://127.0.0.1:{port}/boxbus/k?X-Amz-Signature=00",
                        max_bytes=10, timeout=5)
    assert unreachable.value.retriable
    assert f"cannot fetch http://127.0.0.1:{port}/boxbus/k" in str(unreachable.value)
    assert "X-Amz-Signature" not in str(unreachable.value)


@pytest.mark.embedded  # it makes a bucket: not on a store someone else runs
async def test_ensure_bucket_is_idempotent_and_a_new_bucket_is_made(
    store_settings: Settings,
) -> None:
    async with ObjectStore.from_settings(store_settings) as store:
        await store.ensure_bucket()  # made by `dev up` already
        assert store.bucket in await store.list_buckets()
    other = store_settings.model_copy(update={"object_store_bucket": f"it-{uuid.uuid4().hex}"})
    async with ObjectStore.from_settings(other) as store:
        with pytest.raises(ObjectStoreError) as no_bucket:
            await store.put("k", b"v")
        assert "has no bucket" in str(no_bucket.value)
        assert "ensure_bucket" in str(no_bucket.value)
        await store.ensure_bucket()
        await store.put("k", b"v")
        assert await store.get("k") == b"v"


@pytest.mark.embedded
async def test_wrong_keys_are_refused_with_what_to_check(store_settings: Settings) -> None:
    wrong = store_settings.model_copy(update={"object_store_access_key": "NOT-A-KEY"})
    async with ObjectStore.from_settings(wrong) as store:
        with pytest.raises(ObjectStoreDenied) as refused:
            await store.get(new_key())
    assert refused.value.code == "InvalidAccessKeyId"
    assert "BOXBUS_OBJECT_STORE_ACCESS_KEY" in str(refused.value)


@pytest.mark.embedded
def test_the_stack_keeps_the_store_keys_private_and_reports_them(
    settings: Settings, stack: StackInfo, env_for_cli: dict[str, str]
) -> None:
    path = stack.object_store_credentials
    assert path is not None and path.parent == settings.run_dir / "objectstore"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((path.parent / "s3proxy.properties").stat().st_mode) == 0o600
    kept = json.loads(path.read_text())
    assert kept["url"] == stack.object_store_url and kept["bucket"] == stack.object_store_bucket
    env = stack.object_store_env()
    assert env["BOXBUS_OBJECT_STORE_URL"] == stack.object_store_url
    assert env["BOXBUS_OBJECT_STORE_SECRET_KEY"] == kept["secret_key"]
    # A command finds the running stack's store as it finds its registry: by the run dir.
    assert with_object_store(settings).object_store_url == stack.object_store_url
    # S3Proxy logs at a quiet level (it would log every request at DEBUG).
    log = Path(path.parent / "objectstore.log").read_text()
    assert "DEBUG" not in log
    status = subprocess.run([*boxbus_cli(), "dev", "status"], env=env_for_cli,
                            capture_output=True, text=True, check=True)
    assert "objectstore" in status.stdout and str(stack.object_store_url) in status.stdout
    assert kept["secret_key"] not in status.stdout



@pytest.mark.embedded
async def test_a_killed_store_comes_back_with_its_objects_and_keys(tmp_path: Path) -> None:
    settings = Settings(run_dir=tmp_path / "run", object_store_url=None)
    local = LocalStack(settings, components=frozenset({Component.OBJECT_STORE}), base_port=0)
    first = await local.up()
    try:
        assert first.components == {"objectstore": "running"}
        async with ObjectStore.from_settings(first.object_store_settings(settings)) as store:
            await store.put("kept/doc.txt", b"still here", "text/plain")
        state = StackState.load(settings.run_dir)
        assert state is not None
        dev_procs.kill(state.processes["objectstore"])
        assert local.status().components == {"objectstore": "stopped"}  # type: ignore[union-attr]
        again = await local.up()
        assert again.processes["objectstore"] != first.processes["objectstore"]
        assert again.object_store_url == first.object_store_url
        async with ObjectStore.from_settings(again.object_store_settings(settings)) as store:
            assert await store.get("kept/doc.txt") == b"still here"
    finally:
        stopped = local.down()
    assert stopped == ["objectstore"]
    assert not settings.run_dir.exists()
