"""The object store's pieces that need no store: settings, keys, the stack's files for it."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from bus.devstack import SmtpInfo, StackInfo, s3proxy, with_object_store
from bus.devstack.jvm import objectstore_artifacts
from bus.errors import BoxbusError, ConfigError
from bus.objectstore import ObjectMissing, ObjectStore, ObjectStoreError
from bus.resources import deploy_dir
from bus.settings import Settings


def test_from_settings_without_a_url_says_what_to_do(tmp_path: Path) -> None:
    settings = Settings(run_dir=tmp_path / "no-stack", object_store_url=None)
    with pytest.raises(ConfigError) as unknown:
        ObjectStore.from_settings(settings)
    text = str(unknown.value)
    assert "BOXBUS_OBJECT_STORE_URL is not set" in text
    assert "what to do:" in text and "boxbus dev up" in text
    # Without a stack in the run dir there is nothing to fill in.
    assert with_object_store(settings) is settings


def test_from_settings_takes_every_setting() -> None:
    store = ObjectStore.from_settings(Settings(
        object_store_url="https://s3.example.net/", object_store_region="eu-central-1",
        object_store_access_key="AK", object_store_secret_key=SecretStr("SK"),
        object_store_bucket="docs-1"))
    assert (store.url, store.bucket, store.region) == ("https://s3.example.net", "docs-1",
                                                      "eu-central-1")
    assert "SK" not in repr(store)
    assert issubclass(ObjectMissing, BoxbusError) and issubclass(ObjectMissing, ObjectStoreError)


@pytest.mark.parametrize(("field", "value"), [
    ("object_store_url", "s3.example.net"),
    ("object_store_url", "http://s3.example.net/?x=1"),
    ("object_store_bucket", "Docs"),
    ("object_store_bucket", "ab"),
    ("object_store_bucket", "-docs"),
])
def test_store_settings_are_checked(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as wrong:
        Settings(**{field: value})  # type: ignore[arg-type]
    assert field in str(wrong.value)


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", "./a", "x" * 1025])
async def test_keys_that_are_no_paths_are_refused_before_any_request(key: str) -> None:
    store = ObjectStore("http://127.0.0.1:9")  # never opened: the key is checked first
    with pytest.raises(ObjectStoreError) as refused:
        await store.put(key, b"")
    assert "is not an object key" in str(refused.value)


async def test_an_unopened_store_says_how_to_open_it() -> None:
    with pytest.raises(RuntimeError, match="async with"):
        await ObjectStore("http://127.0.0.1:9").get("k")


def test_the_stack_writes_the_store_config_private_and_readable_by_java(tmp_path: Path) -> None:
    home = s3proxy.StoreHome(tmp_path / "rün dir" / "objectstore")
    keys = s3proxy.StoreKeys.load_or_new(home.credentials)
    assert s3proxy.StoreKeys.load_or_new(home.credentials) == keys  # made once, kept
    s3proxy.write_config(home, 19100, keys)
    assert stat.S_IMODE(home.properties.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.credentials.stat().st_mode) == 0o600
    props = home.properties.read_text()
    assert props.isascii() and "r\\u00fcn dir" in props
    assert f"s3proxy.credential={keys.secret_key}\n" in props
    assert "s3proxy.endpoint=http://127.0.0.1:19100\n" in props
    assert "s3proxy.authorization=aws-v2-or-v4\n" in props
    assert '<root level="WARN">' in home.logback.read_text()  # it logs DEBUG by default


def test_stack_info_turns_the_store_into_settings_and_env(tmp_path: Path) -> None:
    home = s3proxy.StoreHome(tmp_path / "objectstore")
    keys = s3proxy.StoreKeys.load_or_new(home.credentials)
    s3proxy.write_credentials(home.credentials, keys, port=19100, region="us-east-1",
                              bucket="boxbus")
    info = StackInfo(kafka_bootstrap=None, database_url=None, schema_registry_url=None,
                     smtp=SmtpInfo(host=None, port=None, maildir=None),
                     object_store_url="http://127.0.0.1:19100", object_store_bucket="boxbus",
                     object_store_credentials=home.credentials, nodes=[], components={},
                     processes={}, boot_seconds={}, run_dir=tmp_path)
    filled = info.object_store_settings(Settings(run_dir=tmp_path, object_store_url=None))
    assert filled.object_store_url == "http://127.0.0.1:19100"
    assert filled.object_store_access_key == keys.access_key
    assert filled.object_store_secret_key is not None
    assert filled.object_store_secret_key.get_secret_value() == keys.secret_key
    assert info.object_store_env() == {
        "BOXBUS_OBJECT_STORE_URL": "http://127.0.0.1:19100",
        "BOXBUS_OBJECT_STORE_REGION": "us-east-1",
        "BOXBUS_OBJECT_STORE_BUCKET": "boxbus",
        "BOXBUS_OBJECT_STORE_ACCESS_KEY": keys.access_key,
        "BOXBUS_OBJECT_STORE_SECRET_KEY": keys.secret_key,
    }
    # Settings that name a store keep it.
    given = Settings(object_store_url="https://s3.example.net")
    assert info.object_store_settings(given) is given
    # The JSON of `dev status --json` reads back.
    assert StackInfo.model_validate(json.loads(info.model_dump_json())) == info


def test_the_store_artifacts_come_from_their_pom(tmp_path: Path) -> None:
    artifacts = objectstore_artifacts(deploy_dir())
    assert artifacts.version() == "2.6.0"
    assert artifacts.target(tmp_path) == tmp_path / "jvm" / "s3proxy-2.6.0"
