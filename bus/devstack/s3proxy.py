"""S3Proxy (``org.gaul:s3proxy`` from Maven Central): the local stack's S3-compatible object
store, on loopback, keeping objects as files under ``<run_dir>/objectstore/data``.

It checks S3 signatures (``aws-v2-or-v4``) with an access key and secret made once per stack
and kept, with the store's address and bucket, in ``<run_dir>/objectstore/credentials.json``
(mode 0600): the keys of the ``BOXBUS_OBJECT_STORE_*`` settings. It logs at DEBUG unless told
otherwise; the stack gives it a logback configuration at WARN (its own start-up lines at INFO).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bus.credentials import write_private
from bus.devstack import procs
from bus.errors import ComponentFailed, ConfigError
from bus.objectstore import ObjectStore, ObjectStoreError, ObjectStoreUnavailable

MIN_JAVA = 11  # S3Proxy 2.6 and its Jetty 11 are compiled for Java 11 (class file version 55)
MAIN_CLASS = "org.gaul.s3proxy.Main"
REGION = "us-east-1"  # S3Proxy serves any region; the one S3 needs no LocationConstraint for
JVM_FLAGS = ["-Xms32m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
             "-Djava.awt.headless=true"]

_LOGBACK = """\
<configuration>
  <appender name="out" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%d{ISO8601} %-5level %logger{36} - %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="out"/></root>
  <logger name="org.gaul.s3proxy.Main" level="INFO"/>
</configuration>
"""


@dataclass(frozen=True)
class StoreHome:
    """Where one stack's object store keeps its configuration, data and log."""

    base: Path

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def properties(self) -> Path:
        return self.base / "s3proxy.properties"

    @property
    def logback(self) -> Path:
        return self.base / "logback.xml"

    @property
    def log_path(self) -> Path:
        return self.base / "objectstore.log"

    @property
    def credentials(self) -> Path:
        return self.base / "credentials.json"


@dataclass(frozen=True)
class StoreKeys:
    access_key: str
    secret_key: str

    @classmethod
    def load_or_new(cls, path: Path) -> StoreKeys:
        """The store's keys, made once and kept (a restarted store must take the same ones):
        ``path`` is private to the user who runs the stack."""
        if path.exists():
            found = read_credentials(path)
            return cls(access_key=found["access_key"], secret_key=found["secret_key"])
        made = cls(access_key="BOXBUS" + secrets.token_hex(7).upper(),
                   secret_key=secrets.token_hex(20))
        write_private(path, {"access_key": made.access_key, "secret_key": made.secret_key})
        return made


def url(port: int) -> str:
    return f"http://{procs.LOOPBACK}:{port}"


def read_credentials(path: Path) -> dict[str, Any]:
    try:
        found: dict[str, Any] = json.loads(path.read_text())
        missing = {"access_key", "secret_key"} - set(found)
        if missing:
            raise KeyError(", ".join(sorted(missing)))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read the object store's credentials in {path}: {exc}",
                          hint="they are written by `boxbus dev up`; run it again, or "
                          "`boxbus dev down` and up to start afresh") from exc
    return found


def write_credentials(path: Path, keys: StoreKeys, *, port: int, region: str,
                      bucket: str) -> None:
    """What a client needs: the names are those of the BOXBUS_OBJECT_STORE_* settings."""
    write_private(path, {"url": url(port), "region": region, "bucket": bucket,
                         "access_key": keys.access_key, "secret_key": keys.secret_key})


def _java_property(value: str) -> str:
    """A value for a .properties file, which Java reads as ISO-8859-1 with \\ escapes."""
    out = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            units = ch.encode("utf-16-be")
            out.extend(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))
    return "".join(out)


def write_config(home: StoreHome, port: int, keys: StoreKeys) -> None:
    home.data_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "s3proxy.endpoint": url(port),
        "s3proxy.authorization": "aws-v2-or-v4",
        "s3proxy.identity": keys.access_key,
        "s3proxy.credential": keys.secret_key,
        # filesystem-nio2: the filesystem provider S3Proxy 2.6 keeps (it calls `filesystem`
        # deprecated); it wants an identity of its own, which nothing checks.
        "jclouds.provider": "filesystem-nio2",
        "jclouds.identity": "local",
        "jclouds.credential": "local",
        "jclouds.filesystem.basedir": str(home.data_dir.resolve()),
    }
    text = "".join(f"{k}={_java_property(v)}\n" for k, v in settings.items())
    write_private_text(home.properties, text)  # it holds the secret key
    home.logback.write_text(_LOGBACK)


def write_private_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def start(java: Path, lib_dir: Path, home: StoreHome) -> procs.ProcessRecord:
    argv = [str(java), *JVM_FLAGS, f"-Dlogback.configurationFile={home.logback}",
            "-cp", f"{lib_dir}/*", MAIN_CLASS, "--properties", str(home.properties)]
    return procs.spawn("objectstore", argv, log_path=home.log_path, cwd=home.base)


async def wait_ready(port: int, keys: StoreKeys, bucket: str, record: procs.ProcessRecord,
                     *, timeout: float = 60.0) -> None:
    """Ready when a signed ListBuckets succeeds (a real S3 request); then the bucket of the
    network is made unless it exists."""
    store = ObjectStore(url(port), bucket=bucket, region=REGION, access_key=keys.access_key,
                        secret_key=keys.secret_key, connect_timeout=1.0, read_timeout=5.0,
                        attempts=1)
    async with store:

        async def answers() -> bool:
            try:
                await store.list_buckets()
            except ObjectStoreUnavailable:
                return False
            return True

        hint = "read the log; a port in use or a damaged data folder are the usual causes"
        try:
            await procs.wait_until(answers, what="the object store (S3Proxy)",
                                   records=[record], timeout=timeout, hint=hint)
            await store.ensure_bucket()
        except ObjectStoreError as exc:
            raise ComponentFailed(f"the object store (S3Proxy) answers but {exc.message}",
                                  hint=hint, log_path=record.log_path) from exc
